import math

import pytest
import torch
import torch.nn.functional as F

from ascood.method import (
    alpha_at,
    ascood_loss,
    gaussian_outliers,
    gradient_outliers,
    normalize_features,
    shuffle_outliers,
    synthesize,
    true_class_saliency,
)
from ascood.method.saliency import saliency_from_logits
from ascood.models import create_model


@pytest.mark.parametrize("sigma", [0.1, 0.5, 2.0])
def test_zscore_feature_norm_is_sigma_sqrt_m_minus_1(sigma):
    torch.manual_seed(0)
    h = torch.randn(16, 128, dtype=torch.float64) * 5 + 3
    z = normalize_features(h, "zscore", sigma)
    expected = sigma * math.sqrt(128 - 1)
    torch.testing.assert_close(z.norm(dim=1), torch.full((16,), expected, dtype=torch.float64), rtol=1e-5, atol=0)
    torch.testing.assert_close(z.mean(dim=1), torch.zeros(16, dtype=torch.float64), atol=1e-9, rtol=0)


def test_head_feeds_the_normalized_feature_to_fc_and_exposes_the_raw_one():
    torch.manual_seed(0)
    model = create_model("small_cnn", num_classes=4, feature_norm="zscore", sigma=0.5).eval()
    seen = {}
    model.fc.register_forward_hook(lambda m, inp, out: seen.setdefault("fc_in", inp[0]))
    logits, h = model.forward_with_features(torch.randn(3, 3, 32, 32))
    torch.testing.assert_close(seen["fc_in"].norm(dim=1), torch.full((3,), 0.5 * math.sqrt(127)), rtol=1e-4, atol=0)
    assert not torch.allclose(h.norm(dim=1), seen["fc_in"].norm(dim=1))
    torch.testing.assert_close(logits, model.fc(normalize_features(h, "zscore", 0.5)))


def test_l2_and_none_normalization():
    h = torch.randn(5, 64, dtype=torch.float64)
    torch.testing.assert_close(normalize_features(h, "l2", 3.0).norm(dim=1), torch.full((5,), 3.0, dtype=torch.float64))
    assert torch.equal(normalize_features(h, "none", 3.0), h)


@pytest.mark.parametrize("p_inv", [0.01, 0.1, 0.37, 1.0])
@pytest.mark.parametrize("subtract", [False, True])
def test_gradient_mask_keeps_exactly_n_entries_and_moves_them_by_alpha_g(p_inv, subtract):
    torch.manual_seed(1)
    x = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    g = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    alpha = 0.7
    out = gradient_outliers(x, g, alpha, p_inv, subtract=subtract)
    n = int(3 * 8 * 8 * p_inv)
    diff = (out - x).flatten(1)
    sign = -1.0 if subtract else 1.0
    for i in range(4):
        changed = diff[i] != 0
        assert int(changed.sum()) == n
        top = g[i].abs().flatten().topk(n).indices
        assert set(top.tolist()) == set(torch.nonzero(changed).flatten().tolist())
        torch.testing.assert_close(diff[i][changed], sign * alpha * g[i].flatten()[changed])
    assert not out.requires_grad


def test_synthesize_dispatches_and_rejects_unknown_kind():
    x = torch.randn(2, 3, 4, 4)
    g = torch.randn(2, 3, 4, 4)
    torch.testing.assert_close(synthesize("gradient", x, g, alpha=2.0, p_inv=1.0), x + 2.0 * g)
    torch.testing.assert_close(synthesize("gradient-subtract", x, g, alpha=2.0, p_inv=1.0), x - 2.0 * g)
    with pytest.raises(ValueError, match="ood_type"):
        synthesize("mixup", x, g, alpha=1.0, p_inv=0.5)
    with pytest.raises(ValueError, match="p_inv"):
        synthesize("gradient", x, g, alpha=1.0, p_inv=0.001)


def test_shuffle_permutes_the_chosen_pixel_vectors_and_nothing_else():
    torch.manual_seed(2)
    b, c, h, w, p_inv = 3, 3, 6, 6, 0.25
    x = torch.randn(b, c, h, w)
    g = torch.randn(b, c, h, w)
    out = shuffle_outliers(x, g, p_inv, torch.Generator().manual_seed(0))
    n = int(h * w * p_inv)
    for i in range(b):
        rank = torch.exp(g[i]).sum(dim=0).flatten()
        chosen = set(rank.topk(n).indices.tolist())
        xs, os_ = x[i].flatten(1), out[i].flatten(1)
        for loc in range(h * w):
            if loc not in chosen:
                assert torch.equal(xs[:, loc], os_[:, loc])
        before = sorted(tuple(xs[:, j].tolist()) for j in chosen)
        after = sorted(tuple(os_[:, j].tolist()) for j in chosen)
        assert before == after
        assert any(not torch.equal(xs[:, j], os_[:, j]) for j in chosen)


def test_gaussian_outliers_are_pure_noise_scaled_by_alpha():
    x = torch.randn(2, 3, 4, 4) + 100
    out = gaussian_outliers(x, 0.1, torch.Generator().manual_seed(3))
    torch.testing.assert_close(out, 0.1 * torch.randn(2, 3, 4, 4, generator=torch.Generator().manual_seed(3)))


def _trained_small_cnn():
    torch.manual_seed(0)
    model = create_model("small_cnn", num_classes=5)
    model.train()
    with torch.no_grad():  # move BatchNorm running stats away from their initial values
        for _ in range(3):
            model(torch.randn(32, 3, 32, 32) * 2 + 0.5)
    return model


def test_eval_mode_batch_saliency_equals_per_sample_saliency_and_fills_no_param_grad():
    model = _trained_small_cnn()
    x = torch.randn(6, 3, 32, 32)
    y = torch.tensor([0, 1, 2, 3, 4, 0])
    batch = true_class_saliency(model, x, y)
    single = torch.cat([true_class_saliency(model, x[i : i + 1], y[i : i + 1]) for i in range(6)])
    torch.testing.assert_close(batch, single, rtol=1e-4, atol=1e-6)
    assert model.training, "the model's mode is restored"
    assert all(p.grad is None for p in model.parameters())
    # and it is the true-class logit's gradient
    xr = x[2:3].clone().requires_grad_(True)
    model.eval()
    model(xr)[0, y[2]].backward()
    torch.testing.assert_close(batch[2:3], xr.grad, rtol=1e-4, atol=1e-6)


def test_train_mode_saliency_couples_samples_through_batchnorm():
    model = _trained_small_cnn()
    x = torch.randn(6, 3, 32, 32)
    y = torch.zeros(6, dtype=torch.long)
    batch = true_class_saliency(model, x, y, train_mode=True)
    single = true_class_saliency(model, x[:2], y[:2], train_mode=True)
    assert not torch.allclose(batch[:2], single, rtol=1e-3, atol=1e-6)
    xr = x.clone().requires_grad_(True)
    reuse = saliency_from_logits(model(xr), xr, y)
    torch.testing.assert_close(reuse, batch, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("lam", [0.0, 0.1, 1.0, 5.0])
def test_loss_gradient_on_logits_is_prop1(lam):
    torch.manual_seed(4)
    b, c = 8, 7
    z = torch.randn(b, c, dtype=torch.float64, requires_grad=True)
    zo = torch.randn(b, c, dtype=torch.float64, requires_grad=True)
    y = torch.randint(0, c, (b,))
    total, _, kl = ascood_loss(z, y, zo, lam)
    total.backward()
    p, po = z.softmax(1).detach(), zo.softmax(1).detach()
    torch.testing.assert_close(z.grad * b, p - F.one_hot(y, c).double())
    torch.testing.assert_close(zo.grad * b, lam * (po - 1.0 / c))
    u = torch.full((b, c), 1.0 / c, dtype=torch.float64)
    torch.testing.assert_close(kl, F.kl_div(zo.log_softmax(1), u, reduction="batchmean"))


def test_alpha_schedule_endpoints_and_linearity():
    assert alpha_at(0, 30, 300.0, 30.0) == 300.0
    assert alpha_at(30, 30, 300.0, 30.0) == 30.0
    assert alpha_at(15, 30, 300.0, 30.0) == pytest.approx(165.0)
    assert alpha_at(7, 10, 0.1, 0.1) == pytest.approx(0.1)


@pytest.mark.parametrize("kind", ["gradient", "gradient-subtract", "gaussian"])
def test_relative_alpha_makes_the_perturbation_alpha_times_the_input(kind):
    from ascood.method.synthesis import batch_norm2, synthesize_scaled

    torch.manual_seed(0)
    x, g = torch.randn(8, 3, 16, 16) * 3, torch.randn(8, 3, 16, 16) * 1e-4  # gradients far smaller than x
    out, alpha_eff = synthesize_scaled(kind, x, g, alpha=0.05, p_inv=0.2, alpha_scale="relative",
                                       generator=torch.Generator().manual_seed(1))
    if kind == "gaussian":
        ratio = out.pow(2).mean().sqrt() / x.pow(2).mean().sqrt()
    else:
        ratio = batch_norm2(out - x) / batch_norm2(x)
        unit = synthesize(kind, x, g, alpha=1.0, p_inv=0.2) - x
        torch.testing.assert_close(out - x, alpha_eff * unit)  # still α·G⊙M on the same entries, only scaled
    torch.testing.assert_close(ratio, torch.tensor(0.05), rtol=1e-5, atol=0)
    assert alpha_eff.ndim == 0 and alpha_eff > 0


def test_absolute_alpha_is_unchanged_and_reported_as_itself():
    from ascood.method.synthesis import synthesize_scaled

    torch.manual_seed(0)
    x, g = torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8)
    out, alpha_eff = synthesize_scaled("gradient", x, g, alpha=0.3, p_inv=0.1)
    assert torch.equal(out, synthesize("gradient", x, g, alpha=0.3, p_inv=0.1)) and float(alpha_eff) == pytest.approx(0.3)
    with pytest.raises(ValueError, match="shuffle has no"):
        synthesize_scaled("shuffle", x, g, alpha=0.3, p_inv=0.1, alpha_scale="relative")


def test_a_relative_alpha_run_records_its_effective_alpha(tmp_path):
    import pandas as pd

    from ascood.config import config_json, validate_config
    from ascood.trial import run_trial

    cfg = validate_config(dict(benchmark="cmnist", epochs=1, batch_size=64, scorers="msp", alpha_scale="relative",
                               alpha_max=0.05, alpha_min=0.05))
    assert run_trial(cfg, tmp_path).status == "completed"
    df = pd.read_parquet(tmp_path / "results.parquet")
    assert (df["alpha_scale"] == "relative").all() and (df["alpha_eff"] > 0).all() and df["alpha_eff"].nunique() == 1
    assert "alpha_scale" not in config_json(validate_config({})), "absolute runs keep their ids from before"

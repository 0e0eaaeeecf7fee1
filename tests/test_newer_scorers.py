"""The newer scorers against independent computations of their published formulas: NumPy written
out here, scikit-learn/SciPy as oracles for the scaler, PCA, covariance and KL parts, and
torch.autograd for GradNorm's closed form on the real head."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.special import logsumexp, softmax
from scipy.stats import entropy
from sklearn.covariance import EmpiricalCovariance
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler

from ascood.evaluate import Fp32Logits
from ascood.models import NormalizedLinear, create_model
from ascood.scorers import (
    DICE,
    FDBD,
    NCI,
    NECO,
    SCORERS,
    SHE,
    VRA,
    AdaSCALE,
    GradNorm,
    KLMatching,
    MahalanobisPP,
    Outputs,
    Scorer,
    build_scorer,
)
from ascood.scorers import functional as Fs
from ascood.scorers import functional_newer as Fn

NEW_FEATURE_SCORERS = ["fdbd", "nci", "neco", "vra", "gradnorm", "dice", "she", "klm", "mdspp"]


def _random_outputs(n, d=24, c=5, seed=0):
    """Fixed random outputs: post-ReLU-like features, every class present, more rows than dims."""
    g = torch.Generator().manual_seed(seed)
    return Outputs(torch.randn(n, c, generator=g) * 2, torch.rand(n, d, generator=g) * 3, torch.arange(n) % c)


def _np(t):
    return t.detach().double().numpy()


def _zscore(h, sigma=0.5):
    return (h - h.mean(1, keepdims=True)) / (h.std(1, ddof=1, keepdims=True) + 1e-6) * sigma


def _space(model, outputs, path):
    """(fc inputs, logits) in a scorer's feature space, in NumPy."""
    w, b = _np(model.fc.weight), _np(model.fc.bias)
    h = _np(outputs.features)
    if path == "fc":
        return h, h @ w.T + b
    return _zscore(h), _np(outputs.logits)


def _energy_of(model, feats, path):
    w, b = _np(model.fc.weight), _np(model.fc.bias)
    x = feats if path == "fc" else _zscore(feats)
    return logsumexp(x @ w.T + b, axis=1)


@pytest.mark.parametrize("path", ["head", "fc"])
@pytest.mark.parametrize("normalizer", [True, False])
def test_fdbd(setting, path, normalizer):
    model, train, test = setting
    s = FDBD(distance_as_normalizer=normalizer, feature_path=path)
    s.setup(train, model.head)
    w = _np(model.fc.weight)
    x, z = _space(model, test, path)
    mu = _space(model, train, path)[0].mean(0)
    expected = []
    for i in range(len(z)):
        k = z[i].argmax()
        d = sum(abs(z[i, k] - z[i, c]) / np.linalg.norm(w[k] - w[c]) for c in range(4) if c != k)
        expected.append(d / np.linalg.norm(x[i] - mu if normalizer else x[i]))
    np.testing.assert_allclose(s.postprocess(test).numpy(), expected, rtol=1e-5)


@pytest.mark.parametrize("path", ["head", "fc"])
def test_nci(setting, path):
    model, train, test = setting
    s = NCI(alpha=0.01, feature_path=path)
    s.setup(train, model.head)
    w = _np(model.fc.weight)
    x, z = _space(model, test, path)
    c = x - _space(model, train, path)[0].mean(0)
    expected = (w[z.argmax(1)] * c).sum(1) / np.linalg.norm(c, axis=1) + 0.01 * np.abs(x).sum(1)
    np.testing.assert_allclose(s.postprocess(test).numpy(), expected, rtol=1e-5)


@pytest.mark.parametrize("maxlogit", [False, True])
def test_neco_against_sklearn_scaler_and_pca(maxlogit):
    train, test = _random_outputs(400), _random_outputs(60, seed=1)
    train = Outputs(train.logits, torch.cat([train.features, torch.zeros(400, 1)], 1), train.labels)  # a dead unit
    test = Outputs(test.logits, torch.cat([test.features, torch.rand(60, 1)], 1), test.labels)
    ss = StandardScaler().fit(_np(train.features))
    pca = PCA(n_components=25).fit(ss.transform(_np(train.features)))
    zt = ss.transform(_np(test.features))
    for dim in (1, 3, 10, 24, 500):
        s = NECO(dim=dim, maxlogit=maxlogit)
        s.setup(train, None)
        expected = np.linalg.norm(pca.transform(zt)[:, :dim], axis=1) / np.linalg.norm(zt, axis=1)
        if maxlogit:
            expected = expected * _np(test.logits).max(1)
        np.testing.assert_allclose(s.postprocess(test).numpy(), expected, rtol=1e-5)


@pytest.mark.parametrize("path", ["fc", "head"])
def test_vra(setting, path):
    model, train, test = setting
    s = VRA(percentile_high=95.0, percentile_low=5.0, feature_path=path)
    s.setup(train, model.head)
    lo, hi = np.percentile(_np(train.features).ravel(), [5.0, 95.0])
    clipped = np.clip(_np(test.features), lo, hi)
    np.testing.assert_allclose(s.postprocess(test).numpy(), _energy_of(model, clipped, path), rtol=1e-5)


@pytest.mark.parametrize(("norm", "sigma"), [("zscore", 0.5), ("l2", 2.0), ("none", 1.0)])
def test_gradnorm_closed_form_equals_autograd_on_the_real_head(norm, sigma):
    torch.manual_seed(2)
    head = NormalizedLinear(16, 6, norm, sigma).double()
    h = torch.rand(30, 16, dtype=torch.float64) * 2
    with torch.no_grad():
        out = Outputs(head(h), h, torch.zeros(30, dtype=torch.long))
    expected = []
    for i in range(len(h)):  # the released per-sample loop: all-ones targets, L1 norm of fc.weight.grad
        head.zero_grad()
        loss = torch.sum(-torch.ones(1, 6, dtype=torch.float64) * F.log_softmax(head(h[i : i + 1]), dim=-1))
        loss.backward()
        expected.append(float(head.fc.weight.grad.abs().sum()))
    s = GradNorm()
    s.setup(None, head)
    np.testing.assert_allclose(s.postprocess(out).numpy(), expected, rtol=1e-6)


@pytest.mark.parametrize("path", ["fc", "head"])
def test_dice(setting, path):
    model, train, test = setting
    s = DICE(percentile=70.0, feature_path=path)
    s.setup(train, model.head)
    w, b = _np(model.fc.weight), _np(model.fc.bias)
    x_train = _space(model, train, path)[0]
    contrib = x_train.mean(0)[None, :] * w
    masked = w * (contrib > np.percentile(contrib, 70.0))
    x = _space(model, test, path)[0]
    np.testing.assert_allclose(s.postprocess(test).numpy(), logsumexp(x @ masked.T + b, axis=1), rtol=1e-5)


@pytest.mark.parametrize("metric", ["inner_product", "euclidean", "cosine"])
def test_she(setting, metric):
    model, train, test = setting
    s = SHE(metric=metric)
    s.setup(train, model.head)
    h, y, pred = _np(train.features), train.labels.numpy(), _np(train.logits).argmax(1)
    patterns = np.stack([h[(y == c) & (pred == c)].mean(0) if ((y == c) & (pred == c)).any() else h[y == c].mean(0)
                         for c in range(4)])
    q, target = _np(test.features), patterns[_np(test.logits).argmax(1)]
    expected = {
        "inner_product": (q * target).sum(1),
        "euclidean": -np.linalg.norm(q - target, axis=1),
        "cosine": (q * target).sum(1) / np.linalg.norm(q, axis=1) / np.linalg.norm(target, axis=1),
    }[metric]
    np.testing.assert_allclose(s.postprocess(test).numpy(), expected, rtol=1e-5)


def test_she_falls_back_on_the_class_mean_when_no_sample_is_predicted_correctly():
    h = torch.tensor([[1.0, 0.0], [3.0, 0.0], [0.0, 2.0], [0.0, 4.0]])
    logits = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 0.0]])  # class 1: never right
    s = SHE()
    s.setup(Outputs(logits, h, torch.tensor([0, 0, 1, 1])), None)
    torch.testing.assert_close(s.patterns, torch.tensor([[1.0, 0.0], [0.0, 3.0]], dtype=torch.float64))


def test_klm_against_scipy_entropy(setting):
    _, train, test = setting
    s = KLMatching()
    s.setup(train, None)
    p_train, pred = softmax(_np(train.logits), axis=1), _np(train.logits).argmax(1)
    templates = [p_train[pred == c].mean(0) if (pred == c).any() else np.eye(4)[c] for c in range(4)]
    p = softmax(_np(test.logits), axis=1)
    expected = [-min(entropy(pi, t) for t in templates) for pi in p]
    np.testing.assert_allclose(s.postprocess(test).numpy(), expected, rtol=1e-5, atol=1e-7)


def test_kl_divergences_follow_scipy_on_zeros_and_in_chunks():
    g = torch.Generator().manual_seed(4)
    p = torch.rand(23, 5, generator=g, dtype=torch.float64)
    p[3, 2] = p[7, :4] = 0.0
    q = torch.rand(4, 5, generator=g, dtype=torch.float64)
    q[1, 2] = q[2, 4] = 0.0
    expected = np.array([[entropy(a, b) for b in q.numpy()] for a in p.numpy()])
    for chunk in (None, 1, 5):
        got = Fn.kl_divergences(p, q, chunk=chunk).numpy()
        np.testing.assert_array_equal(np.isinf(got), np.isinf(expected))
        np.testing.assert_allclose(got[np.isfinite(got)], expected[np.isfinite(expected)], rtol=1e-10, atol=1e-12)


def test_klm_uses_a_one_hot_template_for_a_class_nothing_is_predicted_as():
    logits = torch.tensor([[3.0, 0.0, 0.0], [2.0, 0.0, 1.0], [0.0, 0.0, 4.0]])
    s = KLMatching()
    s.setup(Outputs(logits, torch.zeros(3, 2), torch.zeros(3, dtype=torch.long)), None)
    torch.testing.assert_close(s.templates[1], torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64))
    assert torch.isfinite(s.postprocess(Outputs(logits, torch.zeros(3, 2), torch.zeros(3)))).all()


def test_mahalanobis_pp_is_mds_on_l2_normalized_features(setting):
    model, train, test = setting
    s = MahalanobisPP()
    s.setup(train, model.head)
    h = _np(train.features)
    h /= np.linalg.norm(h, axis=1, keepdims=True)
    y = train.labels.numpy()
    means = np.stack([h[y == c].mean(0) for c in range(4)])
    prec = EmpiricalCovariance(assume_centered=False).fit(h - means[y]).precision_
    q = _np(test.features)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    md = np.stack([np.einsum("nd,de,ne->n", q - m, prec, q - m) for m in means], axis=1)
    np.testing.assert_allclose(s.postprocess(test).numpy(), (-md).max(1), rtol=1e-3)


def _pointwise(cls, train, head, sets, points):
    out = []
    for pt in points:
        s = cls(**pt)
        s.setup(train, head)
        out.append([s.postprocess(o) for o in sets])
    return out


@pytest.mark.parametrize("cls", [NCI, NECO, VRA])
def test_shared_grid_scores_equal_a_scorer_per_point_exactly(setting, cls):
    model, train, test = setting
    sets = [test, Outputs(train.logits[:30], train.features[:30] * 2, train.labels[:30])]
    points = cls.grid_points()
    got = cls().grid_scores(train, model.head, sets, points)
    default = Scorer.grid_scores(cls(), train, model.head, sets, points)
    expected = _pointwise(cls, train, model.head, sets, points)
    assert len(got) == len(points) and all(len(g) == len(sets) for g in got)
    for g, d, e in zip(got, default, expected, strict=True):
        for a, b, c in zip(g, d, e, strict=True):
            assert torch.equal(a, c) and torch.equal(b, c)


def test_grids_are_the_published_ones():
    assert FDBD.grid_points() == [{"distance_as_normalizer": True}, {"distance_as_normalizer": False}]
    assert [p["alpha"] for p in NCI.grid_points()] == [0.0001, 0.001, 0.01, 0.1]
    assert len(VRA.grid_points()) == 16
    pairs = [(p["p_min"], p["p_max"]) for p in AdaSCALE.grid_points()]
    assert len(pairs) == 36 and pairs[0] == (60.0, 65.0) and pairs[-1] == (95.0, 99.0)
    assert all(lo < hi for lo, hi in pairs)
    for name in ("gradnorm", "she", "klm", "mdspp"):
        assert SCORERS[name].grid_points() == [{}]


@pytest.mark.parametrize("name", ["klm", "mdspp"])
def test_bank_like_scorers_are_unchanged_by_tiny_chunks(setting, monkeypatch, name):
    model, train, test = setting
    whole = build_scorer(name)
    whole.setup(train, model.head)
    expected = whole.postprocess(test)
    monkeypatch.setattr(Fs, "CHUNK_ELEMENTS", 10)
    chunked = build_scorer(name)
    chunked.setup(train, model.head)
    torch.testing.assert_close(chunked.postprocess(test), expected, rtol=1e-6, atol=0)


def test_new_feature_scorers_are_oriented_higher_for_id():
    """A toy case with known separation: ID features cluster by class, OOD ones are far away."""
    torch.manual_seed(1)
    model = create_model("small_cnn", num_classes=3, feature_norm="zscore", sigma=1.0).eval()
    centers = torch.rand(3, 128) * 3
    y = torch.arange(300) % 3
    h_train = (centers[y] + 0.3 * torch.randn(300, 128)).clamp(min=0)
    with torch.no_grad():
        model.fc.weight.copy_(centers / centers.norm(dim=1, keepdim=True) * 5)
        model.fc.bias.zero_()
        train = Outputs(model.head(h_train), h_train, y)
        h_id = (centers[torch.arange(60) % 3] + 0.3 * torch.randn(60, 128)).clamp(min=0)
        h_ood = torch.rand(60, 128) * 3
        id_out = Outputs(model.head(h_id), h_id, torch.zeros(60))
        ood_out = Outputs(model.head(h_ood), h_ood, torch.zeros(60))
    for name in NEW_FEATURE_SCORERS:
        s = build_scorer(name)
        s.setup(train, model.head)
        assert s.postprocess(id_out).mean() > s.postprocess(ood_out).mean(), name


# --- AdaSCALE -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def ada():
    torch.manual_seed(0)
    model = create_model("small_cnn", num_classes=4, feature_norm="zscore", sigma=0.5).eval()
    return model, torch.randn(40, 3, 32, 32), torch.randn(12, 3, 32, 32) * 1.5


def _adascale_reference(model, x_ref, x, p_min, p_max, k1=5.0, k2=1.0, lmbda=10.0, o=0.05, eps=0.5):
    """OpenOOD's AdaSCALE-A written out: autograd for ∇ₓ of the max logit, NumPy for the rest."""

    def grad_and_features(xs):
        xr = xs.clone().requires_grad_(True)
        logits, h = model.forward_with_features(xr)
        logits[torch.arange(len(xs)), logits.argmax(1)].sum().backward()
        return _np(xr.grad), _np(h)

    def perturbed_features(xs, g):
        flat = np.abs(g).reshape(len(xs), -1)
        n = int(flat.shape[1] * o)
        mask = np.zeros_like(flat)
        np.put_along_axis(mask, np.argsort(flat, axis=1, kind="stable")[:, :n], 1.0, axis=1)
        xt = _np(xs) + eps * np.sign(g) * mask.reshape(g.shape)
        with torch.no_grad():
            return _np(model.backbone(torch.from_numpy(xt).float()))

    def q_prime(h, ht):
        d = h.shape[1]
        a, b = max(1, int(d * k1 / 100)), max(1, int(d * k2 / 100))
        order = np.argsort(-h, axis=1)
        c_o = np.take_along_axis(np.maximum(ht, 0), order[:, :a], axis=1).sum(1)
        return c_o + lmbda * np.take_along_axis(np.abs(h - ht), order[:, :b], axis=1).sum(1)

    g_ref, h_ref = grad_and_features(x_ref)
    ref = np.sort(q_prime(h_ref, perturbed_features(x_ref, g_ref)))
    g, h = grad_and_features(x)
    q = q_prime(h, perturbed_features(x, g))
    percent = 1 - np.searchsorted(ref, q, side="right") / len(ref)  # statsmodels' ECDF
    pct = p_min + percent * (p_max - p_min)
    d = h.shape[1]
    ks = d - np.round(d * pct / 100.0).astype(int)
    top = -np.sort(-np.maximum(h, 0), axis=1)
    r = np.maximum(h, 0).sum(1) / np.array([top[i, : ks[i]].sum() for i in range(len(h))])
    return _energy_of(model, h * np.exp(r)[:, None], "fc"), q


def test_adascale_matches_an_independent_computation(ada):
    model, x_ref, x = ada
    s = AdaSCALE(p_min=60.0, p_max=90.0).fit_reference(model, x_ref.split(16), torch.ones(3))
    expected, q = _adascale_reference(model, x_ref, x, 60.0, 90.0)
    got = s.postprocess_batch(model, x, torch.ones(3))
    np.testing.assert_allclose(got.numpy(), expected, rtol=1e-5)
    assert len(np.unique(q)) == len(q)  # the percentiles really vary per sample


def test_adascale_perturbs_the_least_salient_entries(ada):
    model, _, x = ada
    seen = []
    handle = model.backbone.register_forward_pre_hook(lambda m, args: seen.append(args[0].detach().clone()))
    AdaSCALE().fit_reference(model, [x], None)
    handle.remove()
    moved = (seen[1] - x) != 0
    assert moved.flatten(1).sum(1).tolist() == [int(3 * 32 * 32 * 0.05)] * len(x)
    assert torch.allclose((seen[1] - x)[moved].abs(), torch.tensor(0.5))
    xr = x.clone().requires_grad_(True)
    logits = model(xr)
    logits.gather(1, logits.argmax(1, keepdim=True)).sum().backward()
    g = xr.grad.abs().flatten(1)
    assert (g[moved.flatten(1)].view(len(x), -1).amax(1) <= g[~moved.flatten(1)].view(len(x), -1).amin(1)).all()


def test_adascale_grid_shares_the_perturbation_but_equals_pointwise_scores(ada):
    model, x_ref, x = ada
    points = AdaSCALE.grid_points()
    proto = AdaSCALE().fit_reference(model, [x_ref], None)
    grid = proto.postprocess_grid(model, x, None, points)
    for pt in points[::7]:
        single = AdaSCALE(**pt).fit_reference(model, [x_ref], None)
        torch.testing.assert_close(grid[points.index(pt)], single.postprocess_batch(model, x, None), rtol=0, atol=0)


def test_adascale_through_the_evaluators_fp32_wrapper_equals_the_model(ada):
    model, x_ref, x = ada
    a = AdaSCALE().fit_reference(model, [x_ref], None)
    b = AdaSCALE().fit_reference(Fp32Logits(model), [x_ref], None)
    torch.testing.assert_close(a.postprocess_batch(model, x, None), b.postprocess_batch(Fp32Logits(model), x, None))


def test_adascale_without_a_reference_is_refused(ada):
    model, _, x = ada
    with pytest.raises(ValueError, match="no ID reference fitted"):
        AdaSCALE().postprocess_batch(model, x, None)


def test_the_evaluator_fits_adascales_reference_on_id_validation():
    """Through `Evaluator.evaluate`: the reference is every ID-validation input's (h, h̃), so the
    scores equal a scorer fitted on those inputs by hand, and the search keeps the reference."""
    from ascood.data import load_benchmark
    from ascood.data.loading import Preprocess
    from ascood.evaluate import Evaluator
    from ascood.models import create_model
    from ascood.train import make_accelerator

    torch.manual_seed(0)
    data = load_benchmark("cmnist[classes=2]")
    model = create_model("small_cnn", num_classes=2).eval()
    ev = Evaluator(data, make_accelerator(), batch_size=256)
    for search in (False, True):
        (val, _), (used,) = ev.evaluate(model, [AdaSCALE()], search=search)
        assert all(r.metrics is not None for r in val.sets), [r.error for r in val.sets]
        x_val = Preprocess(data).eval(data.val.images)
        by_hand = AdaSCALE(**used.params()).fit_reference(Fp32Logits(model), [x_val])
        x_test = Preprocess(data).eval(data.test.images[:64])
        torch.testing.assert_close(used.postprocess_batch(Fp32Logits(model), x_test, None),
                                   by_hand.postprocess_batch(Fp32Logits(model), x_test, None))


def test_adascale_refuses_a_reference_of_another_perturbation(ada):
    model, x_ref, x = ada
    s = AdaSCALE().fit_reference(model, [x_ref], None)
    s.p["o"] = 0.1
    with pytest.raises(ValueError, match="another perturbation"):
        s.postprocess_batch(model, x, None)


def test_adaptive_scale_and_ecdf_against_numpy():
    g = torch.Generator().manual_seed(5)
    h = torch.rand(9, 20, generator=g, dtype=torch.float64) - 0.2
    pct = torch.tensor([60.0, 62.5, 65.0, 70.0, 77.5, 80.0, 85.0, 90.0, 99.0], dtype=torch.float64)
    a = np.maximum(h.numpy(), 0)
    ks = np.maximum(1, 20 - np.round(20 * pct.numpy() / 100.0).astype(int))  # 99 % of 20 would keep none
    expected = a.sum(1) / np.array([np.sort(a[i])[::-1][: ks[i]].sum() for i in range(9)])
    np.testing.assert_allclose(Fn.adaptive_scale(h, pct).numpy(), expected, rtol=1e-12)
    ref = torch.tensor([1.0, 2.0, 2.0, 3.0], dtype=torch.float64)
    np.testing.assert_array_equal(Fn.ecdf(ref, torch.tensor([0.5, 1.0, 2.0, 2.5, 3.0, 4.0])).numpy(),
                                  [0.0, 0.25, 0.75, 0.75, 1.0, 1.0])

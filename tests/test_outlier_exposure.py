"""OE and MixOE: their math, the external outlier sources, the leakage guard, and runs through the loop."""

import json
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F
from conftest import HOST_OPS, recorded_ops, torchrun_cpu
from PIL import Image

from ascood.config import config_json, validate_config
from ascood.data import Split, load_benchmark
from ascood.data.embedded import build_outliers, ood_sources, outlier_sources
from ascood.data.errors import DatasetError
from ascood.data.loading import OutlierBatches
from ascood.data.outliers import OutlierOverlapError, check_disjoint, image_hashes, load_outliers, outliers_for
from ascood.method.outlier_exposure import cutmix_box, mix, mixed_targets, mixoe_loss, oe_loss, soft_cross_entropy
from ascood.models import create_model
from ascood.train import make_accelerator, train_step
from ascood.trial import run_trial

SMALL = "cmnist[classes=2]"
FAST = dict(scorers="msp,energy", eval_batch_size=1024)
EMBEDDED_BENCHMARKS = ("cmnist", "mnist6", "mnist10", SMALL)


# ---- math ----------------------------------------------------------------------------------------


def test_oe_loss_gradient_is_p_minus_y_on_id_and_lambda_p_minus_uniform_on_outliers():
    g = torch.Generator().manual_seed(0)
    logits_id = torch.randn(4, 5, generator=g, dtype=torch.float64, requires_grad=True)
    logits_out = torch.randn(8, 5, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 3, 4, 1])
    loss, _, kl = oe_loss(logits_id, y, logits_out, 0.5)
    loss.backward()
    p_id, p_out = (torch.softmax(z.detach(), 1).numpy() for z in (logits_id, logits_out))
    np.testing.assert_allclose(logits_id.grad.numpy(), (p_id - np.eye(5)[y.numpy()]) / 4, rtol=1e-10)
    np.testing.assert_allclose(logits_out.grad.numpy(), 0.5 * (p_out - 1 / 5) / 8, rtol=1e-10, atol=1e-15)
    # the reference's outlier term −mean_k log p_k is the KL plus log C
    reference = -(logits_out.detach().mean(1) - torch.logsumexp(logits_out.detach(), 1)).mean()
    assert kl.item() == pytest.approx(reference.item() - np.log(5), rel=1e-12)


def test_mixoe_targets_and_soft_ce():
    y = torch.tensor([2, 0])
    t = mixed_targets(y, 4, 0.7)
    np.testing.assert_allclose(t.numpy(), [[0.075, 0.075, 0.775, 0.075], [0.775, 0.075, 0.075, 0.075]], rtol=1e-6)
    assert t.sum(1).tolist() == pytest.approx([1.0, 1.0])
    logits = torch.randn(2, 4, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    log_p = torch.log_softmax(logits, 1).numpy()
    assert soft_cross_entropy(logits, t.double()).item() == pytest.approx(-(t.numpy() * log_p).sum(1).mean())
    # λ = 1: the mixed term is CE on the label; λ = 0: CE to the uniform distribution
    label_only = soft_cross_entropy(logits, mixed_targets(y, 4, 1.0).double())
    assert label_only.item() == pytest.approx(F.cross_entropy(logits, y).item())
    total, ce, soft = mixoe_loss(logits, y, logits, 0.0, 5.0)
    assert soft.item() == pytest.approx(-log_p.mean(1).mean()) and total.item() == pytest.approx(ce.item() + 5 * soft.item())


def test_mixup_is_the_convex_mix_and_cutmix_pastes_a_box_whose_share_is_the_label_share():
    g = torch.Generator().manual_seed(0)
    x, x_out = torch.rand(3, 3, 32, 32, generator=g), torch.rand(3, 3, 32, 32, generator=g)
    mixed, lam = mix(x, x_out, "mixup", 0.3, np.random.default_rng(0))
    assert lam == 0.3 and torch.allclose(mixed, 0.3 * x + 0.7 * x_out)
    for seed in range(20):
        rng = np.random.default_rng(seed)
        lam0 = float(rng.beta(2.0, 2.0))
        mixed, lam = mix(x, x_out, "cutmix", lam0, np.random.default_rng(seed + 100))
        top, bottom, left, right = cutmix_box(32, 32, lam0, np.random.default_rng(seed + 100))
        inside = torch.zeros(32, 32, dtype=torch.bool)
        inside[top:bottom, left:right] = True
        assert torch.equal(mixed[:, :, inside], x_out[:, :, inside]) and torch.equal(mixed[:, :, ~inside], x[:, :, ~inside])
        assert lam == pytest.approx(1 - inside.sum().item() / 1024)
        assert (bottom - top) <= int(32 * np.sqrt(1 - lam0)) + 1
    with pytest.raises(ValueError, match="mix op"):
        mix(x, x_out, "blend", 0.5, np.random.default_rng(0))


def test_outlier_batches_are_deterministic_cover_each_pass_and_differ_by_rank_and_epoch():
    images = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1).expand(10, 3, 2, 2).contiguous()
    split = Split(images, torch.full((10,), -1))
    a = OutlierBatches(split, 4, seed=3, rank=0, device=torch.device("cpu"))
    it = a.epoch(0)
    first = [next(it)[:, 0, 0, 0].tolist() for _ in range(5)]  # 20 draws: two full passes
    flat = [v for b in first for v in b]
    assert sorted(flat[:10]) == list(range(10)) and sorted(flat[10:]) == list(range(10))
    again = OutlierBatches(split, 4, seed=3, rank=0, device=torch.device("cpu")).epoch(0)
    assert [next(again)[:, 0, 0, 0].tolist() for _ in range(5)] == first
    other_rank = OutlierBatches(split, 4, seed=3, rank=1, device=torch.device("cpu")).epoch(0)
    assert [next(other_rank)[:, 0, 0, 0].tolist() for _ in range(5)] != first
    assert [next(a.epoch(1))[:, 0, 0, 0].tolist()] != first[:1]


@pytest.mark.parametrize("method", ["oe", "mixoe"])
def test_the_step_never_waits_for_the_device(method):
    cfg = validate_config(dict(benchmark=SMALL, method=method, outliers="embedded"))
    accelerator = make_accelerator()
    torch.manual_seed(0)
    model = create_model("small_cnn", num_classes=2, **cfg.head_options()).to(memory_format=torch.channels_last)
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    x_out = torch.randn(16, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.tensor([0, 1] * 4)
    with recorded_ops() as ops:
        losses = train_step(model, model, x, y, cfg=cfg, alpha=0.0, generator=g, accelerator=accelerator,
                            params=list(model.parameters()), x_out=x_out, rng=np.random.default_rng(0))
    assert not HOST_OPS & set(ops.names), sorted(HOST_OPS & set(ops.names))
    assert losses.kl > 0 and torch.isfinite(losses.loss)
    assert all(p.grad is not None for p in model.parameters())
    with pytest.raises(ValueError, match="external outliers"):
        train_step(model, model, x, y, cfg=cfg, alpha=0.0, generator=g, accelerator=accelerator,
                   params=list(model.parameters()))


# ---- the embedded outlier set and the leakage guard ------------------------------------------------


def test_the_embedded_outlier_set_shares_no_source_image_and_no_image_with_any_embedded_benchmark():
    digest = lambda a: image_hashes(torch.from_numpy(np.array(a))[None])  # noqa: E731
    outlier_src = {n: digest(a) for n, a in outlier_sources().items()}
    ood_src = {n: digest(a) for n, a in ood_sources().items()}
    assert len(set().union(*outlier_src.values())) == len(outlier_src), "two outlier sources are one image"
    shared = [(a, b) for a, ha in outlier_src.items() for b, hb in ood_src.items() if ha & hb]
    assert not shared, shared
    outliers = build_outliers()
    assert outliers.images.shape == (len(outlier_src) * 160, 3, 32, 32) and outliers.images.dtype == torch.uint8
    assert (outliers.labels == -1).all()
    mine = image_hashes(outliers.images)
    for name in EMBEDDED_BENCHMARKS:
        data = load_benchmark(name)
        for s in (data.train, data.val, data.test, *(part for o in data.ood for part in (o.val, o.test))):
            assert not mine & image_hashes(s.images), name
        check_disjoint(outliers, data, "embedded")  # the guard agrees


def test_the_guard_refuses_an_outlier_folder_holding_a_benchmark_image_naming_both_sets(tmp_path):
    data = load_benchmark("mnist6")
    folder = tmp_path / "outliers"
    folder.mkdir()
    for i in range(3):
        Image.fromarray(build_outliers().images[i].permute(1, 2, 0).numpy()).save(folder / f"ok{i}.png")
    leaked = data.ood[0].test.images[5]
    Image.fromarray(leaked.permute(1, 2, 0).numpy()).save(folder / "leak.png")
    expected = r"outliers .*outliers: shares 1 image\(s\) with mnist6 OOD digits-0167 \(test\)"
    with pytest.raises(OutlierOverlapError, match=expected):
        outliers_for(data, str(folder))
    (folder / "leak.png").unlink()
    assert len(outliers_for(data, str(folder))) == 3


def test_folder_tree_and_openood_list_sources_read_the_same_images(tmp_path):
    images = build_outliers().images[:6]
    for i, img in enumerate(images):
        sub = tmp_path / "tree" / f"class{i % 2}"
        sub.mkdir(parents=True, exist_ok=True)
        Image.fromarray(img.permute(1, 2, 0).numpy()).save(sub / f"{i}.png")
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "imgs").symlink_to(tmp_path / "tree")
    lines = [f"imgs/class{i % 2}/{i}.png 0" for i in range(6)]
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    tree = load_outliers(str(tmp_path / "tree"), 32)
    listed = load_outliers(str(tmp_path / "list.txt"), 32, image_root=tmp_path / "root")
    assert image_hashes(tree.images) == image_hashes(listed.images) == image_hashes(images)
    assert load_outliers(str(tmp_path / "tree"), 16).images.shape == (6, 3, 16, 16)


@pytest.mark.parametrize("case", ["missing", "empty", "unreadable", "bad-list", "not-a-list"])
def test_bad_outlier_sources_are_one_line_errors_naming_the_path(tmp_path, case):
    path = tmp_path / "src"
    if case == "empty":
        path.mkdir()
        (path / "notes.txt").write_text("no images here")
    elif case == "unreadable":
        path.mkdir()
        (path / "broken.png").write_bytes(b"not a png")
    elif case == "bad-list":
        path = tmp_path / "list.txt"
        path.write_text("missing.png 0\n")
    elif case == "not-a-list":
        path = tmp_path / "outliers.csv"
        path.write_text("a,b\n")
    with pytest.raises(DatasetError) as err:
        load_outliers(str(path), 32)
    msg = str(err.value)
    assert "\n" not in msg and (str(path) in msg or "broken.png" in msg), msg


# ---- configuration ------------------------------------------------------------------------------


def test_outlier_options_belong_to_oe_and_mixoe_and_leave_old_run_ids_alone():
    oe = validate_config(dict(method="oe", outliers="embedded"))
    assert (oe.method_option("oe_lambda"), oe.method_option("oe_batch_factor")) == (0.5, 2)
    mixoe = validate_config(dict(method="mixoe", outliers="embedded"))
    assert [mixoe.method_option(f"mixoe_{o}") for o in ("op", "alpha", "beta")] == ["cutmix", 2.0, 5.0]
    with pytest.raises(ValueError, match="--outliers: method oe trains on external outliers"):
        validate_config(dict(method="oe"))
    with pytest.raises(ValueError, match="--outliers: only methods oe and mixoe train on external outliers, not method ce"):
        validate_config(dict(method="ce", outliers="embedded"))
    with pytest.raises(ValueError, match="--mixoe-beta: an option of method mixoe, not of method oe"):
        validate_config(dict(method="oe", outliers="embedded", mixoe_beta=1.0))
    with pytest.raises(ValueError, match="--outliers-root"):
        validate_config(dict(method="oe", outliers="some/folder", outliers_root="/data"))
    with pytest.raises(ValueError):
        validate_config(dict(method="mixoe", outliers="embedded", mixoe_op="blend"))
    base = config_json(validate_config({}))
    assert "outliers" not in base and "oe_" not in base and "mixoe" not in base


@pytest.mark.parametrize("argv, expected", [
    (["--method", "oe"], "--outliers: method oe trains on external outliers"),
    (["--method", "mixoe", "--outliers", "{tmp}/nowhere"], "outliers {tmp}/nowhere: no such file or folder"),
    (["--method", "oe", "--outliers", "{tmp}/leak"], "shares 1 image(s) with mnist6 ID train"),
    (["--method", "ce", "--oe-lambda", "1"], "--oe-lambda: an option of method oe, not of method ce"),
])
def test_bad_outlier_input_on_the_command_line_is_one_line_exit_2_and_creates_nothing(tmp_path, capsys, argv, expected):
    from ascood.cli.train import main

    leak = tmp_path / "leak"
    leak.mkdir()
    Image.fromarray(load_benchmark("mnist6").train.images[0].permute(1, 2, 0).numpy()).save(leak / "x.png")
    out = tmp_path / "run"
    argv = [a.replace("{tmp}", str(tmp_path)) for a in argv]
    with pytest.raises(SystemExit) as exit_:
        main([*argv, "--benchmark", "mnist6", "--epochs", "1", "--out", str(out), "--no-progress"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err.strip()
    assert expected.replace("{tmp}", str(tmp_path)) in err and len(err.splitlines()) == 1, err
    assert not out.exists()


# ---- runs ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("benchmark", ["cmnist", "mnist6", "mnist10"])
@pytest.mark.parametrize("method", ["oe", "mixoe"])
def test_one_epoch_of_each_outlier_method_on_each_embedded_benchmark(tmp_path, method, benchmark):
    cfg = validate_config(dict(benchmark=benchmark, method=method, outliers="embedded", epochs=1, **FAST))
    seen = []
    result = run_trial(cfg, tmp_path, on_epoch=lambda stats, model: seen.append(stats))
    assert result.status == "completed", result.reason
    weight = 0.5 if method == "oe" else 5.0
    assert seen[0].kl > 0 and seen[0].loss == pytest.approx(seen[0].ce + weight * seen[0].kl, rel=1e-4)
    df = pd.read_parquet(tmp_path / "results.parquet")
    assert (df["method"] == method).all() and df["auroc"].notna().all() and np.isfinite(df["train_loss"]).all()
    assert json.loads(df["config_json"].iloc[0])["outliers"] == "embedded"


def test_mixoe_resumes_as_if_never_stopped(tmp_path):
    """The outliers of each epoch are drawn from (seed, epoch, rank): bit-exact on the CPU."""
    kw = dict(benchmark=SMALL, method="mixoe", outliers="embedded", epochs=3, mixoe_op="mixup", **FAST)

    class Interrupt(Exception):
        pass

    def stop_after_two(stats, model):
        if stats.epoch == 2:
            raise Interrupt

    run_trial(validate_config(kw), tmp_path / "straight")
    with pytest.raises(Interrupt):
        run_trial(validate_config(kw), tmp_path / "resumed", on_epoch=stop_after_two)
    run_trial(validate_config(kw), tmp_path / "resumed")
    a, b = (torch.load(tmp_path / d / "checkpoint.pt", weights_only=True)["model"] for d in ("straight", "resumed"))
    assert all(torch.equal(a[k], b[k]) for k in a)


_DDP_WORKER = textwrap.dedent('''
    import json, sys
    from pathlib import Path
    import torch
    from ascood.config import validate_config
    from ascood.train import make_accelerator
    from ascood.trial import run_trial

    out = Path(sys.argv[1])
    accelerator = make_accelerator()
    rank = accelerator.process_index
    save = lambda stats, model: torch.save(model.state_dict(), out / f"rank{rank}.pt")
    result = run_trial(validate_config(json.loads(sys.argv[2])), out / "run", accelerator=accelerator, on_epoch=save)
    (out / f"rank{rank}.json").write_text(json.dumps({"status": result.status, "n": accelerator.num_processes}))
''')


@pytest.mark.slow
def test_two_process_ddp_mixoe_keeps_one_model(tmp_path):
    """MixOE's two forward passes per step (the ID one unwrapped) still give DDP one gradient to average."""
    worker = tmp_path / "worker.py"
    worker.write_text(_DDP_WORKER)
    cfg = dict(benchmark=SMALL, method="mixoe", outliers="embedded", epochs=1, batch_size=64, scorers="msp")
    proc = torchrun_cpu(worker, tmp_path, json.dumps(cfg))
    assert proc.returncode == 0, proc.stderr[-3000:]
    for r in (0, 1):
        assert json.loads((tmp_path / f"rank{r}.json").read_text()) == {"status": "completed", "n": 2}
    s0, s1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert all(torch.equal(s0[k], s1[k]) for k in s0), "ranks diverged"
    assert Path(tmp_path / "run" / "checkpoint.pt").exists()

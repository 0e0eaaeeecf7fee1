"""VOS (virtual outlier synthesis): its math in isolation, its step, and runs of it through the loop."""

import json
import textwrap

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import HOST_OPS, recorded_ops, torchrun_cpu
from torch.distributions import MultivariateNormal

from ascood.config import config_json, validate_config
from ascood.method import vos as vos_math
from ascood.method.vos import (
    VOSHead,
    enqueue,
    fit_gaussians,
    learnable_energy,
    sample_virtual_outliers,
    start_epoch,
    uncertainty_loss,
)
from ascood.posthoc import evaluate_run
from ascood.train import make_accelerator, train_step
from ascood.trial import run_trial

SMALL = "cmnist[classes=2]"
FAST = dict(scorers="msp,energy", eval_batch_size=1024)
QUICK_VOS = dict(method="vos", vos_sample_number=8, vos_sample_from=500, vos_start=0.0)  # the loss from the first steps


def _spd(dim: int, seed: int) -> torch.Tensor:
    a = torch.randn(dim, dim, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return a @ a.T / dim + 0.1 * torch.eye(dim, dtype=torch.float64)


# ---- the queues ---------------------------------------------------------------------------------


def _reference_queues(batches, num_classes, n):
    """The reference's bookkeeping, sample by sample: fill each class until all are full (samples of
    a class already full are dropped meanwhile), then drop the oldest and append, per class."""
    queues = {c: [] for c in range(num_classes)}
    for labels in batches:
        all_full = all(len(q) == n for q in queues.values())  # decided before the batch
        for i, c in labels:
            if all_full:
                queues[c] = [*queues[c][1:], i]
            elif len(queues[c]) < n:
                queues[c].append(i)
    return queues


def test_queues_hold_what_the_reference_keeps():
    """Features carry their sample id, so each class's queue can be compared as a set of ids."""
    num_classes, n, dim = 3, 4, 2
    g = torch.Generator().manual_seed(0)
    queue = torch.zeros(num_classes, n, dim, dtype=torch.float64)
    count = torch.zeros(num_classes, dtype=torch.long)
    ptr = torch.zeros(num_classes, dtype=torch.long)
    batches, next_id = [], 1
    sizes = [5, 3, 7, 1, 6, 12, 4, 9, 2, 8]
    for b, size in enumerate(sizes):
        labels = torch.randint(0, num_classes, (size,), generator=g)
        if b == 5:
            labels[:] = 1  # more than N of one class in a batch: the FIFO keeps the last N
        ids = torch.arange(next_id, next_id + size, dtype=torch.float64)
        next_id += size
        batches.append(list(zip(ids.long().tolist(), labels.tolist(), strict=True)))
        queue, count, ptr = enqueue(queue, count, ptr, torch.stack([ids, -ids], 1), labels)
        expected = _reference_queues(batches, num_classes, n)
        for c in range(num_classes):
            held = sorted(int(v) for v in queue[c, : count[c], 0].tolist())
            assert held == sorted(expected[c]), (b, c)
            assert int(count[c]) == len(expected[c])
            torch.testing.assert_close(queue[c, :, 1], -queue[c, :, 0])  # whole rows moved, not entries
    assert (count == n).all(), "the test's batches should reach the FIFO phase"


def test_a_batch_of_none_of_a_class_and_an_empty_batch_leave_its_queue():
    queue, count, ptr = torch.zeros(2, 3, 1), torch.zeros(2, dtype=torch.long), torch.zeros(2, dtype=torch.long)
    queue, count, ptr = enqueue(queue, count, ptr, torch.ones(2, 1), torch.tensor([0, 0]))
    assert count.tolist() == [2, 0] and queue[1].abs().sum() == 0
    same = enqueue(queue, count, ptr, torch.zeros(0, 1), torch.zeros(0, dtype=torch.long))
    assert all(torch.equal(a, b) for a, b in zip(same, (queue, count, ptr), strict=True))


# ---- the Gaussians and the outliers -------------------------------------------------------------


def test_gaussian_fit_is_numpys_class_means_and_shared_covariance():
    g = torch.Generator().manual_seed(1)
    queue = torch.randn(3, 7, 4, generator=g, dtype=torch.float64) + torch.arange(3.0, dtype=torch.float64)[:, None, None]
    means, cov = fit_gaussians(queue)
    q = queue.numpy()
    np.testing.assert_allclose(means.numpy(), q.mean(axis=1), rtol=1e-12)
    centred = (q - q.mean(axis=1, keepdims=True)).reshape(-1, 4)
    expected = np.cov(centred, rowvar=False, bias=True) + 1e-4 * np.eye(4)
    np.testing.assert_allclose(cov.numpy(), expected, rtol=1e-10, atol=1e-14)


def test_virtual_outliers_are_the_low_likelihood_tail_of_each_class(monkeypatch):
    num_classes, dim, select = 3, 5, 2
    means = torch.randn(num_classes, dim, generator=torch.Generator().manual_seed(2), dtype=torch.float64) * 4
    cov = _spd(dim, 3)
    outliers = sample_virtual_outliers(means, cov, 2000, select, torch.Generator().manual_seed(4))
    assert outliers.shape == (num_classes * select, dim)
    for c in range(num_classes):
        dist = MultivariateNormal(means[c], covariance_matrix=cov)
        typical = dist.log_prob(dist.sample((20_000,)))
        mine = dist.log_prob(outliers[c * select:(c + 1) * select])
        assert (mine < typical.quantile(0.01)).all(), (c, mine, typical.quantile(0.01))
        # nearer their own class than the others' means in Mahalanobis terms: each class's own tail
        others = [MultivariateNormal(means[o], covariance_matrix=cov).log_prob(outliers[c * select]) for o in range(3)]
        assert int(torch.stack(others).argmax()) == c
    again = sample_virtual_outliers(means, cov, 2000, select, torch.Generator().manual_seed(4))
    assert torch.equal(outliers, again), "the draws come from the generator alone"
    # all draws kept: they come out in increasing likelihood (the order of ‖ε‖ is that of the density)
    monkeypatch.setattr(vos_math, "SAMPLE_CHUNK", 1)  # one class per chunk
    everything = sample_virtual_outliers(means, cov, 50, 50, torch.Generator().manual_seed(5))
    for c in range(num_classes):
        log_p = MultivariateNormal(means[c], covariance_matrix=cov).log_prob(everything[c * 50:(c + 1) * 50])
        assert (log_p.diff() >= -1e-9).all()


def test_the_draws_are_the_gaussians():
    """Mean and covariance of many draws (select = sample_from keeps them all) match the fitted ones."""
    means, cov = torch.zeros(1, 3, dtype=torch.float64), _spd(3, 6)
    draws = sample_virtual_outliers(means, cov, 40_000, 40_000, torch.Generator().manual_seed(7))
    np.testing.assert_allclose(draws.mean(0).numpy(), 0, atol=0.03)
    np.testing.assert_allclose(np.cov(draws.numpy(), rowvar=False), cov.numpy(), atol=0.05)


# ---- the energy and the uncertainty loss --------------------------------------------------------


def test_learnable_energy_is_a_class_weighted_logsumexp():
    logits = torch.randn(6, 4, generator=torch.Generator().manual_seed(8), dtype=torch.float64)
    torch.testing.assert_close(learnable_energy(logits, torch.ones(1, 4, dtype=torch.float64)), torch.logsumexp(logits, 1))
    w = torch.tensor([[0.5, -2.0, 1.5, 0.0]], dtype=torch.float64)  # negative weights count as 0 (relu)
    expected = np.log((np.maximum(w.numpy(), 0) * np.exp(logits.numpy())).sum(1))
    np.testing.assert_allclose(learnable_energy(logits, w).numpy(), expected, rtol=1e-12)
    big = learnable_energy(logits * 1000, torch.ones(4, dtype=torch.float64))  # no overflow
    torch.testing.assert_close(big, torch.logsumexp(logits * 1000, 1))


def test_uncertainty_loss_is_the_logistic_ce_and_trains_every_part():
    torch.manual_seed(0)
    head = VOSHead(num_classes=3, feature_dim=4, sample_number=5).double()
    fc = torch.nn.Linear(4, 3).double()
    logits_id = torch.randn(8, 3, dtype=torch.float64, requires_grad=True)
    outliers = torch.randn(3, 4, dtype=torch.float64)
    loss = head.loss(logits_id, fc(outliers))
    e_id, e_ood = learnable_energy(logits_id, head.weight_energy), learnable_energy(fc(outliers), head.weight_energy)
    z = torch.cat([e_id, e_ood])[:, None] * head.logistic.weight[:, 0] + head.logistic.bias  # (11, 2)
    target = torch.tensor([1] * 8 + [0] * 3)
    manual = -(z.log_softmax(1)[torch.arange(11), target]).mean()
    torch.testing.assert_close(loss, manual)
    torch.testing.assert_close(uncertainty_loss(e_id, e_ood, head.logistic.weight, head.logistic.bias), manual)
    loss.backward()
    for name, t in [("weight_energy", head.weight_energy), ("logistic.weight", head.logistic.weight),
                    ("logistic.bias", head.logistic.bias), ("fc (through the outliers)", fc.weight),
                    ("the ID logits", logits_id)]:
        assert t.grad is not None and t.grad.abs().sum() > 0, name


def test_start_is_a_fraction_of_the_run():
    assert start_epoch(0.4, 100) == 40  # the reference's epoch 40 of 100
    assert [start_epoch(0.4, e) for e in (1, 2, 3, 10)] == [1, 1, 2, 4]
    assert start_epoch(0.0, 1) == 0 and start_epoch(1.0, 5) == 5 and start_epoch(0.29, 100) == 29


# ---- the step ------------------------------------------------------------------------------------


def test_vos_step_never_waits_for_the_device_and_starts_once_the_queues_are_full():
    from ascood.models import create_model

    cfg = validate_config(dict(benchmark=SMALL, method="vos", vos_sample_number=4, vos_sample_from=64))
    accelerator = make_accelerator()
    torch.manual_seed(0)
    model = create_model("small_cnn", num_classes=2, **cfg.head_options()).to(memory_format=torch.channels_last)
    head = VOSHead(2, model.feature_dim, 4)
    params = [*model.parameters(), *head.parameters()]
    g = torch.Generator().manual_seed(0)
    x = torch.randn(8, 3, 32, 32).contiguous(memory_format=torch.channels_last)
    y = torch.tensor([0, 1] * 4)
    kl = []
    with recorded_ops() as ops:
        for _ in range(2):  # the first batch fills the queues, the second has the loss
            losses = train_step(model, model, x, y, cfg=cfg, alpha=0.0, generator=g, accelerator=accelerator,
                                params=params, vos=head, vos_active=True)
            kl.append(losses.kl.detach())
    assert not HOST_OPS & set(ops.names), sorted(HOST_OPS & set(ops.names))
    assert kl[0] == 0 and kl[1] > 0, kl
    assert head.count.tolist() == [4, 4]
    assert all(p.grad is not None for p in head.parameters()), "the VOS head is trained"
    assert torch.isfinite(losses.loss)
    with pytest.raises(ValueError, match="VOSHead"):
        train_step(model, model, x, y, cfg=cfg, alpha=0.0, generator=g, accelerator=accelerator, params=params)


# ---- runs ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("benchmark", ["cmnist", "mnist6", "mnist10"])
def test_one_epoch_of_vos_on_each_embedded_benchmark(tmp_path, benchmark):
    cfg = validate_config(dict(benchmark=benchmark, epochs=1, **FAST, **QUICK_VOS))
    seen = []
    result = run_trial(cfg, tmp_path, on_epoch=lambda stats, model: seen.append(stats))
    assert result.status == "completed", result.reason
    assert seen[0].kl > 0, "the uncertainty loss never ran"
    assert seen[0].loss == pytest.approx(seen[0].ce + 0.1 * seen[0].kl, rel=1e-4)
    df = pd.read_parquet(tmp_path / "results.parquet")
    assert (df["method"] == "vos").all() and df["auroc"].notna().all()
    assert set(df["feature_norm"]) == {"none"} and np.isfinite(df["train_loss"]).all()
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert not any(k.startswith(("weight_energy", "logistic", "queue")) for k in state["model"]), "OODNet unchanged"
    num_classes = state["model"]["head.fc.weight"].shape[0]
    assert state["vos"]["queue"].shape == (num_classes, 8, 128) and (state["vos"]["count"] == 8).all()
    if benchmark == "cmnist":  # `ascood-eval` of a VOS run: the scored network alone, as trained
        rows = evaluate_run(tmp_path, benchmark=None, scorer_names=["msp", "energy"], search=False)
        test_rows = {(r["ood_set"], r["scorer"]): r["auroc"] for r in rows if r["split"] == "test"}
        trained = {(r["ood_set"], r["scorer"]): r["auroc"] for r in result.rows if r["split"] == "test"}
        assert test_rows == pytest.approx(trained)


def test_vos_resumes_from_its_checkpoint_as_if_never_stopped(tmp_path):
    """The queues, the VOS head and its optimizer state are in the checkpoint: bit-exact on the CPU
    (on a GPU with `deterministic`)."""
    kw = dict(benchmark=SMALL, epochs=3, deterministic=torch.cuda.is_available(), **FAST, **QUICK_VOS)
    straight = run_trial(validate_config(kw), tmp_path / "straight")

    class Interrupt(Exception):
        pass

    def stop_after_two(stats, model):
        if stats.epoch == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        run_trial(validate_config(kw), tmp_path / "resumed", on_epoch=stop_after_two)
    assert torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=True)["epoch"] == 1
    resumed = run_trial(validate_config(kw), tmp_path / "resumed")
    assert resumed.status == straight.status == "completed"
    a, b = (torch.load(tmp_path / d / "checkpoint.pt", weights_only=True) for d in ("straight", "resumed"))
    for part in ("model", "vos"):
        assert set(a[part]) == set(b[part])
        assert all(torch.equal(a[part][k], b[part][k]) for k in a[part]), part
    cols = ["epoch", "split", "ood_set", "scorer", "auroc", "train_loss"]
    da, db = (pd.read_parquet(tmp_path / d / "results.parquet")[cols].sort_values(cols[:4]).reset_index(drop=True)
              for d in ("straight", "resumed"))
    pd.testing.assert_frame_equal(da, db)


def test_vos_options_belong_to_vos_and_leave_old_run_ids_alone():
    cfg = validate_config(dict(method="vos"))
    assert [cfg.method_option(f"vos_{o}") for o in ("sample_number", "sample_from", "select", "loss_weight", "start")] \
        == [1000, 10000, 1, 0.1, 0.4]
    assert validate_config(dict(method="vos", vos_start=0.0)).method_option("vos_start") == 0.0
    for other in ("ascood", "ce", "logitnorm"):
        with pytest.raises(ValueError, match=f"--vos-sample-number: an option of method vos, not of method {other}"):
            validate_config(dict(method=other, vos_sample_number=10))
    with pytest.raises(ValueError, match="an option of method logitnorm, not of method vos"):
        validate_config(dict(method="vos", logitnorm_tau=0.1))
    with pytest.raises(ValueError, match=r"--vos-select \(20\) must not exceed --vos-sample-from \(10\)"):
        validate_config(dict(method="vos", vos_select=20, vos_sample_from=10))
    for bad in (dict(vos_start=1.5), dict(vos_sample_number=0), dict(vos_loss_weight=-1.0)):
        with pytest.raises(ValueError):
            validate_config(dict(method="vos", **bad))
    assert "vos_" not in config_json(validate_config({})) and "vos_" not in config_json(cfg)
    assert "vos_start" in config_json(validate_config(dict(method="vos", vos_start=0.5)))


def test_an_option_of_vos_given_to_another_method_is_refused_on_the_command_line(capsys):
    from ascood.cli.train import main

    with pytest.raises(SystemExit) as exit_:
        main(["--method", "ce", "--vos-start", "0.5", "--epochs", "1"])
    assert exit_.value.code == 2
    assert "--vos-start: an option of method vos, not of method ce" in capsys.readouterr().err


_DDP_WORKER = textwrap.dedent('''
    import json, sys
    from pathlib import Path
    import torch
    import ascood.train
    from ascood.config import validate_config
    from ascood.train import make_accelerator
    from ascood.trial import run_trial

    made = []  # the run's VOSHead, to compare the ranks' heads and queues
    VOSHead = ascood.train.VOSHead
    ascood.train.VOSHead = lambda *args: made.append(VOSHead(*args)) or made[-1]

    def save(stats, model):
        torch.save({"model": model.state_dict(), "vos": made[0].state_dict()}, out / f"rank{rank}.pt")

    out = Path(sys.argv[1])
    accelerator = make_accelerator()
    cfg = validate_config(json.loads(sys.argv[2]))
    rank = accelerator.process_index
    result = run_trial(cfg, out / "run", accelerator=accelerator, on_epoch=save)
    (out / f"rank{rank}.json").write_text(json.dumps({"status": result.status, "n": accelerator.num_processes}))
''')


@pytest.mark.slow
def test_two_process_ddp_vos_keeps_one_queue_and_one_model(tmp_path):
    """Each rank enqueues every rank's features (gathered in rank order): one queue, which the
    checkpoint holds whole; the VOS head's gradients are averaged as DDP averages the network's."""
    worker = tmp_path / "worker.py"
    worker.write_text(_DDP_WORKER)
    cfg = dict(benchmark=SMALL, epochs=1, batch_size=64, scorers="msp", **QUICK_VOS)
    proc = torchrun_cpu(worker, tmp_path, json.dumps(cfg))
    assert proc.returncode == 0, proc.stderr[-3000:]
    for r in (0, 1):
        assert json.loads((tmp_path / f"rank{r}.json").read_text()) == {"status": "completed", "n": 2}
    s0, s1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    for part in ("model", "vos"):
        assert all(torch.equal(s0[part][k], s1[part][k]) for k in s0[part]), f"ranks diverged ({part})"
    state = torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)
    assert all(torch.equal(state["vos"][k], s0["vos"][k]) for k in s0["vos"]) and (state["vos"]["count"] == 8).all()
    assert s0["vos"]["weight_energy"].ne(state["vos"]["weight_energy"]).sum() == 0

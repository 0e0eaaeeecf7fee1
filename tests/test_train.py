import pandas as pd
import pytest
import torch

from ascood.config import validate_config
from ascood.train import CheckpointMismatch
from ascood.trial import run_trial

FAST = dict(scorers="msp,energy,iodin", eval_batch_size=1024)
SMALL = "cmnist[classes=2]"  # the two-class build: where a test does not depend on five classes


def _cfg(**kw):
    return validate_config({**FAST, **kw})


def _weights(run_dir):
    return torch.load(run_dir / "checkpoint.pt", weights_only=True)["model"]


@pytest.mark.parametrize("name", ["cmnist", "mnist6", "mnist10"])
def test_one_epoch_end_to_end_on_each_embedded_benchmark(name, tmp_path):
    from ascood.data import load_benchmark

    data = load_benchmark(name)
    result = run_trial(_cfg(benchmark=name, epochs=1), tmp_path)
    assert result.status == "completed"
    df = pd.read_parquet(tmp_path / "results.parquet")
    n_sets = len(data.ood)
    assert len(df) == 2 * n_sets * 3  # splits × OOD sets × scorers
    assert set(df["split"]) == {"val", "test"} and (df["status"] == "completed").all()
    assert df[["auroc", "fpr95", "aupr_in", "aupr_out", "id_accuracy"]].notna().all().all()
    assert df["auroc"].between(0, 100).all()
    test_rows = df[df["split"] == "test"]
    assert (test_rows["n_id"] == len(data.test)).all()
    assert df["setting"].iloc[0] == data.setting and df["embedded"].all()
    # one epoch on mnist10 already separates digits from noise
    if name == "mnist10":
        assert test_rows["id_accuracy"].iloc[0] > 50
        assert test_rows[(test_rows["ood_set"] == "noise") & (test_rows["scorer"] == "energy")]["auroc"].iloc[0] > 90


def test_same_seed_same_weights_and_ce_baseline_differs(tmp_path):
    a = run_trial(_cfg(benchmark="cmnist", epochs=1, scorers="msp"), tmp_path / "a")
    b = run_trial(_cfg(benchmark="cmnist", epochs=1, scorers="msp"), tmp_path / "b")
    ce = run_trial(_cfg(benchmark="cmnist", epochs=1, scorers="msp", method="ce"), tmp_path / "ce")
    wa, wb, wc = (_weights(tmp_path / d) for d in ("a", "b", "ce"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert not torch.equal(wa["backbone.features.0.weight"], wc["backbone.features.0.weight"])
    assert a.rows[0]["auroc"] == b.rows[0]["auroc"]
    assert ce.rows[0]["feature_norm"] == "none" and a.rows[0]["feature_norm"] == "zscore"


@pytest.mark.parametrize("ood_type, saliency_mode", [("gradient", "eval"), ("shuffle", "train")])
def test_resume_from_checkpoint_continues_where_it_stopped(tmp_path, ood_type, saliency_mode):
    """Bit-exact where kernels are deterministic: always on the CPU; on a GPU only with
    `deterministic` (cuDNN autotuning and atomic adds otherwise change the last bits of each
    epoch, so a resumed GPU run only matches in distribution), which this test then turns on."""
    kw = dict(benchmark=SMALL, epochs=3, ood_type=ood_type, saliency_mode=saliency_mode, alpha_max=2.0, alpha_min=0.5,
              deterministic=torch.cuda.is_available())
    straight = run_trial(_cfg(**kw), tmp_path / "straight")

    class Interrupt(Exception):
        pass

    def stop_after_two(stats, model):
        if stats.epoch == 2:
            raise Interrupt

    with pytest.raises(Interrupt):
        run_trial(_cfg(**kw), tmp_path / "resumed", on_epoch=stop_after_two)
    ckpt = torch.load(tmp_path / "resumed" / "checkpoint.pt", weights_only=True)
    assert ckpt["epoch"] == 1, "the interrupted epoch 2 never reached its checkpoint"
    assert set(pd.read_parquet(tmp_path / "resumed" / "results.parquet")["epoch"]) == {1, 2}

    resumed = run_trial(_cfg(**kw), tmp_path / "resumed")
    a, b = _weights(tmp_path / "straight"), _weights(tmp_path / "resumed")
    assert all(torch.equal(a[k], b[k]) for k in a)
    cols = ["epoch", "split", "ood_set", "scorer", "auroc", "fpr95", "id_accuracy", "train_loss"]
    da = pd.read_parquet(tmp_path / "straight" / "results.parquet")[cols].sort_values(cols[:4]).reset_index(drop=True)
    db = pd.read_parquet(tmp_path / "resumed" / "results.parquet")[cols].sort_values(cols[:4]).reset_index(drop=True)
    pd.testing.assert_frame_equal(da, db)  # no epoch lost, none duplicated
    assert resumed.status == straight.status == "completed"


def test_a_different_config_in_the_same_directory_is_refused(tmp_path):
    run_trial(_cfg(benchmark="cmnist", epochs=1, scorers="msp"), tmp_path)
    with pytest.raises(CheckpointMismatch, match="differs in lam"):
        run_trial(_cfg(benchmark="cmnist", epochs=1, scorers="msp", lam=0.5), tmp_path)
    assert run_trial(_cfg(benchmark="cmnist", epochs=1, scorers="msp", lam=0.5), tmp_path, overwrite=True).status == "completed"


def test_diverging_run_ends_failed_with_its_reason(tmp_path):
    result = run_trial(_cfg(benchmark="cmnist", epochs=2, scorers="msp", lr=1e30), tmp_path)
    assert result.status == "failed" and "nan" in result.reason
    df = pd.read_parquet(tmp_path / "results.parquet")
    assert (df["status"] == "failed").all() and df["status_reason"].str.contains("nan").all()


def test_bf16_mixed_precision_runs_through_the_same_loop(tmp_path):
    from ascood.train import make_accelerator

    make_accelerator("no")  # a process that already ran an fp32 run (a reused trial actor)
    accelerator = make_accelerator("bf16")
    result = run_trial(_cfg(benchmark=SMALL, epochs=3, batch_size=32, mixed_precision="bf16"), tmp_path,
                       accelerator=accelerator)
    assert result.status == "completed" and accelerator.mixed_precision == "bf16"
    df = pd.read_parquet(tmp_path / "results.parquet")
    assert df[["auroc", "fpr95"]].notna().all().all()
    assert df.loc[df["epoch"] == 3, "id_accuracy"].iloc[0] > 80

"""Training methods beside ASCOOD (the registry, LogitNorm, T2FNorm): their math and a run of each."""

import numpy as np
import pandas as pd
import pytest
import torch

from ascood.config import config_json, validate_config
from ascood.method.losses import logitnorm_loss
from ascood.method.registry import METHODS
from ascood.models import create_model
from ascood.scorers.feature import HeadCopy
from ascood.trial import run_trial


def test_logitnorm_loss_is_ce_of_the_logits_direction_over_tau():
    g = torch.Generator().manual_seed(0)
    logits, y = torch.randn(6, 4, generator=g, dtype=torch.float64), torch.tensor([0, 1, 2, 3, 0, 1])
    z = logits.numpy()
    scaled = z / ((np.linalg.norm(z, axis=1, keepdims=True) + 1e-7) * 0.04)
    log_p = scaled - np.log(np.exp(scaled - scaled.max(1, keepdims=True)).sum(1, keepdims=True)) - scaled.max(1, keepdims=True)
    expected = -log_p[np.arange(6), y.numpy()].mean()
    assert logitnorm_loss(logits, y, 0.04).item() == pytest.approx(expected, rel=1e-12)
    # only the direction is trained: a larger norm gives the same loss (up to the 1e-7)
    assert logitnorm_loss(logits * 50, y, 0.04).item() == pytest.approx(expected, rel=1e-6)


def test_t2fnorm_head_normalizes_in_training_only():
    cfg = validate_config(dict(method="t2fnorm"))
    model = create_model("small_cnn", num_classes=3, **cfg.head_options()).double()
    h = torch.rand(5, model.feature_dim, dtype=torch.float64) * 3
    w, b = model.fc.weight, model.fc.bias
    model.train()
    torch.testing.assert_close(model.head(h), (h / h.norm(dim=1, keepdim=True) / 0.1) @ w.T + b)
    model.eval()
    torch.testing.assert_close(model.head(h), h @ w.T + b)
    copy = HeadCopy.of(model.head)  # what scorers apply at evaluation: the raw features
    assert copy.feature_norm == "none"
    torch.testing.assert_close(copy.forward(h), model.head(h))


def test_method_options_belong_to_their_method_and_leave_old_run_ids_alone():
    assert validate_config(dict(method="logitnorm")).method_option("logitnorm_tau") == 0.04
    assert validate_config(dict(method="logitnorm", logitnorm_tau=0.5)).method_option("logitnorm_tau") == 0.5
    with pytest.raises(ValueError, match="an option of method t2fnorm, not of method ascood"):
        validate_config(dict(t2fnorm_tau=0.2))
    with pytest.raises(ValueError, match="expected one of ascood, ce, logitnorm, t2fnorm, vos, oe, mixoe"):
        validate_config(dict(method="vos-typo"))
    assert "tau" not in config_json(validate_config({})) and "tau" not in config_json(validate_config(dict(method="ce")))
    assert set(METHODS) >= {"ascood", "ce", "logitnorm", "t2fnorm", "vos"}


@pytest.mark.parametrize("benchmark", ["cmnist", "mnist6", "mnist10"])
@pytest.mark.parametrize("method", ["logitnorm", "t2fnorm"])
def test_one_epoch_of_each_method_on_each_embedded_benchmark(tmp_path, method, benchmark):
    cfg = validate_config(dict(benchmark=benchmark, method=method, epochs=1, scorers="msp,energy", eval_batch_size=1024))
    result = run_trial(cfg, tmp_path)
    assert result.status == "completed", result.reason
    df = pd.read_parquet(tmp_path / "results.parquet")
    assert (df["method"] == method).all() and df["auroc"].notna().all()
    assert set(df["feature_norm"]) == {"l2" if method == "t2fnorm" else "none"}
    assert np.isfinite(df["train_loss"]).all()

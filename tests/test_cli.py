import subprocess
import sys

import pandas as pd
import pytest
import torch
import torchvision

from ascood.cli.train import main
from ascood.models import WeightsError, create_model


def _run_main(capsys, *argv):
    with pytest.raises(SystemExit) as exc:
        main(list(argv))
    err = capsys.readouterr().err.strip()
    return exc.value.code, err


@pytest.mark.parametrize(
    "argv, needle",
    [
        (["--benchmark", "imagenet-9"], "--benchmark: unknown benchmark 'imagenet-9'"),
        (["--p-inv", "1.5"], "--p-inv: expected a value in (0, 1], got 1.5"),
        (["--p-inv", "0"], "--p-inv: expected a value in (0, 1]"),
        (["--sigma", "0"], "--sigma: expected a value > 0"),
        (["--lambda", "-1"], "--lambda: expected a value >= 0"),
        (["--alpha-min", "3", "--alpha-max", "1"], "--alpha-min (3.0) must not exceed --alpha-max (1.0)"),
        (["--ood-type", "cutmix"], "--ood-type: expected one of gradient, gradient-subtract, shuffle, gaussian"),
        (["--feature-norm", "batch"], "--feature-norm: expected one of zscore, l2, none"),
        (["--epochs", "two"], "--epochs: invalid int value"),
        (["--config", "/nonexistent/x.yaml"], "--config: file /nonexistent/x.yaml does not exist"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(capsys, argv, needle):
    code, err = _run_main(capsys, *argv)
    assert code == 2
    assert needle in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_config_file_errors_name_the_file_and_field(tmp_path, capsys):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("benchmark: cmnist\np-inv: 2.0\n")
    code, err = _run_main(capsys, "--config", str(cfg))
    assert code == 2 and err.endswith(f"{cfg}: p_inv: expected a value in (0, 1], got 2.0")
    cfg.write_text("benchmark: cmnist\nlearning_rate: 0.1\n")
    code, err = _run_main(capsys, "--config", str(cfg))
    assert code == 2 and "learning_rate: unknown option" in err
    cfg.write_text("benchmark: [cmnist\n")
    code, err = _run_main(capsys, "--config", str(cfg))
    assert code == 2 and f"{cfg}:" in err and "not valid YAML" in err


def test_weights_missing_or_mismatched_exit_2(tmp_path, capsys):
    code, err = _run_main(capsys, "--benchmark", "cmnist", "--weights", str(tmp_path / "none.pt"), "--out", str(tmp_path / "r"))
    assert code == 2 and f"--weights: file {tmp_path / 'none.pt'} does not exist" in err
    wrong = tmp_path / "r18.pt"
    torch.save(torchvision.models.resnet18().state_dict(), wrong)
    code, err = _run_main(capsys, "--benchmark", "cmnist", "--weights", str(wrong), "--out", str(tmp_path / "r2"))
    assert code == 2 and "does not fit the backbone" in err and len(err.splitlines()) == 1


def test_torchvision_weights_load_from_a_local_file(tmp_path):
    torch.manual_seed(0)
    src = torchvision.models.resnet18(num_classes=1000)
    path = tmp_path / "resnet18.pth"
    torch.save(src.state_dict(), path)
    model = create_model("resnet18", num_classes=5, weights=path)
    assert torch.equal(model.backbone.conv1.weight, src.conv1.weight)
    assert model.fc.out_features == 5
    with pytest.raises(WeightsError, match="does not fit"):
        create_model("resnet50", num_classes=5, weights=path)
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsError, match="not a readable"):
        create_model("resnet18", num_classes=5, weights=path)


def test_ascood_train_console_script_runs_from_a_config_file(tmp_path):
    cfg = tmp_path / "run.yaml"
    cfg.write_text("benchmark: 'cmnist[classes=2]'\nepochs: 1\nlambda: 0.5\nscorers: [msp, odin]\n")
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "ascood.cli.train", "--config", str(cfg), "--sigma", "0.25", "--out", str(out)],
        capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "ID acc" in proc.stdout and "odin" in proc.stdout
    df = pd.read_parquet(out / "results.parquet")
    assert set(df["scorer"]) == {"msp", "odin"}
    assert (df["lam"] == 0.5).all() and (df["sigma"] == 0.25).all()

"""benchmarks/gpu_smoke.sh in its --cpu mode: the script a lent GPU runs first must itself work."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).parents[1] / "benchmarks" / "gpu_smoke.sh"
CHECKS = ["device", "step-fp32", "step-bf16", "train-bf16", "eval-all-scorers", "train-eval-agree", "sweep-4-trials"]


@pytest.mark.slow
def test_gpu_smoke_script_passes_in_cpu_mode(tmp_path):
    env = {**os.environ, "PYTHON": sys.executable}
    proc = subprocess.run(["bash", str(SCRIPT), "--cpu", "--keep", str(tmp_path)], capture_output=True, text=True,
                          env=env, timeout=1200)
    lines = proc.stdout.splitlines()
    assert proc.returncode == 0, proc.stdout + proc.stderr[-2000:]
    status = {ln.split()[1].rstrip(":"): ln.split()[0] for ln in lines if ln.split()[:1] in (["PASS"], ["FAIL"], ["SKIP"])}
    assert {c: status.get(c) for c in CHECKS} == dict.fromkeys(CHECKS, "PASS")
    assert status["ddp-2-gpus"] == status["gpu-cpu-parity"] == "SKIP"
    assert "max |training − ascood-eval| AUROC: 0.000000" in (tmp_path / "train-eval-agree.log").read_text()


def test_gpu_smoke_script_refuses_an_unknown_option():
    proc = subprocess.run(["bash", str(SCRIPT), "--gpus", "2"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "usage:" in proc.stderr

"""A real 2-process gloo DDP run through Accelerate: both ranks must end with identical weights."""

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import torchrun_cpu

WORKER = Path(__file__).with_name("ddp_worker.py")


@pytest.mark.parametrize(
    "saliency_mode, benchmark",
    [("eval", "cmnist"), ("train", "cmnist"), ("eval", "waterbirds[size=32]")],
    ids=["eval", "train", "real-layout-resized-crops"],
)
def test_two_process_ddp_trains_one_model(tmp_path, saliency_mode, benchmark):
    """The real-layout case adds memory-mapped decoded images and per-rank random resized crops."""
    root = tmp_path / "data"
    if benchmark.startswith("waterbirds"):
        from ascood.data import fixtures

        fixtures.write_native(root, "waterbirds")
    # CPU (gloo) even on a GPU machine; benchmarks/gpu_smoke.sh runs NCCL on two GPUs.
    proc = torchrun_cpu(WORKER, tmp_path, saliency_mode, benchmark, env={"ASCOOD_DATA": str(root)})
    assert proc.returncode == 0, proc.stderr[-3000:]
    infos = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    for info in infos:
        assert info["distributed_type"] == "DistributedType.MULTI_CPU"
        assert info["num_processes"] == 2 and info["status"] == "completed"
    # ODIN-type scorers run sharded on both ranks, bank scorers (KNN) on rank 0 only: every rank returns rank 0's rows
    assert infos[0]["metrics"] == infos[1]["metrics"] and {m[2] for m in infos[0]["metrics"]} == {"msp", "iodin", "knn"}
    w0, w1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in (0, 1))
    assert all(torch.equal(w0[k], w1[k]) for k in w0), "ranks diverged: DDP did not synchronize"
    df = pd.read_parquet(tmp_path / "run" / "results.parquet")
    from ascood.data import load_benchmark

    data = load_benchmark(benchmark, root=root)
    assert (df.loc[df["split"] == "test", "n_id"] == len(data.test)).all(), "eval outputs gathered from both ranks"
    assert (df.loc[df["split"] == "val", "n_id"] == len(data.val)).all()

"""Run by tests/test_ddp.py under torchrun: one real training run, every rank saving its weights."""

import json
import sys
from pathlib import Path

import torch

from ascood.config import validate_config
from ascood.train import make_accelerator
from ascood.trial import run_trial


def main() -> None:
    out, saliency_mode, benchmark = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
    accelerator = make_accelerator()
    cfg = validate_config(
        dict(benchmark=benchmark, epochs=1, batch_size=64, scorers="msp,iodin,knn", saliency_mode=saliency_mode)
    )
    rank = accelerator.process_index

    def save_weights(stats, model) -> None:
        torch.save(model.state_dict(), out / f"rank{rank}.pt")

    result = run_trial(cfg, out / "run", accelerator=accelerator, on_epoch=save_weights)
    info = {
        "distributed_type": str(accelerator.distributed_type),
        "num_processes": accelerator.num_processes,
        "status": result.status,
        "metrics": sorted((r["split"], r["ood_set"], r["scorer"], r["auroc"], r["fpr95"]) for r in result.rows),
    }
    (out / f"rank{rank}.json").write_text(json.dumps(info))


if __name__ == "__main__":
    main()

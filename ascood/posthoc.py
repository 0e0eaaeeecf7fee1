"""Post-hoc evaluation of trained runs: checkpoint in, result rows out (what `ascood-eval` does).

The run's own configuration rebuilds the model; one forward pass per set is cached in the run
directory (`features/<benchmark>-epoch<E>.pt`), so every scorer, every grid point and every later
evaluation of the same checkpoint reuses it.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from ascood.config import TrainConfig, validate_config
from ascood.data import load_benchmark
from ascood.evaluate import Evaluator, grad_chunk
from ascood.models import create_model
from ascood.results import RunLabels, make_rows, run_id_for
from ascood.run_dir import CHECKPOINT, RunDirError, checkpoint_of
from ascood.scorers import build_scorers
from ascood.train import make_accelerator

__all__ = ["RunDirError", "evaluate_run", "load_run"]


def load_run(run_dir: Path) -> tuple[TrainConfig, dict]:
    path = checkpoint_of(run_dir)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(state, dict):  # indexing a tensor with "config" would warn, a second line
            raise TypeError(type(state).__name__)
        cfg = validate_config(json.loads(state["config"]))
        cfg.fc_classes(state)  # and the epoch: what evaluation reads of it besides the weights
        int(state["epoch"])
    except Exception as exc:
        why = f"no {exc} entry" if isinstance(exc, KeyError) else type(exc).__name__
        raise RunDirError(f"{path}: not a readable ascood checkpoint ({why})") from None
    return cfg, state


def evaluate_run(
    run_dir: Path, *, benchmark: str | None, scorer_names: list[str] | None, search: bool, use_cache: bool = True,
    data_root: str | Path | None = None, skip_corrupt: bool = False,
) -> list[dict]:
    """Evaluate one run's last checkpoint on its own benchmark or `benchmark`; returns rows in the
    results schema (stage `eval`), labelled with the benchmark they were measured on."""
    cfg, state = load_run(run_dir)
    name = benchmark or cfg.benchmark
    data = load_benchmark(name, root=data_root, skip_corrupt=skip_corrupt)
    if data.num_classes != cfg.fc_classes(state):
        raise RunDirError(f"{run_dir}: trained with {cfg.fc_classes(state)} classes, {name} has {data.num_classes}")
    accelerator = make_accelerator()  # evaluation is fp32 whatever the run trained in
    model = create_model(cfg.backbone, num_classes=data.num_classes, **cfg.head_options())
    try:
        model.load_state_dict(state["model"])
    except (RuntimeError, TypeError, AttributeError) as exc:  # missing, unexpected, mis-shaped or non-tensor weights
        detail = " ".join(str(exc).split())
        detail = detail if len(detail) <= 160 else detail[:159] + "…"
        raise RunDirError(f"{run_dir / CHECKPOINT}: does not fit a {cfg.backbone} model ({detail})") from None
    if cfg.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model = model.to(accelerator.device).eval()
    evaluator = Evaluator(
        data, accelerator, batch_size=cfg.eval_batch_size, num_workers=cfg.num_workers,
        fpr_convention=cfg.fpr_convention, channels_last=cfg.channels_last,
        grad_batch_size=grad_chunk(cfg.batch_size, cfg.method, accelerator.device),
    )
    epoch = int(state["epoch"])
    scorers = build_scorers(scorer_names or list(cfg.scorers), cfg.scorer_overrides())
    cache = run_dir / "features" / f"{name}-epoch{epoch}.pt" if use_cache else None
    results, used = evaluator.evaluate(model, scorers, search=search, cache=cache)
    return make_rows(
        cfg, name, data.setting, data.embedded, run_id_for(cfg), epoch, results, used, searched=search,
        train_loss=None, wall_time_s=None, labels=RunLabels(stage="eval"), status="completed",
    )

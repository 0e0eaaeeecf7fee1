"""`ascood-train`: train and evaluate one run on a named benchmark, with Rich progress and table."""

from __future__ import annotations

import argparse
import types
import typing
from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from ascood.cli.common import OneLineParser, UsageError, fail, read_yaml_mapping
from ascood.config import ConfigError, TrainConfig, field_name, flag_name, validate_config
from ascood.tracking import TrackingError, parse_tracking

if TYPE_CHECKING:  # torch, pandas and the training loop load only once the input is checked (fast --help, fast refusals)
    from rich.table import Table

PROG = "ascood-train"


def _arg_type(annotation):
    origin = typing.get_origin(annotation)
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if origin in (typing.Union, types.UnionType):
        return _arg_type(args[0])
    if origin is typing.Literal:
        return str
    if origin is tuple:
        return str
    return annotation if annotation in (int, float, str, Path) else str


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog=PROG, description="Train and evaluate one ASCOOD run on a named benchmark.")
    p.add_argument("--config", help="YAML file of option: value (flags given here override it)")
    p.add_argument("--out", type=Path, help="run directory (default: runs/<run id>)")
    p.add_argument("--overwrite", action="store_true", help="start anew instead of resuming a run in --out")
    p.add_argument("--data-root", type=Path, help="where real datasets live (default: $ASCOOD_DATA, else ~/data)")
    p.add_argument("--no-progress", action="store_true", help="no live progress bar")
    p.add_argument("--tracking", default="tensorboard",
                   help="trackers of the run's curves, comma-separated: tensorboard, mlflow, wandb, or none "
                        "(default: tensorboard; stores in --out: tb/, mlflow.db, wandb/)")
    for name, field in TrainConfig.model_fields.items():
        flag = flag_name(name)
        kw = {"dest": name, "default": argparse.SUPPRESS, "help": (field.description or f"default: {field.default}")}
        if field.annotation is bool:
            p.add_argument(flag, action=argparse.BooleanOptionalAction, **kw)
        else:
            p.add_argument(flag, type=_arg_type(field.annotation), **kw)
    return p


def load_config(args: argparse.Namespace) -> TrainConfig:
    values: dict = {}
    source = None
    if args.config:
        raw = read_yaml_mapping(args.config)
        keys = [k for k in raw if not isinstance(k, str)]
        if keys:
            raise UsageError(f"{args.config}: {keys[0]!r}: expected an option name, got a key of type {type(keys[0]).__name__}")
        values = {field_name(k): v for k, v in raw.items()}
        source = args.config
    flags = {k: v for k, v in vars(args).items() if k in TrainConfig.model_fields}
    try:
        if source:
            validate_config(values, source=source)
        return validate_config({**values, **flags})
    except ConfigError as exc:
        raise UsageError(str(exc)) from None


def results_table(rows: list[dict], title: str, *, embedded: bool, fpr_convention: str) -> Table:
    import pandas as pd
    from rich.table import Table

    from ascood.results import group_means

    """Per OOD set and group mean (plain mean of the sets), one column per scorer."""
    scorers = list(dict.fromkeys(r["scorer"] for r in rows))
    caption = f"AUROC↑/FPR@95↓ in %; FPR@95 convention: {fpr_convention}"
    if embedded:
        caption += "\nembedded benchmark: a demo and test bed, not a result on the paper's benchmarks"
    table = Table(title=title, caption=caption)
    table.add_column("OOD set (group)")
    for s in scorers:
        table.add_column(s, justify="right")
    by_key = {(r["ood_set"], r["scorer"]): r for r in rows}
    sets = list(dict.fromkeys((r["ood_set"], r["ood_group"]) for r in rows))
    for i, (name, group) in enumerate(sets):
        cells = (f"{by_key[(name, s)]['auroc']:.1f}/{by_key[(name, s)]['fpr95']:.1f}" for s in scorers)
        table.add_row(f"{name} ({group})", *cells, end_section=i == len(sets) - 1)
    means = group_means(pd.DataFrame(rows)).set_index(["ood_group", "scorer"])
    for group in dict.fromkeys(g for _, g in sets):
        cells = (f"{means.loc[(group, s), 'auroc']:.1f}/{means.loc[(group, s), 'fpr95']:.1f}" for s in scorers)
        table.add_row(f"[bold]{group} mean[/bold]", *cells)
    return table


def final_test_table(rows: list[dict], cfg: TrainConfig) -> Table | None:
    evaluated = [r for r in rows if r["split"] == "test"]
    if not evaluated:
        return None
    last = max(r["epoch"] for r in evaluated)
    final = [r for r in evaluated if r["epoch"] == last]
    first = final[0]
    title = (f"{cfg.benchmark} ({first['setting']}) · {cfg.method} · test · epoch {last}"
             f" · ID acc {first['id_accuracy']:.2f}%")
    return results_table(final, title, embedded=first["embedded"], fpr_convention=cfg.fpr_convention)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        cfg = load_config(args)
    except UsageError as exc:
        fail(PROG, str(exc))
    try:
        tracking = parse_tracking(args.tracking)
    except ValueError as exc:
        fail(PROG, f"--tracking {args.tracking}: {exc}")
    from accelerate import PartialState
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

    from ascood.models import WeightsError, create_model
    from ascood.train import CheckpointMismatch, EpochStats

    if cfg.weights is not None:  # before anything is created; the classifier is not loaded, so any class count does
        try:
            create_model(cfg.backbone, num_classes=2, weights=cfg.weights)
        except WeightsError as exc:
            fail(PROG, str(exc))

    from ascood.data import DatasetError
    from ascood.data.env import skip_corrupt_from_env
    from ascood.results import run_id_for
    from ascood.storage import unusable_dir
    from ascood.train import DeviceUnavailable, make_accelerator
    from ascood.trial import run_trial

    try:
        accelerator = make_accelerator(cfg.mixed_precision)
    except DeviceUnavailable as exc:
        fail(PROG, str(exc))
    main_proc = PartialState().is_main_process
    console = Console(stderr=False)
    out = args.out or Path("runs") / run_id_for(cfg)
    reason = unusable_dir(out)
    if reason:
        fail(PROG, f"--out {out}: {reason}")
    show = main_proc and not args.no_progress and console.is_terminal
    progress = Progress(
        TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
        TimeRemainingColumn(), TextColumn("{task.fields[info]}"), console=console, disable=not show,
    )
    task = progress.add_task("train", total=None, info="")

    def on_step(epoch: int, step: int, steps: int) -> None:
        if progress.tasks[0].total is None:
            progress.update(task, total=steps * cfg.epochs, completed=epoch * steps)
        progress.update(task, advance=1, description=f"epoch {epoch + 1}/{cfg.epochs}")

    def on_epoch(stats: EpochStats, model) -> None:
        if main_proc:
            msg = (f"epoch {stats.epoch}/{cfg.epochs}  loss {stats.loss:.4f}  ce {stats.ce:.4f}  "
                   f"kl {stats.kl:.4f}  alpha {stats.alpha:g}  {stats.seconds:.1f}s")
            progress.console.print(msg)
            progress.update(task, info=f"loss {stats.loss:.3f}")

    if main_proc:
        console.print(f"[bold]{PROG}[/bold] {cfg.method} on {cfg.benchmark} -> {out}")
    from ascood.progress_report import PlainLines, Reporter, RichBars, reporting

    # the decoded-image cache build shares the training bar's display on a terminal; lines otherwise
    shown = RichBars(bars=progress) if show else PlainLines() if main_proc and not args.no_progress else Reporter()
    try:
        with progress, reporting(shown):
            result = run_trial(cfg, out, accelerator=accelerator, overwrite=args.overwrite, data_root=args.data_root,
                               skip_corrupt=skip_corrupt_from_env(), on_step=on_step, on_epoch=on_epoch, tracking=tracking)
    except (WeightsError, CheckpointMismatch, DatasetError, TrackingError) as exc:
        fail(PROG, str(exc))
    if not main_proc:
        return 0
    if result.status == "failed":
        console.print(f"[red]run failed:[/red] {result.reason}; results in {out / 'results.parquet'}")
        return 1
    table = final_test_table(result.rows, cfg)
    if table is not None:
        console.print(table)
    console.print(f"results: {out / 'results.parquet'}   checkpoint: {out / 'checkpoint.pt'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

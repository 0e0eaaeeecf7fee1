"""`ascood-sweep`: Ray Tune × Optuna sweeps of α, p_inv, λ, σ per dataset; results in Parquet.

    ascood-sweep FILE [--resume | --fresh] [--address ADDR]
    ascood-sweep summary OUT [--json]
    ascood-sweep report OUT… [--out DIR] [--bootstrap N] [--json]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console

from ascood.cli.common import OneLineParser, fail

PROG = "ascood-sweep"


def _run_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog=PROG,
        description="Run (or resume) a sweep described by a YAML file.",
        epilog=(f"{PROG} summary OUT [--json]: a sweep's summary from its Parquet results. "
                f"{PROG} report OUT… [--out DIR] [--json]: the cross-setting analysis and HTML report."),
    )
    p.add_argument("file", help="sweep file (YAML)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--resume", action="store_true", help="continue the sweep in its output directory")
    group.add_argument("--fresh", action="store_true", help="delete the output directory and start anew")
    p.add_argument("--address", help="Ray cluster address (default: a local Ray on this machine)")
    p.add_argument("--data-root", help="where real datasets live (overrides the sweep file's data_root)")
    p.add_argument("--no-progress", action="store_true", help="print a line per trial instead of a live table")
    return p


def _summary_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog=f"{PROG} summary", description="Summarize a sweep from its Parquet results.")
    p.add_argument("out", type=Path, help="the sweep's output directory")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return p


def _report_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog=f"{PROG} report", description="Cross-setting analysis of one or more sweeps.")
    p.add_argument("outs", nargs="+", type=Path, help="sweep output directories (e.g. spurious, fine-grained, conventional)")
    p.add_argument("--out", type=Path, help="report directory (default: OUT/report of the first sweep)")
    p.add_argument("--bootstrap", type=int, default=500, help="bootstrap resamples over seeds (default 500)")
    p.add_argument("--json", action="store_true", help="print the JSON summary instead of tables")
    return p


def print_report(console: Console, args: argparse.Namespace) -> int:
    from rich.table import Table

    from analysis.load import AnalysisInputError
    from analysis.report import build_report, summary_json

    out = args.out or args.outs[0] / "report"
    try:
        report = build_report(args.outs, out, bootstrap=args.bootstrap)
    except AnalysisInputError as exc:
        fail(f"{PROG} report", str(exc))
    if args.json:
        print(summary_json(report))
        return 0
    if report.incomplete:
        console.print(f"[yellow]left out (not measured on every dataset): {len(report.incomplete)} setting(s)[/yellow]")
    if report.pick is None:
        console.print("no transfer stage in these results: add `transfer:` to the sweep file for a cross-setting pick")
    else:
        console.print(f"[bold]robust pick[/bold] (smallest worst-case validation regret): {report.pick.robust}")
        console.print(f"[bold]best mean[/bold]: {report.pick.best_mean}")
        table = Table(title="the robust pick on each dataset")
        for col in ("dataset", "val regret", "test AUROC", "test FPR@95", "ID acc", "seeds"):
            table.add_column(col, justify="left" if col == "dataset" else "right")
        for _, r in report.chosen.iterrows():
            table.add_row(r["benchmark"], f"{r['regret']:.2f}", f"{r['test_auroc']:.1f}±{r['test_auroc_std']:.1f}",
                          f"{r['test_fpr95']:.1f}±{r['test_fpr95_std']:.1f}", f"{r['test_id_accuracy']:.1f}", str(r["seeds"]))
        console.print(table)
        wins = ", ".join(f"{w:.0%}" + (" (pick)" if s == report.pick.robust else "") for s, w in report.wins.head(3).items())
        console.print(f"bootstrap over seeds, top wins: {wins}")
    console.print(f"report: {out / 'report.html'}  picks: {out / 'picks.csv'}  json: {out / 'summary.json'}")
    return 0


def print_summary(console: Console, out: Path, *, as_json: bool = False) -> int:
    from ascood.sweep.spec import SweepFileError, load_sweep
    from ascood.sweep.summary import summarize, summary_json, summary_table

    spec_copy = out / "sweep.yaml"
    if not spec_copy.is_file():
        fail(PROG, f"{out}: not a sweep output directory (no sweep.yaml)")
    try:
        spec, _ = load_sweep(spec_copy)
    except SweepFileError as exc:
        fail(PROG, str(exc))
    summaries = summarize(str(out / "results"), spec.objective, order=[d.benchmark for d in spec.datasets])
    if as_json:
        print(summary_json(summaries))
    else:
        console.print(summary_table(summaries, spec.objective, spec.name))
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    console = Console()
    if argv[:1] == ["report"]:
        return print_report(console, _report_parser().parse_args(argv[1:]))
    if argv[:1] == ["summary"]:
        args = _summary_parser().parse_args(argv[1:])
        return print_summary(console, args.out, as_json=args.json)
    args = _run_parser().parse_args(argv)

    from ascood.config import ConfigError
    from ascood.data.registry import DatasetError, UnknownBenchmarkError
    from ascood.sweep.engine import SweepRun, SweepSetupError, run_sweep
    from ascood.sweep.progress import SweepProgress
    from ascood.sweep.spec import SweepFileError, load_sweep

    try:
        spec, _ = load_sweep(args.file)
    except (SweepFileError, UnknownBenchmarkError) as exc:
        fail(PROG, str(exc))
    if args.data_root:
        spec = spec.model_copy(update={"data_root": args.data_root})
    run = SweepRun(spec, Path(args.file).read_text(), resume=args.resume, fresh=args.fresh, address=args.address)
    label = f"val/{spec.objective.name} ({spec.objective.scorer})"
    live = console.is_terminal and not args.no_progress
    console.print(f"[bold]{PROG}[/bold] {spec.name}: {len(spec.datasets)} datasets -> {spec.output}")
    try:
        with SweepProgress(console, live=live, objective_label=label) as progress:
            paths = run_sweep(run, progress)
    except (SweepSetupError, DatasetError, ConfigError) as exc:
        fail(PROG, f"{args.file}: {exc}")
    except KeyboardInterrupt:
        console.print(f"interrupted; continue with: {PROG} {args.file} --resume")
        return 130
    return print_summary(console, paths.out)


if __name__ == "__main__":
    raise SystemExit(main())

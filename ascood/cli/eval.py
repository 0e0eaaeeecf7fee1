"""`ascood-eval`: evaluate trained runs with any post-hoc scorers, searched on validation data.

    ascood-eval RUN_DIR… [--benchmark NAME] [--scorers a,b,…|all] [--no-search] [--out FILE] [--data-root DIR]

Progress over the runs (and any image decoding) goes to stderr: a bar on a terminal, a line each
tenth of the way otherwise; the tables to stdout.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console
from rich.table import Table

if TYPE_CHECKING:
    import pandas as pd

from ascood.cli.common import OneLineParser, fail

PROG = "ascood-eval"


def build_parser() -> OneLineParser:
    p = OneLineParser(prog=PROG, description="Evaluate trained runs (several seeds: mean ± std) with post-hoc scorers.")
    p.add_argument("runs", nargs="+", type=Path, help="run directories (each holds checkpoint.pt)")
    p.add_argument("--benchmark", help="benchmark to evaluate on (default: each run's own)")
    p.add_argument("--scorers", default="all", help="comma-separated scorer names, or 'all' (default)")
    p.add_argument("--no-search", action="store_true", help="use each scorer's fixed parameters (no validation search)")
    p.add_argument("--no-cache", action="store_true", help="do not read or write the runs' cached features")
    p.add_argument("--out", type=Path, help="Parquet file for all rows (default: eval.parquet in each run directory)")
    p.add_argument("--data-root", type=Path, help="where real datasets live (default: $ASCOOD_DATA, else ~/data)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar or progress lines")
    return p


def metric_table(df: pd.DataFrame, metric: str, title: str) -> Table:
    """Rows: scorers; columns: OOD sets, then group means; cells mean ± population std over runs."""
    per_run = df.pivot_table(index=["scorer", "run_dir"], columns="ood_set", values=metric, aggfunc="first")
    per_run = per_run[list(dict.fromkeys(df["ood_set"]))]
    groups = df.drop_duplicates("ood_set").set_index("ood_set")["ood_group"]
    for g in dict.fromkeys(groups):
        per_run[f"{g} mean"] = per_run[[s for s in groups.index if groups[s] == g]].mean(axis=1)
    mean = per_run.groupby(level="scorer", sort=False).mean()
    std = per_run.groupby(level="scorer", sort=False).std(ddof=0)
    table = Table(title=title)
    table.add_column("scorer")
    for col in mean.columns:
        table.add_column(str(col), justify="right")
    order = list(dict.fromkeys(df["scorer"]))
    n = df["run_dir"].nunique()
    for scorer in order:
        cells = [f"{mean.loc[scorer, c]:.1f}" + (f"±{std.loc[scorer, c]:.1f}" if n > 1 else "") for c in mean.columns]
        table.add_row(scorer, *cells)
    return table


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ascood.choices import printable
    from ascood.run_dir import RunDirError, checkpoint_of
    from ascood.scorer_names import SCORER_NAMES
    from ascood.storage import unusable_dir

    names = list(SCORER_NAMES) if args.scorers == "all" else [s.strip() for s in args.scorers.split(",")]
    unknown = [printable(s) for s in names if s not in SCORER_NAMES]
    if unknown:
        fail(PROG, f"--scorers: unknown {', '.join(unknown)}; expected names from {', '.join(SCORER_NAMES)}")
    if args.out is not None:
        reason = "is a directory; expected a Parquet file name" if args.out.is_dir() else unusable_dir(args.out.parent)
        if reason:
            fail(PROG, f"--out {args.out}: {reason}")
    for run in args.runs:  # before torch is imported: a directory that is not a run is refused at once
        try:
            checkpoint_of(run)
        except RunDirError as exc:
            fail(PROG, str(exc))

    import pandas as pd

    from ascood.data import DatasetError, UnknownBenchmarkError
    from ascood.data.env import skip_corrupt_from_env
    from ascood.posthoc import evaluate_run
    from ascood.progress_report import progress_for, reporting
    from ascood.results import write_results
    console = Console()
    all_rows = []
    with reporting(progress_for(quiet=args.no_progress)) as progress, \
            progress.task("evaluate", len(args.runs), "runs") as done:
        for run in args.runs:
            console.print(f"[bold]{PROG}[/bold] {run}: {len(names)} scorers, "
                          f"search {'off' if args.no_search else 'on validation'}")
            try:
                rows = evaluate_run(run, benchmark=args.benchmark, scorer_names=names, search=not args.no_search,
                                    use_cache=not args.no_cache, data_root=args.data_root,
                                    skip_corrupt=skip_corrupt_from_env())
            except (RunDirError, UnknownBenchmarkError, DatasetError) as exc:
                fail(PROG, str(exc))
            if args.out is None:
                write_results(run / "eval.parquet", rows)
            all_rows += [{**r, "run_dir": str(run)} for r in rows]
            done.advance()
    if args.out is not None:
        write_results(args.out, [{k: v for k, v in r.items() if k != "run_dir"} for r in all_rows])
    df = pd.DataFrame(all_rows)
    test = df[df["split"] == "test"]
    first = test.iloc[0]
    n = df["run_dir"].nunique()
    label = f"{first['benchmark']} ({first['setting']}) · test · {n} run{'s' if n > 1 else ''}"
    console.print(metric_table(test, "auroc", f"AUROC ↑ · {label}"))
    console.print(metric_table(test, "fpr95", f"FPR@95 ↓ ({first['fpr_convention']}) · {label}"))
    acc = test.drop_duplicates("run_dir")["id_accuracy"]
    console.print(f"ID accuracy {acc.mean():.2f}" + (f" ± {acc.std(ddof=0):.2f}" if n > 1 else "") + "%")
    if bool(first["embedded"]):
        console.print("embedded benchmark: a demo and test bed, not a result on the paper's benchmarks")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""`ascood-sweep`: Ray Tune × Optuna sweeps of α, p_inv, λ, σ per dataset; results in Parquet.

    ascood-sweep FILE [--resume | --fresh] [--address ADDR] [--output LOC]
    ascood-sweep summary OUT [--json]
    ascood-sweep report OUT… [--out DIR] [--bootstrap N] [--json]
    ascood-sweep submit FILE --address http://HEAD:8265 [--follow] [--resume | --fresh] [--output LOC]
    ascood-sweep status|logs|stop JOB --address http://HEAD:8265 [--follow]
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from rich.console import Console
from rich.markup import escape

from ascood.cli.common import OneLineParser, fail

PROG = "ascood-sweep"
JOB_COMMANDS = ("submit", "status", "logs", "stop")


def _run_parser() -> argparse.ArgumentParser:
    p = OneLineParser(
        prog=PROG,
        description="Run (or resume) a sweep described by a YAML file.",
        epilog=(f"{PROG} summary OUT [--json]: a sweep's summary from its Parquet results. "
                f"{PROG} report OUT… [--out DIR] [--json]: the cross-setting analysis and HTML report. "
                f"{PROG} submit FILE --address http://HEAD:8265 [--follow]: the sweep as a Ray Job; "
                f"{PROG} status|logs|stop JOB: that job (docs/cluster.md)."),
    )
    p.add_argument("file", help="sweep file (YAML)")
    group = p.add_mutually_exclusive_group()
    group.add_argument("--resume", action="store_true", help="continue the sweep in its output directory")
    group.add_argument("--fresh", action="store_true", help="delete the output directory and start anew")
    p.add_argument("--address", help="Ray cluster address: HEAD:6379, or auto on a cluster node (default: a "
                   "local Ray on this machine); the output must then be shared or object storage")
    p.add_argument("--data-root", help="where real datasets live (overrides the sweep file's data_root)")
    p.add_argument("--output", help="output directory or s3:// gs:// URI (overrides the sweep file's output)")
    p.add_argument("--no-progress", action="store_true", help="print a line per trial instead of a live table")
    return p


def _job_parser(command: str) -> argparse.ArgumentParser:
    p = OneLineParser(prog=f"{PROG} {command}", description={
        "submit": "Submit a sweep to a Ray cluster as a Ray Job; prints the job id.",
        "status": "A submitted sweep's status.", "logs": "A submitted sweep's log.", "stop": "Stop a submitted sweep.",
    }[command])
    if command == "submit":
        p.add_argument("file", type=Path, help="sweep file (YAML)")
        group = p.add_mutually_exclusive_group()
        group.add_argument("--resume", action="store_true", help="continue the sweep in its output directory")
        group.add_argument("--fresh", action="store_true", help="delete the output directory and start anew")
        p.add_argument("--data-root", help="where real datasets live on the cluster")
        p.add_argument("--output", help="shared path or s3:// gs:// URI (overrides the sweep file's output)")
    else:
        p.add_argument("job", help="job id printed by submit (raysubmit_…)")
    p.add_argument("--address", help="the cluster's Jobs API, http://HEAD:8265 "
                   "(default: $RAY_API_SERVER_ADDRESS, then $RAY_ADDRESS)")
    if command in ("submit", "logs"):
        p.add_argument("--follow", action="store_true", help="stream the log until the job ends")
    return p


def _follow(client, job_id: str) -> int:
    from ascood.cluster import jobs

    for chunk in jobs.follow(client, job_id):
        print(chunk, end="", flush=True)
    info = jobs.status(client, job_id)
    state = str(getattr(info.status, "value", info.status))
    print(f"job {job_id}: {state}" + (f" ({_first(info.message)})" if state != "SUCCEEDED" and info.message else ""))
    return 0 if state == "SUCCEEDED" else 1


def _first(message: str) -> str:
    return (message.strip().splitlines() or [""])[0].rstrip(":, ")


def job_command(command: str, argv: list[str]) -> int:
    """submit / status / logs / stop through the cluster's Jobs API; errors are one line, exit 2."""
    import logging

    from ascood.cluster import jobs

    args = _job_parser(command).parse_args(argv)
    prog = f"{PROG} {command}"
    logging.getLogger("ray").setLevel(logging.WARNING)  # no INFO lines about packaging the upload
    try:
        address = jobs.resolve_address(args.address)
        if command == "submit":
            sub = _submission(prog, args)
            client = jobs.connect(address)
            job_id = jobs.submit(client, sub)
            print(job_id, flush=True)
            return _follow(client, job_id) if args.follow else 0
        client = jobs.connect(address)
        if command == "status":
            info = jobs.status(client, args.job)
            state = str(getattr(info.status, "value", info.status))
            print(f"{args.job}: {state}" + (f" ({_first(info.message)})" if info.message else ""))
            return 0
        if command == "logs":
            if args.follow:
                return _follow(client, args.job)
            print(jobs.logs(client, args.job), end="")
            return 0
        print(f"{args.job}: " + ("stop requested" if jobs.stop(client, args.job) else "already ended"))
        return 0
    except jobs.JobError as exc:
        fail(prog, str(exc))
    except KeyboardInterrupt:
        print(f"stopped following; the job goes on (stop it with: {PROG} stop JOB --address …)")
        return 130


def _submission(prog: str, args: argparse.Namespace):
    """Check the sweep file here, before anything is uploaded; a job's output must be shared."""
    import ascood
    from ascood import storage
    from ascood.cluster.jobs import Submission
    from ascood.data import UnknownBenchmarkError
    from ascood.sweep.spec import SweepFileError, load_sweep

    try:
        spec, _ = load_sweep(args.file)
    except (SweepFileError, UnknownBenchmarkError) as exc:
        fail(prog, str(exc))
    output = args.output or spec.output
    if not storage.is_uri(output) and not Path(output).is_absolute():
        fail(prog, f"{args.file}: output {output!r} is relative, i.e. inside the job's temporary working "
                   "directory on one node; give --output an absolute shared path or an s3:// gs:// URI")
    project = Path(ascood.__file__).resolve().parent.parent
    if not (project / "pyproject.toml").is_file():
        fail(prog, f"{project}: not a checkout of the project (no pyproject.toml); submit from a clone")
    return Submission(sweep_file=args.file.resolve(), project=project, resume=args.resume, fresh=args.fresh,
                      data_root=args.data_root, output=args.output)


def _summary_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog=f"{PROG} summary", description="Summarize a sweep from its Parquet results.")
    p.add_argument("out", help="the sweep's output directory (or its s3:// gs:// URI)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return p


def _report_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog=f"{PROG} report", description="Cross-setting analysis of one or more sweeps.")
    p.add_argument("outs", nargs="+", type=Path, help="sweep output directories (e.g. spurious, fine-grained, conventional)")
    p.add_argument("--out", type=Path, help="report directory (default: OUT/report of the first sweep)")
    p.add_argument("--bootstrap", type=int, default=9999, help="bootstrap resamples over seeds (default 9999)")
    p.add_argument("--json", action="store_true", help="print the JSON summary instead of tables")
    return p


def print_report(console: Console, args: argparse.Namespace) -> int:
    from rich.table import Table

    from analysis.load import AnalysisInputError
    from analysis.report import build_report, ci_text, summary_json, verdict_sentences

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
    for sentence in verdict_sentences(report):
        console.print(escape(sentence))  # plain text: dataset names like cmnist[classes=2] are not markup
    if report.verdict is not None:
        v = report.verdict
        table = Table(title="candidates (validation; 95% bootstrap intervals over paired seeds)")
        gain = v.criterion == "gain"
        for col in ("label", "worst-case gain" if gain else "worst regret", "tied with pick", "candidate of"):
            table.add_column(col, justify="right" if col != "candidate of" else "left")
        legend = report.legend.set_index("label")
        for _, r in v.table.iterrows():
            label = report.labels[r["setting"]]
            key = "worst_gain" if gain else "worst_regret"
            tied = "pick" if r["setting"] == v.pick else ("yes" if r["tied"] else "no")
            table.add_row(escape(label), ci_text(r[key], r[f"{key}_low"], r[f"{key}_high"]), tied,
                          escape(legend.loc[label, "candidate of"]))
        console.print(table)
    console.print(f"report: {out / 'report.html'}  picks: {out / 'picks.csv'}  json: {out / 'summary.json'}")
    return 0


def print_summary(console: Console, out: Path | str, *, as_json: bool = False) -> int:
    import tempfile

    from ascood import storage
    from ascood.storage import read_text
    from ascood.sweep.spec import SweepFileError, load_sweep
    from ascood.sweep.summary import comparison_table, load_frame, summarize_frame, summary_json, summary_table

    text = read_text(storage.join(out, "sweep.yaml"))  # a local directory or an s3:// gs:// output
    if text is None:
        fail(PROG, f"{out}: not a sweep output directory (no sweep.yaml)")
    with tempfile.TemporaryDirectory() as tmp:
        spec_copy = Path(tmp) / "sweep.yaml"
        spec_copy.write_text(text)
        try:
            spec, _ = load_sweep(spec_copy)
        except SweepFileError as exc:
            fail(PROG, str(exc).replace(str(spec_copy), storage.join(out, "sweep.yaml")))
    df = load_frame(storage.join(out, "results"))
    summaries = summarize_frame(df, spec.objective, order=[d.benchmark for d in spec.datasets])
    if as_json:
        print(summary_json(summaries))
    else:
        console.print(summary_table(summaries, spec.objective, spec.name))
        compared = comparison_table(df, spec.objective)
        if compared is not None:
            console.print(compared)
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    console = Console()
    if argv[:1] == ["report"]:
        return print_report(console, _report_parser().parse_args(argv[1:]))
    if argv[:1] and argv[0] in JOB_COMMANDS:
        return job_command(argv[0], argv[1:])
    if argv[:1] == ["summary"]:
        args = _summary_parser().parse_args(argv[1:])
        return print_summary(console, args.out, as_json=args.json)
    args = _run_parser().parse_args(argv)

    from ascood.data import UnknownBenchmarkError
    from ascood.sweep.spec import SweepFileError, load_sweep

    try:  # before Ray, torch and the engine are imported: a bad file is refused at once
        spec, _ = load_sweep(args.file)
    except (SweepFileError, UnknownBenchmarkError) as exc:
        fail(PROG, str(exc))

    from ascood.config import ConfigError
    from ascood.data import DatasetError
    from ascood.data.env import skip_corrupt_from_env
    from ascood.sweep.engine import SweepRun, SweepSetupError, run_sweep
    from ascood.sweep.progress import SweepProgress
    from ascood.yamlfile import read_text

    data_root = args.data_root or spec.data_root or os.environ.get("ASCOOD_DATA")
    if data_root:
        spec = spec.model_copy(update={"data_root": str(data_root)})
    if args.output:
        spec = spec.model_copy(update={"output": args.output})
    run = SweepRun(spec, read_text(args.file), resume=args.resume, fresh=args.fresh, address=args.address,
                   skip_corrupt=skip_corrupt_from_env())
    label = f"val/{spec.objective.name} ({spec.objective.scorer})"
    live = console.is_terminal and not args.no_progress
    console.print(f"[bold]{PROG}[/bold] {escape(spec.name)}: {len(spec.datasets)} datasets -> {escape(str(spec.output))}",
                  highlight=False)
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

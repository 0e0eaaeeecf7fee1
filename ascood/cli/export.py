"""`ascood-export`: a trained run → a deployable bundle (weights, fitted scorer, calibrated threshold,
model card, optionally ONNX).

    ascood-export RUN_DIR --out BUNDLE [--scorer NAME] [--param k=v]… [--no-search] [--tpr 0.95] [--onnx]
    ascood-export --sweep OUT --dataset NAME --out BUNDLE [--report DIR] …
"""

from __future__ import annotations

from pathlib import Path

import yaml
from rich.console import Console
from rich.table import Table

from ascood.cli.common import OneLineParser, UsageError, fail

PROG = "ascood-export"


def build_parser() -> OneLineParser:
    p = OneLineParser(prog=PROG, description="Export a trained run as a calibrated OOD detector bundle.")
    p.add_argument("run", nargs="?", type=Path, help="run directory (holds checkpoint.pt); or use --sweep")
    p.add_argument("--sweep", type=Path, help="a sweep output: export the report's pick (else the best final run)")
    p.add_argument("--dataset", help="with --sweep: the dataset (benchmark name) to export (default: the only one)")
    p.add_argument("--report", type=Path, help="with --sweep: the report directory (default: OUT/report)")
    p.add_argument("--out", type=Path, required=True, help="bundle directory to create")
    p.add_argument("--scorer", help="post-hoc scorer (default: the sweep objective's, else energy)")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="a fixed scorer parameter (repeatable; YAML value)")
    p.add_argument("--no-search", action="store_true", help="do not search the scorer's grid on validation")
    p.add_argument("--tpr", type=float, default=0.95, help="target ID true-positive rate on validation (0.95)")
    p.add_argument("--onnx", action="store_true", help="also write detector.onnx (network + scorer, one graph)")
    p.add_argument("--class-names", help="a file with one class name per line, or comma-separated names")
    p.add_argument("--device", help="cpu or cuda (default: CUDA when visible)")
    p.add_argument("--data-root", type=Path, help="where real datasets live (default: $ASCOOD_DATA, else ~/data)")
    p.add_argument("--overwrite", action="store_true", help="replace an existing bundle at --out")
    return p


def parse_params(items: list[str]) -> dict:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UsageError(f"--param {item!r}: expected KEY=VALUE")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise UsageError(f"--param {key.strip()}: {value!r} is not a YAML value") from None
    return out


def class_names(arg: str | None) -> tuple[str, ...] | None:
    if arg is None:
        return None
    path = Path(arg)
    if path.is_file():
        try:
            names = [n.strip() for n in path.read_text(encoding="utf-8").splitlines() if n.strip()]
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(f"--class-names {path}: not a readable UTF-8 text file ({type(exc).__name__})") from None
    else:
        names = [n.strip() for n in arg.split(",") if n.strip()]
    if not names:
        raise UsageError(f"--class-names {arg!r}: no names")
    return tuple(names)


def summary_table(manifest) -> Table:
    t = Table(title=f"test operating point · threshold {manifest.threshold.value:.6g} · ID TPR {manifest.test.id_tpr:.4f}")
    for col in ("OOD set", "group", "images", "FPR at threshold", "AUROC %", "FPR@95 %"):
        t.add_column(col, justify="left" if col in ("OOD set", "group") else "right")
    for o in manifest.test.ood:
        t.add_row(o.ood_set, o.ood_group, str(o.n), f"{o.fpr_at_threshold:.4f}", f"{o.auroc:.2f}", f"{o.fpr95:.2f}")
    return t


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ascood.data import DatasetError, UnknownBenchmarkError
    from ascood.data.env import skip_corrupt_from_env
    from ascood.export.build import ExportError, ExportOptions, export_run
    from ascood.export.bundle import BundleError
    from ascood.export.pick import PickError, choose_run
    from ascood.export.state import StateError
    from ascood.export.threshold import ThresholdError, check_tpr
    from ascood.posthoc import RunDirError

    if (args.run is None) == (args.sweep is None):
        fail(PROG, "expected a run directory or --sweep OUT (exactly one)")
    if args.run is not None and (args.dataset or args.report):
        fail(PROG, "--dataset and --report go with --sweep")
    try:
        check_tpr(args.tpr)
        params = parse_params(args.param)
        names = class_names(args.class_names)
        if args.out.exists() and not args.overwrite:
            raise BundleError(f"--out {args.out}: already exists; choose another path or pass --overwrite")
        run, chosen_by, scorer = args.run, "the run directory given", args.scorer
        if args.sweep is not None:
            dataset = args.dataset or _only_dataset(args.sweep)
            choice = choose_run(args.sweep, dataset, report=args.report)
            run, chosen_by, scorer = choice.run_dir, choice.chosen_by, scorer or choice.objective.scorer
        options = ExportOptions(
            scorer=scorer or "energy", params=params, search=not args.no_search, tpr=args.tpr, device=args.device,
            data_root=args.data_root, skip_corrupt=skip_corrupt_from_env(), class_names=names, onnx=args.onnx,
            chosen_by=chosen_by, sweep=None if args.sweep is None else str(args.sweep.resolve()),
        )
        built = export_run(run, args.out, options, overwrite=args.overwrite)
    except (UsageError, RunDirError, UnknownBenchmarkError, DatasetError, ExportError, BundleError, PickError,
            StateError, ThresholdError) as exc:
        fail(PROG, str(exc))
    m = built.manifest
    console = Console()
    console.print(f"[bold]{PROG}[/bold] {run} → {args.out} (chosen as {chosen_by})")
    console.print(f"scorer {m.scorer.name} {m.scorer.params} ({m.scorer.selection}); ID accuracy {m.test.id_accuracy:.2f}%")
    console.print(f"threshold {m.threshold.value:.6g}: ID TPR {m.threshold.val_id_tpr:.4f} on validation "
                  f"(target {m.threshold.target_tpr}, {m.threshold.n_val_id} images), {m.test.id_tpr:.4f} on test")
    console.print(summary_table(m))
    files = ", ".join(m.files) + (", manifest.json" if m.files else "")
    console.print(f"bundle: {args.out} ({files})")
    if m.source.embedded:
        console.print("embedded benchmark: a demo and test bed, not a result on the paper's benchmarks")
    return 0


def _only_dataset(sweep: Path) -> str:
    from ascood.export.pick import PickError
    from ascood.sweep.spec import SweepFileError, load_sweep

    try:
        spec, _ = load_sweep(sweep / "sweep.yaml")
    except SweepFileError as exc:
        raise PickError(f"{sweep}: not a sweep output ({exc})") from None
    datasets = [d.benchmark for d in spec.datasets]
    if len(datasets) != 1:
        raise PickError(f"--dataset: {sweep} has {len(datasets)} datasets ({', '.join(datasets)}); name one")
    return datasets[0]


if __name__ == "__main__":
    raise SystemExit(main())

"""`ascood-score`: score new images with an exported bundle.

    ascood-score BUNDLE PATH… [--out FILE.csv|FILE.parquet] [--batch-size N] [--device D]

PATH: image files, folders (searched recursively) or image lists (.txt, one path a line, relative to
the list). Prints a table (file, predicted class, score, OOD yes/no) or writes it to --out. An
unreadable image is named and skipped, and counted at the end; it does not stop the run.
"""

from __future__ import annotations

import sys
from pathlib import Path

from rich.console import Console
from rich.table import Table

from ascood.cli.common import OneLineParser, fail

PROG = "ascood-score"
OUT_SUFFIXES = (".csv", ".parquet")


def build_parser() -> OneLineParser:
    p = OneLineParser(prog=PROG, description="Score images with an ascood-export bundle (OOD when score < threshold).")
    p.add_argument("bundle", type=Path, help="bundle directory (ascood-export --out)")
    p.add_argument("paths", nargs="+", type=Path, help="images, folders or image lists (.txt)")
    p.add_argument("--out", type=Path, help="write the rows to a .csv or .parquet file instead of printing them")
    p.add_argument("--batch-size", type=int, default=256, help="images per forward pass (256)")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: CUDA when visible)")
    return p


def result_table(df, threshold: float) -> Table:
    t = Table(title=f"OOD when score < {threshold:.6g}")
    for col, justify in (("file", "left"), ("class", "left"), ("score", "right"), ("OOD", "center")):
        t.add_column(col, justify=justify)
    for r in df.to_dict("records"):
        t.add_row(r["file"], f"{r['class_name']} ({r['class']})", f"{r['score']:.6g}", "yes" if r["ood"] else "no")
    return t


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from ascood.detector import Detector
    from ascood.export.bundle import BundleError
    from ascood.export.images import ImageInputError
    from ascood.storage import unusable_dir

    if args.batch_size < 1:
        fail(PROG, f"--batch-size: expected a positive number, got {args.batch_size}")
    if args.out is not None:
        if args.out.suffix.lower() not in OUT_SUFFIXES:
            fail(PROG, f"--out {args.out}: expected a .csv or .parquet file name")
        reason = "is a directory" if args.out.is_dir() else unusable_dir(args.out.parent)
        if reason:
            fail(PROG, f"--out {args.out}: {reason}")
    try:
        detector = Detector.load(args.bundle, device=args.device)
    except (BundleError, ValueError) as exc:
        fail(PROG, str(exc))
    try:
        result = detector.score_files(args.paths, batch_size=args.batch_size)
    except ImageInputError as exc:
        fail(PROG, str(exc))
    for path, reason in result.skipped:
        print(f"{PROG}: warning: skipped {path}: unreadable image ({reason})", file=sys.stderr)
    df = result.table
    console = Console()
    if args.out is None:
        console.print(result_table(df, detector.threshold))
    else:
        tmp = args.out.with_name(f".{args.out.name}.tmp")
        if args.out.suffix.lower() == ".csv":
            df.to_csv(tmp, index=False)
        else:
            df.to_parquet(tmp, index=False)
        tmp.replace(args.out)
    n_ood = int(df["ood"].sum())
    console.print(f"{len(df)} image(s) scored: {n_ood} OOD, {len(df) - n_ood} in-distribution"
                  + (f"; {len(result.skipped)} unreadable image(s) skipped" if result.skipped else "")
                  + (f" → {args.out}" if args.out else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

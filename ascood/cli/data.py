"""`ascood-data check [ROOT] [BENCHMARK…]`: what of the paper's benchmarks is under a data root.

Exit codes: 0 every requested benchmark complete, 1 some incomplete, 2 bad input. Decoding
progress goes to stderr (a bar on a terminal, a line each tenth otherwise); the tables to stdout.
"""

from __future__ import annotations

import sys

from rich.console import Console
from rich.table import Table

from ascood.choices import expected_one_of
from ascood.cli.common import OneLineParser, fail

PROG = "ascood-data"


def _parser() -> OneLineParser:
    p = OneLineParser(prog=f"{PROG} check", description="Check the real benchmarks' data under a root.")
    p.add_argument("items", nargs="*", metavar="[ROOT] [BENCHMARK]",
                   help="data root (default: $ASCOOD_DATA, else ~/data), then benchmarks (default: all seven)")
    p.add_argument("--no-decode", action="store_true", help="only look for files; do not decode (and cache) the images")
    p.add_argument("--no-progress", action="store_true", help="no progress bar or progress lines")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] in (["-h"], ["--help"]):
        print(f"usage: {PROG} check [ROOT] [BENCHMARK…] [--no-decode] [--no-progress]\n\n{__doc__.splitlines()[0]}\n"
              f"{PROG} check --help: the command's options")
        return 0
    if argv[:1] != ["check"]:
        fail(PROG, "expected a command: check [ROOT] [BENCHMARK…]")
    args = _parser().parse_args(argv[1:])

    from ascood.data.check import check_benchmark, real_benchmarks
    from ascood.data.env import data_root
    from ascood.data.errors import DatasetError, UnknownBenchmarkError
    from ascood.data.registry import get_spec, parse_name
    from ascood.progress_report import progress_for, reporting

    items = list(args.items)
    known = set(real_benchmarks())
    root_arg = items.pop(0) if items and parse_name(items[0])[0] not in known else None
    root = data_root(root_arg)
    if root_arg is not None and not root.is_dir():
        fail(PROG, f"{root}: data root is not a directory")
    names = items or real_benchmarks()
    for n in names:
        try:
            spec = get_spec(n)
        except UnknownBenchmarkError as exc:
            fail(PROG, str(exc))
        if spec.embedded:
            fail(PROG, f"{n}: an embedded benchmark needs no data; {expected_one_of(sorted(known), n)}")

    console = Console()
    incomplete = []
    with reporting(progress_for(quiet=args.no_progress)) as progress:
        for name in names:
            try:
                report = check_benchmark(name, root, decode=not args.no_decode, progress=progress)
            except (UnknownBenchmarkError, DatasetError) as exc:
                fail(PROG, str(exc))
            status = "[green]complete[/green]" if report.complete else "[red]incomplete[/red]"
            table = Table(title=f"{name} · {report.layout or 'not found'} layout · {status}", title_justify="left")
            for col in ("part", "status", "images", "source", "problems"):
                table.add_column(col, justify="right" if col == "images" else "left", overflow="fold")
            for p in report.parts:
                colour = {"found": "green", "missing": "red", "problem": "yellow"}[p.status]
                table.add_row(p.name, f"[{colour}]{p.status}[/{colour}]", "" if p.images is None else str(p.images),
                              p.source, "; ".join(p.problems))
            for msg in report.problems:
                table.add_row("(benchmark)", "[red]problem[/red]", "", str(root), msg)
            console.print(table)
            if not report.complete:
                incomplete.append(name)
    if incomplete:
        console.print(f"[red]incomplete:[/red] {', '.join(incomplete)} under {root}")
        return 1
    console.print(f"all complete under {root}: {', '.join(names)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""What `ascood-data check` reports: each part of a real benchmark found or missing, its image
count, and its problems (missing files, unreadable images, bad labels, overlaps).

Decoding goes through the decoded-image cache, so a check also prepares the cache a sweep uses.
Progress (images checked, cached ones at once) goes to the given reporter, else to the installed one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ascood.data.decode import decode_files
from ascood.data.env import cache_dir
from ascood.data.real import definitions, geometry, inventory, specialize
from ascood.data.real.parts import Part
from ascood.data.registry import get_spec, parse_name
from ascood.progress_report import Reporter, Task, current


@dataclass
class PartReport:
    name: str
    source: str
    status: str  # "found", "missing", "problem"
    images: int | None
    problems: list[str] = field(default_factory=list)


@dataclass
class BenchmarkReport:
    name: str
    root: Path
    layout: str | None
    parts: list[PartReport]
    problems: list[str]

    @property
    def complete(self) -> bool:
        return self.layout is not None and not self.problems and all(p.status == "found" for p in self.parts)


def check_benchmark(name: str, root: Path, *, decode: bool = True, progress: Reporter | None = None) -> BenchmarkReport:
    """The inventory of one benchmark under `root`; with `decode`, every image is decoded (and
    cached) so unreadable files are found and counted."""
    get_spec(name)  # an unknown name or bad parameter fails here, before any I/O
    base, given = parse_name(name)
    defn, params = specialize(definitions()[base], given)
    inv = inventory(defn, root, params)
    decode_size, _ = geometry(defn, int(params["size"]))
    decodable = [decode and p.found and p.records.paths is not None for p in inv.parts]
    total = sum(len(p.records) for p, d in zip(inv.parts, decodable, strict=True) if d)
    with (progress or current()).task(f"check {name}", total, "images") as task:
        parts = [_part_report(p, decode_size, task if d else None) for p, d in zip(inv.parts, decodable, strict=True)]
    return BenchmarkReport(name, root, inv.layout, parts, list(inv.problems))


def _part_report(p: Part, decode_size: int, task: Task | None) -> PartReport:
    """`task`: decode the part's images, counting them on it."""
    if p.records is None:
        return PartReport(p.name, p.source, "missing", None, [p.problem or "not found"])
    problems = [p.problem] if p.problem else []
    if p.missing_files:
        problems.append(f"{len(p.missing_files)} image file(s) missing (e.g. {p.missing_files[0]})")
    n = len(p.records)
    if task is not None:
        start = task.completed
        decoded = decode_files(p.records.paths, decode_size, cache_dir() / "decoded", skip_corrupt=True,
                               progress=task.advance)
        task.update(start + n)
        if decoded.skipped:
            path, reason = decoded.skipped[0]
            problems.append(f"{len(decoded.skipped)} unreadable image(s) (e.g. {path}: {reason})")
        n = len(decoded.kept)
    return PartReport(p.name, p.source, "problem" if problems else "found", n, problems)


def real_benchmarks() -> list[str]:
    return list(definitions())

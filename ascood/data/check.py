"""What `ascood-data check` reports: each part of a real benchmark found or missing, its image
count, and its problems (missing files, unreadable images, bad labels, overlaps).

Decoding goes through the decoded-image cache, so a check also prepares the cache a sweep uses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from ascood.data.decode import decode_files
from ascood.data.env import cache_dir
from ascood.data.real import definitions, geometry, inventory, specialize
from ascood.data.registry import get_spec, parse_name


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


def check_benchmark(name: str, root: Path, *, decode: bool = True) -> BenchmarkReport:
    """The inventory of one benchmark under `root`; with `decode`, every image is decoded (and
    cached) so unreadable files are found and counted."""
    get_spec(name)  # an unknown name or bad parameter fails here, before any I/O
    base, given = parse_name(name)
    defn, params = specialize(definitions()[base], given)
    inv = inventory(defn, root, params)
    decode_size, _ = geometry(defn, int(params["size"]))
    parts = []
    for p in inv.parts:
        if p.records is None:
            parts.append(PartReport(p.name, p.source, "missing", None, [p.problem or "not found"]))
            continue
        problems = [p.problem] if p.problem else []
        if p.missing_files:
            more = f" (e.g. {p.missing_files[0]})"
            problems.append(f"{len(p.missing_files)} image file(s) missing{more}")
        n = len(p.records)
        if decode and not problems and p.records.paths is not None:
            decoded = decode_files(p.records.paths, decode_size, cache_dir() / "decoded", skip_corrupt=True)
            if decoded.skipped:
                path, reason = decoded.skipped[0]
                problems.append(f"{len(decoded.skipped)} unreadable image(s) (e.g. {path}: {reason})")
            n = len(decoded.kept)
        parts.append(PartReport(p.name, p.source, "problem" if problems else "found", n, problems))
    return BenchmarkReport(name, root, inv.layout, parts, list(inv.problems))


def real_benchmarks() -> list[str]:
    return list(definitions())

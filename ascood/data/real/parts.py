"""Where each part of a real benchmark (ID splits, OOD sets' val/test halves) is in the layout
present under the data root, and what is missing or wrong; never decodes, never raises for
missing or bad data, so `ascood-data check` can show all of it."""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from pathlib import Path

from ascood.data.errors import DataLayoutError
from ascood.data.real.native import NATIVE_READERS
from ascood.data.real.schema import BenchmarkDef
from ascood.data.sources import Records, read_imglist, read_ood_folder

ID_SPLITS = ("train", "val", "test")


@dataclass
class Part:
    """One split of the ID data or one half of an OOD set, as found (or not) on disk."""

    name: str  # "id/train", "ood/ninco/test", …
    source: str  # the file or folder it came from (or was looked for at)
    records: Records | None = None
    missing_files: list[str] = field(default_factory=list)
    problem: str | None = None

    @property
    def found(self) -> bool:
        return self.records is not None and self.problem is None and not self.missing_files


@dataclass
class Inventory:
    name: str
    layout: str | None  # "openood", "native", or None when nothing was found
    root: Path
    parts: list[Part]
    problems: list[str] = field(default_factory=list)

    @property
    def complete(self) -> bool:
        return self.layout is not None and not self.problems and all(p.found for p in self.parts)

    def first_problem(self) -> str:
        for msg in self.problems:
            return msg
        for p in self.parts:
            if p.problem:
                return f"{p.name}: {p.problem}"
            if p.records is None:
                return f"{p.name}: not found at {p.source}"
            if p.missing_files:
                more = f" (and {len(p.missing_files) - 1} more)" if len(p.missing_files) > 1 else ""
                return f"{p.name}: image file missing: {p.missing_files[0]}{more}"
        return ""


def inventory(defn: BenchmarkDef, root: Path, params: dict) -> Inventory:
    """Find every part of the benchmark under `root`; never raises for missing or bad data."""
    first_list = root / "benchmark_imglist" / defn.openood.lists["train"]
    native_dir = root / defn.native.dir
    if first_list.exists():
        inv = Inventory(defn.name, "openood", root, [])
        _openood_parts(defn, root, params, inv)
    elif native_dir.exists():
        inv = Inventory(defn.name, "native", root, [])
        _native_parts(defn, root, params, inv)
    else:
        return Inventory(defn.name, None, root, [], [
            f"dataset {defn.name} not found at {root}: looked for {first_list} (OpenOOD image lists) "
            f"and {native_dir} (its own layout); set data_root in the sweep file, --data-root or ASCOOD_DATA"
        ])
    for part in inv.parts:
        if part.records is not None and part.records.paths is not None:
            part.missing_files = [p for p in part.records.paths if not os.path.isfile(p)]
    _check_labels(defn, inv)
    _check_disjoint(inv)
    return inv


def _images_base(root: Path, list_file: Path, bases: list[str]) -> Path:
    """The first candidate base under which the list's first entries exist (the authors' lists
    and OpenOOD's differ in whether the dataset folder is part of each line)."""
    try:
        with open(list_file) as f:
            first = [ln.split(" ", 1)[0] for ln in itertools.islice(f, 3) if ln.strip()]
    except OSError:
        first = []
    for base in bases:
        if first and all((root / base / f).is_file() for f in first):
            return root / base
    return root / bases[0]


def _from_list(name: str, root: Path, candidates: list[str], bases: list[str]) -> Part:
    files = [root / "benchmark_imglist" / c for c in candidates]
    file = next((f for f in files if f.exists()), None)
    if file is None:
        return Part(name, str(files[0]))
    try:
        return Part(name, str(file), read_imglist(file, _images_base(root, file, bases)))
    except DataLayoutError as exc:
        return Part(name, str(file), problem=str(exc))


def _openood_parts(defn: BenchmarkDef, root: Path, params: dict, inv: Inventory) -> None:
    changed = [k for k in ("split", "r") if k in defn.params and params.get(k) != defn.params[k]]
    if changed:
        inv.problems.append(f"{defn.name}: the OpenOOD image lists fix {changed[0]}; "
                            f"{changed[0]} applies to the dataset's own layout ({root / defn.native.dir})")
    for split in ID_SPLITS:
        inv.parts.append(_from_list(f"id/{split}", root, [defn.openood.lists[split]], defn.openood.images))
    for o in defn.ood:
        for half, candidates in (("test", o.openood.test), ("val", o.openood.val)):
            if candidates:
                lists = [c.replace("{id}", defn.name) for c in candidates]
                inv.parts.append(_from_list(f"ood/{o.name}/{half}", root, lists, o.openood.images))


def _native_parts(defn: BenchmarkDef, root: Path, params: dict, inv: Inventory) -> None:
    directory = root / defn.native.dir
    try:
        id_splits, derived = NATIVE_READERS[defn.native.reader](defn, root, directory, params)
    except DataLayoutError as exc:
        inv.problems.append(str(exc))
        return
    for split in ID_SPLITS:
        inv.parts.append(Part(f"id/{split}", str(directory), id_splits[split]))
    for o in defn.ood:
        if o.native is not None:
            halves = derived[o.native]
            if isinstance(halves, Path):  # read from another dataset's folder, which is missing
                inv.parts.append(Part(f"ood/{o.name}/test", str(halves)))
                continue
            for half, records in halves.items():
                inv.parts.append(Part(f"ood/{o.name}/{half}", str(directory), records))
            continue
        folder = root / "ood" / (o.folder or o.name)
        halves = {"val": folder / "val", "test": folder / "test"} if o.openood.val else {"test": folder}
        for half, path in halves.items():
            if not path.is_dir():
                inv.parts.append(Part(f"ood/{o.name}/{half}", str(path)))
                continue
            try:
                inv.parts.append(Part(f"ood/{o.name}/{half}", str(path), read_ood_folder(path)))
            except DataLayoutError as exc:
                inv.parts.append(Part(f"ood/{o.name}/{half}", str(path), problem=str(exc)))


def _check_labels(defn: BenchmarkDef, inv: Inventory) -> None:
    for p in inv.parts:
        if p.records is None or p.problem:
            continue
        labels = p.records.labels
        if p.name.startswith("id/"):
            bad = labels[(labels < 0) | (labels >= defn.classes)]
            if bad.size:
                p.problem = f"label {int(bad[0])} out of range 0…{defn.classes - 1} in {p.source}"
        elif (labels != -1).any():
            example = int(labels[labels != -1][0])
            p.problem = f"an OOD list holds ID labels (e.g. {example}); OOD images must be labelled -1 ({p.source})"
        if not p.problem and len(p.records) == 0:
            p.problem = f"no images in {p.source}"


def _check_disjoint(inv: Inventory) -> None:
    """No image may be both ID and OOD, or in a validation OOD set and a test OOD set."""
    def paths(prefix: str, suffix: str = "") -> dict[str, set[str]]:
        return {p.name: set(p.records.paths) for p in inv.parts if p.records is not None
                and p.records.paths is not None and p.name.startswith(prefix) and p.name.endswith(suffix)}

    ids, ood_val, ood_test = paths("id/"), paths("ood/", "/val"), paths("ood/", "/test")
    for group_a, group_b in ((ids, {**ood_val, **ood_test}), (ood_val, ood_test)):
        for a, sa in group_a.items():
            for b, sb in group_b.items():
                common = sa & sb
                if common:
                    inv.problems.append(f"{a} and {b} share {len(common)} image(s), e.g. {sorted(common)[0]}")

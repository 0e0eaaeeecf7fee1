"""The real benchmarks built: the inventory's parts decoded (through the decoded-image cache)
into a `BenchmarkData`, and each definition registered as a benchmark on import.

Decoding reports to the reporter the running command installed (`progress_report.current()`),
from the first part that is not cached yet: a build from the cache shows nothing.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np

from ascood.data.env import cache_dir
from ascood.data.errors import DatasetNotFound
from ascood.data.real.parts import Part, inventory
from ascood.data.real.schema import BenchmarkDef, definitions, geometry, normalization, specialize
from ascood.data.registry import register_benchmark
from ascood.data.sources import Records
from ascood.data.types import BenchmarkData, OODSet, Split
from ascood.progress_report import Task, current


def build(defn: BenchmarkDef, root: Path, params: dict, display_name: str, *, skip_corrupt: bool) -> BenchmarkData:
    import torch  # here: registering the benchmarks (every config check) needs no torch

    inv = inventory(defn, root, params)
    if not inv.complete:
        raise DatasetNotFound(f"{display_name}: {inv.first_problem()}" if inv.layout else inv.first_problem())
    decode_size, geo = geometry(defn, int(params["size"]))
    store = cache_dir() / "decoded"
    parts = _decoded_parts(inv.parts, decode_size, store, skip_corrupt, display_name)
    mean, std = normalization(defn)
    ood = []
    empty = Split(torch.zeros(0, 3, decode_size, decode_size, dtype=torch.uint8), torch.zeros(0, dtype=torch.int64))
    for o in defn.ood:
        ood.append(OODSet(o.name, o.group, parts.get(f"ood/{o.name}/val", empty), parts[f"ood/{o.name}/test"]))
    return BenchmarkData(
        name=display_name, setting=defn.setting, num_classes=defn.classes, mean=mean, std=std,
        train=parts["id/train"], val=parts["id/val"], test=parts["id/test"], ood=tuple(ood), geometry=geo,
    )


def _decoded_parts(parts: list[Part], size: int, store: Path, skip_corrupt: bool, label: str) -> dict[str, Split]:
    """Every part as a split; the progress task, over the images left, starts with the first
    part that is decoded rather than read from the cache."""
    left = sum(len(p.records) for p in parts if p.records.pixels is None)
    task: Task | None = None

    def decoded(n: int) -> None:
        nonlocal task
        if task is None:
            task = current().task(f"decode {label}", total=left, unit="images", transient=True)
        task.advance(n)

    out = {}
    try:
        for p in parts:
            out[p.name] = _decoded(p.records, size, store, skip_corrupt, decoded)
            if p.records.pixels is None:
                left -= len(p.records)
                if task is not None:
                    task.update(task.total - left)
    finally:
        if task is not None:
            task.close()
    return out


def _decoded(records: Records, size: int, store: Path, skip_corrupt: bool, progress: Callable[[int], None]) -> Split:
    import torch

    from ascood.data.decode import decode_files, resize_square

    if records.pixels is not None:
        images = torch.from_numpy(np.ascontiguousarray(records.pixels))
        if images.shape[-1] != size:
            images = resize_square(images, size)
        return Split(images, torch.from_numpy(records.labels))
    decoded = decode_files(records.paths, size, store, skip_corrupt=skip_corrupt, progress=progress)
    return Split(decoded.images, torch.from_numpy(records.labels[decoded.kept]))


def _builder(defn: BenchmarkDef) -> Callable[..., BenchmarkData]:
    def builder(seed: int, root: Path, skip_corrupt: bool, /, **given: str) -> BenchmarkData:
        specialized, params = specialize(defn, given)
        label = defn.name if not given else f"{defn.name}[{','.join(f'{k}={v}' for k, v in given.items())}]"
        return build(specialized, Path(root), params, label, skip_corrupt=skip_corrupt)

    return builder


def _register() -> None:
    for name, defn in definitions().items():
        register_benchmark(name, setting=defn.setting, description=defn.description, params=True,
                           check_params=lambda given, d=defn: specialize(d, given))(_builder(defn))


_register()

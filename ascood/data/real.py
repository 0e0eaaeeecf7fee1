"""The paper's seven ID benchmarks, built from the user's data as `benchmarks.yaml` defines them.

Two steps: `inventory` finds each part (ID splits, OOD sets' val/test halves) in the layout
present under the data root and lists what is missing or wrong, without decoding; `build`
decodes the parts (through the decoded-image cache) into a `BenchmarkData`. `ascood-data check`
shows the inventory; a sweep builds every benchmark before its first trial.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import yaml
from pydantic import BaseModel, ConfigDict, Field

from ascood.data.decode import decode_files
from ascood.data.registry import (
    BenchmarkData,
    DatasetNotFound,
    Geometry,
    OODSet,
    Split,
    UnknownBenchmarkError,
    cache_dir,
    register_benchmark,
)
from ascood.data.sources import (
    DataLayoutError,
    Records,
    read_aircraft,
    read_cars,
    read_celeba,
    read_cifar,
    read_class_folders,
    read_class_list,
    read_imglist,
    read_ood_folder,
    read_waterbirds,
)

DEFINITIONS = Path(__file__).with_name("benchmarks.yaml")
ID_SPLITS = ("train", "val", "test")
HOLDOUT_SEED = 0  # val splits carved from train (or CIFAR test) are part of the benchmark, not the run


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ImageDef(_Strict):
    decode: int
    size: int
    train: Literal["resized_crop", "random_crop"]
    padding: int = 0


class OpenOODSetDef(_Strict):
    val: list[str] = Field(default_factory=list)
    test: list[str]
    images: list[str]


class OODDef(_Strict):
    name: str
    group: Literal["spurious", "fine-grained", "near", "far"]
    openood: OpenOODSetDef
    folder: str | None = None  # ROOT/ood/<folder> in the native layout
    native: str | None = None  # or derived from the ID dataset's own files


class OpenOODIDDef(_Strict):
    lists: dict[Literal["train", "val", "test"], str]
    images: list[str]


class NativeDef(_Strict):
    reader: Literal["waterbirds", "celeba", "cars", "aircraft", "cifar10", "cifar100", "imagenet_subset"]
    dir: str
    class_list: str | None = None


class BenchmarkDef(_Strict):
    name: str
    setting: Literal["spurious", "fine-grained", "conventional"]
    description: str
    classes: int
    total_classes: int | None = None
    normalization: str
    image: ImageDef
    params: dict[str, float | int | None] = Field(default_factory=dict)
    openood: OpenOODIDDef
    native: NativeDef
    ood: list[OODDef]


@cache
def _raw() -> dict:
    return yaml.safe_load(DEFINITIONS.read_text())


@cache
def definitions() -> dict[str, BenchmarkDef]:
    out = {}
    for name, d in _raw()["benchmarks"].items():
        ood = [o for item in d["ood"] for o in (item if isinstance(item, list) else [item])]
        out[name] = BenchmarkDef(name=name, **{**d, "ood": ood})
    return out


def normalization(defn: BenchmarkDef) -> tuple[tuple[float, ...], tuple[float, ...]]:
    stats = _raw()["normalization"][defn.normalization]
    return tuple(stats["mean"]), tuple(stats["std"])


# ---------------------------------------------------------------- parameters


def specialize(defn: BenchmarkDef, given: dict[str, str]) -> tuple[BenchmarkDef, dict[str, float | int | None]]:
    """The definition and parameters a parameterised name stands for: `without=a+b` leaves OOD
    sets out (for data a user cannot get; the name then says the benchmark is not the paper's)."""
    given = dict(given)
    without = given.pop("without", None)
    params = resolve_params(defn, given)
    if without is None:
        return defn, params
    names = [n for n in without.split("+") if n]
    unknown = [n for n in names if n not in {o.name for o in defn.ood}]
    if unknown or not names:
        raise UnknownBenchmarkError(f"{defn.name}[without=…]: expected OOD set names joined by '+' from "
                                    f"{', '.join(o.name for o in defn.ood)}, got {without!r}")
    kept = [o for o in defn.ood if o.name not in names]
    if not any(o.openood.val for o in kept):
        raise UnknownBenchmarkError(f"{defn.name}[without={without}]: leaves no validation OOD set "
                                    f"(keep one of {', '.join(o.name for o in defn.ood if o.openood.val)})")
    return defn.model_copy(update={"ood": kept}), params


def resolve_params(defn: BenchmarkDef, given: dict[str, str]) -> dict[str, float | int | None]:
    """The benchmark's parameters (`split`, `r`, and `size` for every real benchmark) with the
    given overrides parsed and checked."""
    params: dict[str, float | int | None] = {**defn.params, "size": defn.image.size}
    for key, text in given.items():
        if key not in params:
            expected = ", ".join(sorted([*params, "without"]))
            raise UnknownBenchmarkError(f"{defn.name}: unknown parameter {key!r}; expected one of {expected}")
        try:
            value = float(text) if key == "r" else int(text)
        except ValueError:
            kind = "number" if key == "r" else "whole number"
            raise UnknownBenchmarkError(f"{defn.name}[{key}=…]: expected a {kind}, got {text!r}") from None
        if key == "r" and not 0.5 <= value < 1:
            raise UnknownBenchmarkError(f"{defn.name}[r=…]: expected 0.5 ≤ r < 1, got {value}")
        if key == "split" and value < 0:
            raise UnknownBenchmarkError(f"{defn.name}[split=…]: expected a split ≥ 0, got {value}")
        if key == "size" and not 8 <= value <= 1024:
            raise UnknownBenchmarkError(f"{defn.name}[size=…]: expected 8…1024 pixels, got {value}")
        params[key] = value
    return params


def geometry(defn: BenchmarkDef, size: int) -> tuple[int, Geometry]:
    """(decode size, geometry) for a model crop of `size` (the reference's pre_size:size ratio)."""
    decode = int(round(size * defn.image.decode / defn.image.size))
    padding = int(round(defn.image.padding * size / defn.image.size))
    train = "random" if defn.image.train == "random_crop" else "resized"
    return decode, Geometry(size=size, padding=padding, flip=True, train=train)


# ---------------------------------------------------------------- inventory


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


# ---------------------------------------------------------------- native layouts


def _holdout(labels: np.ndarray, fraction: float, cap: int | None = None) -> np.ndarray:
    """A fixed stratified subset (indices): `fraction` of each class, at most `cap` per class."""
    rng = np.random.RandomState(HOLDOUT_SEED)
    chosen = []
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        k = max(1, int(round(fraction * idx.size)))
        chosen.append(rng.choice(idx, min(k, cap or k, idx.size), replace=False))
    return np.sort(np.concatenate(chosen)) if chosen else np.zeros(0, dtype=np.int64)


def _rest(n: int, taken: np.ndarray) -> np.ndarray:
    mask = np.ones(n, dtype=bool)
    mask[taken] = False
    return np.flatnonzero(mask)


def mixoe_classes(total: int, n_id: int, split: int) -> tuple[np.ndarray, np.ndarray]:
    """MixOE's class split: `RandomState(split).choice(total, n_id, replace=False)` are ID (relabelled
    in sorted order), the rest held out as fine-grained OOD."""
    id_classes = np.sort(np.random.RandomState(split).choice(range(total), n_id, replace=False))
    return id_classes, np.setdiff1d(np.arange(total), id_classes)


def _fine_grained(defn: BenchmarkDef, pool: Records, test: Records, params: dict):
    id_classes, _ = mixoe_classes(defn.total_classes or defn.classes, defn.classes, int(params["split"]))
    if pool.labels.size and pool.labels.max() >= (defn.total_classes or 0):
        raise DataLayoutError(f"{defn.name}: label {int(pool.labels.max())} out of range for {defn.total_classes} classes")
    remap = np.full(defn.total_classes, -1, dtype=np.int64)
    remap[id_classes] = np.arange(defn.classes)
    val_idx = _holdout(pool.labels, 0.1)
    train, val = pool.take(_rest(len(pool), val_idx)), pool.take(val_idx)

    def id_part(r: Records) -> Records:
        keep = np.flatnonzero(remap[r.labels] >= 0)
        out = r.take(keep)
        out.labels = remap[out.labels]
        return out

    def ood_part(r: Records) -> Records:
        out = r.take(np.flatnonzero(remap[r.labels] < 0))
        out.labels = np.full(len(out), -1, dtype=np.int64)
        return out

    # The held-out classes' training images were never trained on: the fine-grained OOD val half.
    return ({"train": id_part(train), "val": id_part(val), "test": id_part(test)},
            {"held_out_classes": {"val": ood_part(pool), "test": ood_part(test)}})


def _read_cars(defn, root, directory, params):
    parts = read_cars(directory)
    return _fine_grained(defn, parts["train"], parts["test"], params)


def _read_aircraft(defn, root, directory, params):
    parts = read_aircraft(directory)
    return _fine_grained(defn, parts["trainval"], parts["test"], params)


def _cifar_parts(directory: Path, which: str) -> tuple[Records, Records, Records]:
    """(train, val, test): like OpenOOD's lists, val is 1,000 test images (a fixed stratified 10%),
    test the other 9,000."""
    if which == "cifar10":
        train = read_cifar(directory, [f"data_batch_{i}" for i in range(1, 6)], "labels")
        test = read_cifar(directory, ["test_batch"], "labels")
    else:
        train = read_cifar(directory, ["train"], "fine_labels")
        test = read_cifar(directory, ["test"], "fine_labels")
    val_idx = _holdout(test.labels, 0.1)
    return train, test.take(val_idx), test.take(_rest(len(test), val_idx))


def _as_ood(r: Records) -> Records:
    return Records(np.full(len(r), -1, dtype=np.int64), r.paths, r.pixels)


def _read_cifar10(defn, root, directory, params):
    train, val, test = _cifar_parts(directory, "cifar10")
    other = root / "cifar-100-python"
    derived = {"cifar100_test": {"test": _as_ood(_cifar_parts(other, "cifar100")[2])} if other.exists() else other}
    return {"train": train, "val": val, "test": test}, derived


def _read_cifar100(defn, root, directory, params):
    train, val, test = _cifar_parts(directory, "cifar100")
    other = root / "cifar-10-batches-py"
    derived = {"cifar10_test": {"test": _as_ood(read_cifar(other, ["test_batch"], "labels"))} if other.exists() else other}
    return {"train": train, "val": val, "test": test}, derived


def _read_waterbirds(defn, root, directory, params):
    parts = read_waterbirds(directory)
    r = params.get("r")
    if r is not None:
        parts["train"] = parts["train"].take(_correlate(parts["train"].labels, parts["train"].attrs["place"], float(r)))
    return parts, {}


def _correlate(y: np.ndarray, env: np.ndarray, r: float) -> np.ndarray:
    """Indices keeping, within each class, a fraction r on its majority environment (env == y):
    the larger side is subsampled, never the smaller (the data must allow it)."""
    rng = np.random.RandomState(HOLDOUT_SEED)
    keep = []
    for c in (0, 1):
        maj, mino = np.flatnonzero((y == c) & (env == c)), np.flatnonzero((y == c) & (env != c))
        want_maj = int(round(r / (1 - r) * mino.size))
        if want_maj <= maj.size:
            keep += [rng.choice(maj, want_maj, replace=False), mino]
        else:
            keep += [maj, rng.choice(mino, int(round((1 - r) / r * maj.size)), replace=False)]
    return np.sort(np.concatenate(keep))


def _read_celeba(defn, root, directory, params):
    """ID: grey hair (y) vs not, environment male, bald men excluded (they are the spurious OOD).
    Train keeps every grey-haired woman and non-grey man and samples r/(1−r)·#grey-women from
    each majority group (r = 0.8: 8,059 images on the full data); val/test are not subsampled."""
    paths, attrs, partition = read_celeba(directory)
    for a in ("Gray_Hair", "Male", "Bald"):
        if a not in attrs:
            raise DataLayoutError(f"{directory / 'list_attr_celeba.txt'}: attribute {a} missing")
    y, male, bald_men = attrs["Gray_Hair"], attrs["Male"], (attrs["Male"] == 1) & (attrs["Bald"] == 1)
    everything = Records(y, paths)

    def select(mask: np.ndarray) -> Records:
        return everything.take(np.flatnonzero(mask))

    rng = np.random.RandomState(HOLDOUT_SEED)
    train = (partition == 0) & ~bald_men
    n_minor = int(((y == 1) & (male == 0) & train).sum())
    k = int(round(float(params["r"]) / (1 - float(params["r"])) * n_minor))
    keep = np.zeros(len(y), dtype=bool)
    for grey, m in ((1, 0), (0, 1), (1, 1), (0, 0)):
        idx = np.flatnonzero(train & (y == grey) & (male == m))
        if grey != m:  # grey-haired women, non-grey men: the minority groups, all kept
            keep[idx] = True
        else:
            keep[rng.choice(idx, min(k, idx.size), replace=False)] = True
    ood = {"val": _as_ood(select(bald_men & (partition == 1))), "test": _as_ood(select(bald_men & (partition != 1)))}
    return ({"train": select(keep), "val": select((partition == 1) & ~bald_men), "test": select((partition == 2) & ~bald_men)},
            {"bald_men": ood})


def _read_imagenet_subset(defn, root, directory, params):
    """ImageNet-style `train/<wnid>/` and `val/<wnid>/` folders and a class list: ImageNet val is
    the test split, 50 training images per class (at most) are held out for validation."""
    list_file = next((p for p in (root / defn.native.class_list, directory / defn.native.class_list) if p.exists()),
                     root / defn.native.class_list)
    classes = read_class_list(list_file)
    if len(classes) != defn.classes:
        raise DataLayoutError(f"{list_file}: expected {defn.classes} classes, found {len(classes)}")
    pool, _ = read_class_folders(directory / "train", classes)
    test, _ = read_class_folders(directory / "val", classes)
    val_idx = _holdout(pool.labels, 0.1, cap=50)
    return {"train": pool.take(_rest(len(pool), val_idx)), "val": pool.take(val_idx), "test": test}, {}


NATIVE_READERS = {
    "waterbirds": _read_waterbirds, "celeba": _read_celeba, "cars": _read_cars, "aircraft": _read_aircraft,
    "cifar10": _read_cifar10, "cifar100": _read_cifar100, "imagenet_subset": _read_imagenet_subset,
}


# ---------------------------------------------------------------- build


def build(defn: BenchmarkDef, root: Path, params: dict, display_name: str) -> BenchmarkData:
    inv = inventory(defn, root, params)
    if not inv.complete:
        raise DatasetNotFound(f"{display_name}: {inv.first_problem()}" if inv.layout else inv.first_problem())
    decode_size, geo = geometry(defn, int(params["size"]))
    store = cache_dir() / "decoded"
    parts = {p.name: _decoded(p.records, decode_size, store) for p in inv.parts}
    mean, std = normalization(defn)
    ood = []
    empty = Split(torch.zeros(0, 3, decode_size, decode_size, dtype=torch.uint8), torch.zeros(0, dtype=torch.int64))
    for o in defn.ood:
        ood.append(OODSet(o.name, o.group, parts.get(f"ood/{o.name}/val", empty), parts[f"ood/{o.name}/test"]))
    return BenchmarkData(
        name=display_name, setting=defn.setting, num_classes=defn.classes, mean=mean, std=std,
        train=parts["id/train"], val=parts["id/val"], test=parts["id/test"], ood=tuple(ood), geometry=geo,
    )


def _decoded(records: Records, size: int, store: Path) -> Split:
    if records.pixels is not None:
        images = torch.from_numpy(np.ascontiguousarray(records.pixels))
        if images.shape[-1] != size:
            images = torch.nn.functional.interpolate(images.float(), size=(size, size), mode="bilinear",
                                                     antialias=True, align_corners=False).round().clamp(0, 255).to(torch.uint8)
        return Split(images, torch.from_numpy(records.labels))
    decoded = decode_files(records.paths, size, store)
    return Split(decoded.images, torch.from_numpy(records.labels[decoded.kept]))


def _register() -> None:
    for name, defn in definitions().items():
        def builder(seed: int, root: Path, _defn: BenchmarkDef = defn, **given: str) -> BenchmarkData:
            specialized, params = specialize(_defn, given)
            label = _defn.name if not given else f"{_defn.name}[{','.join(f'{k}={v}' for k, v in given.items())}]"
            return build(specialized, Path(root), params, label)

        register_benchmark(name, setting=defn.setting, description=defn.description, params=True)(builder)


_register()

__all__ = ["DataLayoutError", "build", "definitions", "inventory", "mixoe_classes"]

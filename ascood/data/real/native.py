"""The datasets' own layouts: a reader per dataset turns its files into the benchmark's ID
splits and the OOD sets derived from the same files, with the fixed holdouts that make val."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ascood.data.errors import DataLayoutError
from ascood.data.real.schema import BenchmarkDef
from ascood.data.sources import (
    Records,
    read_aircraft,
    read_cars,
    read_celeba,
    read_cifar,
    read_class_folders,
    read_class_list,
    read_waterbirds,
)

HOLDOUT_SEED = 0  # val splits carved from train (or CIFAR test) are part of the benchmark, not the run


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

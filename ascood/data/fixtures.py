"""Tiny data trees in every on-disk layout the real loaders read, for tests and benchmarks.

Each writer puts real files in the real format (JPEG/PNG images, OpenOOD image lists, CIFAR
pickle batches, CelebA attribute/partition files, Waterbirds metadata.csv, FGVC-Aircraft text
annotations, Stanford Cars .mat annotations, ImageNet-style folders with a class list) under a
root, with small random images of varying size so that resizing and cropping are exercised.
Nothing here is used by training.
"""

from __future__ import annotations

import csv
import pickle
from pathlib import Path

import numpy as np
from PIL import Image

from ascood.data.real import BenchmarkDef, definitions


class _Images:
    def __init__(self, seed: int, size: tuple[int, int] = (20, 44)):
        self.rng = np.random.default_rng(seed)
        self.size = size

    def write(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        h, w = self.rng.integers(*self.size, size=2)
        pixels = self.rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(path, quality=90) if path.suffix == ".jpg" else Image.fromarray(pixels).save(path)


def write_ood_folders(root: Path, defn: BenchmarkDef, *, per_set: int = 6, seed: int = 1) -> None:
    """ROOT/ood/<folder> class-folder trees for the benchmark's folder-based OOD sets (val/ and
    test/ halves for sets with a validation half)."""
    img = _Images(seed)
    for o in defn.ood:
        if o.native is not None:
            continue
        base = root / "ood" / (o.folder or o.name)
        halves = [base / "val", base / "test"] if o.openood.val else [base]
        for h in halves:
            for i in range(per_set):
                img.write(h / f"class{i % 2}" / f"{o.name}_{i}.jpg")


def write_openood(root: Path, name: str, *, per_class: int = 2, ood_per_set: int = 5, seed: int = 0) -> None:
    """OpenOOD image lists + images for a benchmark (ID splits and every OOD list it names)."""
    defn = definitions()[name]
    img = _Images(seed)
    base = root / defn.openood.images[0]
    for split, rel in defn.openood.lists.items():
        lines = []
        for c in range(defn.classes):
            for i in range(per_class):
                f = f"{name}/{split}/{c}/{i}.jpg"
                img.write(base / f)
                lines.append(f"{f} {c}")
        _write_list(root / "benchmark_imglist" / rel, lines)
    for o in defn.ood:
        for half, candidates in (("val", o.openood.val), ("test", o.openood.test)):
            if not candidates:
                continue
            rel = candidates[0].replace("{id}", name)
            list_file = root / "benchmark_imglist" / rel
            if list_file.exists():  # shared between benchmarks (e.g. the far ImageNet-style sets)
                continue
            lines = []
            for i in range(ood_per_set):
                f = f"{o.name}/{half}/{i}.png"
                img.write(root / o.openood.images[0] / f)
                lines.append(f"{f} -1")
            _write_list(list_file, lines)


def _write_list(path: Path, lines: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def write_cifar(root: Path, which: str, *, per_class: int = 3, seed: int = 0) -> None:
    """torchvision's CIFAR python batches (`cifar-10-batches-py/` or `cifar-100-python/`)."""
    rng = np.random.default_rng(seed)
    classes = 10 if which == "cifar10" else 100
    key = "labels" if which == "cifar10" else "fine_labels"

    def batch(n_per_class: int) -> dict:  # str keys: what torchvision's reader (latin-1) sees in the real files
        labels = np.repeat(np.arange(classes), n_per_class)
        return {"data": rng.integers(0, 256, size=(labels.size, 3072), dtype=np.uint8), key: labels.tolist()}

    if which == "cifar10":
        d = root / "cifar-10-batches-py"
        files = {f"data_batch_{i}": batch(per_class) for i in range(1, 6)} | {"test_batch": batch(per_class * 2)}
        files["batches.meta"] = {"label_names": [f"class {c}" for c in range(classes)], "num_vis": 3072}
    else:
        d = root / "cifar-100-python"
        files = {"train": batch(per_class), "test": batch(per_class * 2)}
        files["meta"] = {"fine_label_names": [f"class {c}" for c in range(classes)],
                         "coarse_label_names": [f"super {c}" for c in range(20)]}
    d.mkdir(parents=True, exist_ok=True)
    for f, content in files.items():
        with open(d / f, "wb") as fh:
            pickle.dump(content, fh)


def write_waterbirds(root: Path, *, per_group: int = 4, seed: int = 0) -> None:
    """A Waterbirds folder with metadata.csv; train 90% of each class on its own place."""
    img = _Images(seed)
    d = root / "waterbirds"
    rows = []
    k = 0
    for split, n_major, n_minor in ((0, per_group * 9, per_group), (1, per_group, per_group), (2, per_group, per_group)):
        for y in (0, 1):
            for place, n in ((y, n_major), (1 - y, n_minor)):
                for _ in range(n):
                    f = f"{k:03d}.Species_{y}/img_{k}.jpg"
                    img.write(d / f)
                    rows.append({"img_id": k, "img_filename": f, "y": y, "split": split, "place": place})
                    k += 1
    with open(d / "metadata.csv", "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=["img_id", "img_filename", "y", "split", "place"])
        w.writeheader()
        w.writerows(rows)


CELEBA_ATTRS = ["5_o_Clock_Shadow", "Bald", "Gray_Hair", "Male", "Young"]


def write_celeba(root: Path, *, n: int = 120, seed: int = 0) -> None:
    """torchvision's CelebA files: img_align_celeba/, list_attr_celeba.txt, list_eval_partition.txt."""
    img = _Images(seed)
    rng = np.random.default_rng(seed)
    d = root / "celeba"
    attr_lines, part_lines = [], []
    for i in range(n):
        f = f"{i + 1:06d}.jpg"
        img.write(d / "img_align_celeba" / f)
        male, grey = i % 2, (i // 2) % 2
        bald = int(male == 1 and i % 7 == 0)
        values = {"5_o_Clock_Shadow": rng.integers(0, 2), "Bald": bald, "Gray_Hair": grey, "Male": male,
                  "Young": rng.integers(0, 2)}
        attr_lines.append(f + " " + " ".join("1" if values[a] else "-1" for a in CELEBA_ATTRS))
        part_lines.append(f"{f} {0 if i < n * 0.6 else 1 if i < n * 0.8 else 2}")
    (d / "list_attr_celeba.txt").write_text(f"{n}\n{' '.join(CELEBA_ATTRS)}\n" + "\n".join(attr_lines) + "\n")
    (d / "list_eval_partition.txt").write_text("\n".join(part_lines) + "\n")


def write_aircraft(root: Path, *, trainval_per_class: int = 3, test_per_class: int = 2, seed: int = 0) -> None:
    """torchvision's FGVCAircraft layout (fgvc-aircraft-2013b/data/...), 100 variants."""
    img = _Images(seed)
    data = root / "fgvc-aircraft-2013b" / "data"
    variants = [f"Variant {i:03d}" for i in range(100)]
    _write_list(data / "variants.txt", variants)
    k = 1000000
    for split, per in (("trainval", trainval_per_class), ("test", test_per_class)):
        lines = []
        for v in variants:
            for _ in range(per):
                img.write(data / "images" / f"{k}.jpg")
                lines.append(f"{k} {v}")
                k += 1
        _write_list(data / f"images_variant_{split}.txt", lines)


def write_cars(root: Path, *, train_per_class: int = 3, test_per_class: int = 2, seed: int = 0) -> None:
    """torchvision's StanfordCars layout with .mat annotations (196 classes, 1-based)."""
    from scipy.io import savemat

    img = _Images(seed)
    d = root / "stanford_cars"
    dtype = [("fname", object), ("class", np.int64)]
    for per, mat, images in ((train_per_class, d / "devkit" / "cars_train_annos.mat", d / "cars_train"),
                             (test_per_class, d / "cars_test_annos_withlabels.mat", d / "cars_test")):
        annos = []
        for c in range(196):
            for i in range(per):
                fname = f"{c:03d}{i:02d}.jpg"
                img.write(images / fname)
                annos.append((fname, c + 1))
        mat.parent.mkdir(parents=True, exist_ok=True)
        savemat(str(mat), {"annotations": np.array(annos, dtype=dtype)})
    savemat(str(d / "devkit" / "cars_meta.mat"), {"class_names": np.array([f"car {c}" for c in range(196)], dtype=object)})


def write_imagenet100(root: Path, *, train_per_class: int = 3, val_per_class: int = 1, seed: int = 0) -> None:
    """An ImageNet-style folder (train/<wnid>/, val/<wnid>/) and the 100-class list file."""
    img = _Images(seed)
    wnids = [f"n{10000000 + 7 * i:08d}" for i in range(100)]
    _write_list(root / "imagenet100.txt", wnids)
    for folder, per in (("train", train_per_class), ("val", val_per_class)):
        for w in wnids:
            for i in range(per):
                img.write(root / "imagenet" / folder / w / f"{w}_{i}.JPEG")
    # ImageNet-1K has more classes than the list names: an extra folder must be ignored.
    img.write(root / "imagenet" / "train" / "n99999999" / "extra_0.JPEG")


NATIVE_WRITERS = {
    "waterbirds": write_waterbirds, "celeba": write_celeba, "cars": write_cars, "aircraft": write_aircraft,
    "cifar10": lambda root: (write_cifar(root, "cifar10", seed=10), write_cifar(root, "cifar100", seed=100)),
    "cifar100": lambda root: (write_cifar(root, "cifar100", seed=100), write_cifar(root, "cifar10", seed=10)),
    "imagenet100": write_imagenet100,
}


def write_native(root: Path, name: str) -> None:
    """A benchmark in its own layout, plus its folder-based OOD sets under ROOT/ood/."""
    NATIVE_WRITERS[name](root)
    write_ood_folders(root, definitions()[name])

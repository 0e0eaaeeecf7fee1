"""Readers of the on-disk layouts users have: each turns files into labelled records.

Readers only parse (image lists, CSV/attribute/annotation files, folder trees, CIFAR pickles);
decoding and caching live in `decode.py`, benchmark assembly in `real/`. Every malformed input
raises `DataLayoutError` with the file (and line) at fault.
"""

from __future__ import annotations

import ast
import csv
import os
import pickle
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ascood.data.errors import DataLayoutError

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm"}


@dataclass
class Records:
    """Images of one split: file paths (decoded later) or, for CIFAR pickles, the pixels."""

    labels: np.ndarray  # int64, −1 for OOD
    paths: list[str] | None = None
    pixels: np.ndarray | None = None  # uint8 N×3×H×W
    attrs: dict[str, np.ndarray] = field(default_factory=dict)

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def take(self, idx: np.ndarray) -> Records:
        idx = np.asarray(idx, dtype=np.int64)
        return Records(
            self.labels[idx],
            None if self.paths is None else [self.paths[i] for i in idx],
            None if self.pixels is None else self.pixels[idx],
            {k: v[idx] for k, v in self.attrs.items()},
        )

    @staticmethod
    def concat(parts: list[Records]) -> Records:
        paths = None if any(p.paths is None for p in parts) else [x for p in parts for x in p.paths]
        pixels = None if any(p.pixels is None for p in parts) else np.concatenate([p.pixels for p in parts])
        keys = set.intersection(*(set(p.attrs) for p in parts)) if parts else set()
        return Records(np.concatenate([p.labels for p in parts]), paths, pixels,
                       {k: np.concatenate([p.attrs[k] for p in parts]) for k in keys})


def read_imglist(file: Path, image_root: Path) -> Records:
    """An OpenOOD image list: `relative/path label` per line, the label a Python literal (an int,
    or a dict of extra fields, which OpenOOD reads as label 0)."""
    paths, labels = [], []
    lines = _text(file).splitlines()
    for n, line in enumerate(lines, 1):
        line = line.rstrip("\r")
        if not line.strip():
            continue
        name, sep, rest = line.partition(" ")
        if not sep or not rest.strip():
            raise DataLayoutError(f"{file}:{n}: expected 'relative/path label', got {line[:80]!r}")
        if name.startswith("/"):
            raise DataLayoutError(f"{file}:{n}: image path must be relative to the image root, got {name!r}")
        try:
            value = ast.literal_eval(rest.strip())
        except (ValueError, SyntaxError):
            raise DataLayoutError(f"{file}:{n}: label must be an int or a dict literal, got {rest.strip()[:60]!r}") from None
        if isinstance(value, dict):
            value = 0
        if isinstance(value, bool) or not isinstance(value, int):
            raise DataLayoutError(f"{file}:{n}: label must be an int, got {rest.strip()[:60]!r}")
        paths.append(str(image_root / name))
        labels.append(value)
    return Records(np.array(labels, dtype=np.int64), paths)


def list_images(root: Path) -> list[Path]:
    """Image files under `root`, recursively, in sorted order (hidden files left out).

    Symlinked folders are followed (OOD sets are often assembled from links to class folders), as
    torchvision's readers do; a folder reached again through a link cycle is walked once.
    """
    found: list[Path] = []
    seen: set[tuple[int, int]] = set()
    for top, dirs, files in os.walk(root, followlinks=True):
        st = os.stat(top)
        if (st.st_dev, st.st_ino) in seen:
            dirs[:] = []
            continue
        seen.add((st.st_dev, st.st_ino))
        for name in files:
            path = Path(top) / name
            if path.suffix.lower() in IMAGE_SUFFIXES and not name.startswith(".") and path.is_file():
                found.append(path)
    return sorted(found)


def read_class_folders(root: Path, classes: list[str] | None = None) -> tuple[Records, list[str]]:
    """`root/<class>/…/image` trees: labels by sorted class name (or by `classes` order)."""
    if not root.is_dir():
        raise DataLayoutError(f"{root}: expected a folder of class folders")
    found = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    classes = found if classes is None else classes
    missing = [c for c in classes if c not in found]
    if missing:
        raise DataLayoutError(f"{root}: class folder(s) missing: {', '.join(missing[:5])}")
    paths, labels = [], []
    for i, c in enumerate(classes):
        files = list_images(root / c)
        paths += [str(p) for p in files]
        labels += [i] * len(files)
    return Records(np.array(labels, dtype=np.int64), paths), classes


def read_ood_folder(root: Path) -> Records:
    """Every image under an OOD folder (class sub-folders or flat), label −1."""
    if not root.is_dir():
        raise DataLayoutError(f"{root}: expected a folder of images")
    paths = [str(p) for p in list_images(root)]
    return Records(np.full(len(paths), -1, dtype=np.int64), paths)


def read_class_list(file: Path) -> list[str]:
    """One class id (e.g. an ImageNet wnid) per line; blank lines and `#` comments ignored."""
    names = [ln.split()[0] for ln in _text(file).splitlines() if ln.strip() and not ln.startswith("#")]
    if len(set(names)) != len(names):
        raise DataLayoutError(f"{file}: class list has duplicates")
    return names


def read_cifar(directory: Path, files: list[str], label_key: str) -> Records:
    """CIFAR python batches (torchvision's download): pickled dicts of `data` (N×3072) and labels."""
    pixels, labels = [], []
    for name in files:
        path = directory / name
        try:
            with open(path, "rb") as f:
                batch = pickle.load(f, encoding="bytes")
            # The published batches are Python 2 pickles (keys read as bytes); rewritten ones may use str.
            batch = {k.decode() if isinstance(k, bytes) else k: v for k, v in batch.items()}
            data = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
            lab = np.asarray(batch[label_key], dtype=np.int64)
        except OSError as exc:
            raise DataLayoutError(f"{path}: cannot read ({exc.strerror})") from None
        except (KeyError, ValueError, AttributeError, pickle.UnpicklingError, EOFError) as exc:
            raise DataLayoutError(f"{path}: not a CIFAR python batch ({type(exc).__name__}: {exc})") from None
        if len(lab) != len(data):
            raise DataLayoutError(f"{path}: {len(data)} images but {len(lab)} labels")
        pixels.append(data)
        labels.append(lab)
    return Records(np.concatenate(labels), pixels=np.concatenate(pixels))


def read_waterbirds(directory: Path) -> dict[str, Records]:
    """A Waterbirds folder with `metadata.csv` (img_filename, y, split 0/1/2, place): the three
    splits, with `place` kept as an attribute."""
    meta = directory / "metadata.csv"
    rows: dict[str, tuple[list, list, list]] = {"train": ([], [], []), "val": ([], [], []), "test": ([], [], [])}
    names = {"0": "train", "1": "val", "2": "test"}
    try:
        with open(meta, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            need = {"img_filename", "y", "split", "place"}
            if not need <= set(reader.fieldnames or ()):
                got = ", ".join(reader.fieldnames or ())
                raise DataLayoutError(f"{meta}: expected columns {', '.join(sorted(need))}, got {got}")
            for n, r in enumerate(reader, 2):
                try:
                    split, y, place = names[r["split"].strip()], int(r["y"]), int(r["place"])
                except (KeyError, ValueError, AttributeError):
                    raise DataLayoutError(f"{meta}:{n}: expected split 0/1/2 and integer y, place") from None
                if y not in (0, 1) or place not in (0, 1):
                    raise DataLayoutError(f"{meta}:{n}: y and place must be 0 or 1")
                rows[split][0].append(str(directory / r["img_filename"]))
                rows[split][1].append(y)
                rows[split][2].append(place)
    except OSError as exc:
        raise DataLayoutError(f"{meta}: cannot read ({exc.strerror})") from None
    except UnicodeDecodeError as exc:
        raise DataLayoutError(f"{meta}: not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    return {s: Records(np.array(y, dtype=np.int64), p, attrs={"place": np.array(pl, dtype=np.int64)})
            for s, (p, y, pl) in rows.items()}


def read_celeba(directory: Path) -> tuple[list[str], dict[str, np.ndarray], np.ndarray]:
    """torchvision's CelebA files: (image paths, attribute name → 0/1 array, partition 0/1/2)."""
    attr_file, part_file = directory / "list_attr_celeba.txt", directory / "list_eval_partition.txt"
    lines, part_lines = _text(attr_file).splitlines(), _text(part_file).splitlines()
    if len(lines) < 3:
        raise DataLayoutError(f"{attr_file}: expected a count line, a header line and one line per image")
    header = lines[1].split()
    files, values = [], []
    for n, line in enumerate(lines[2:], 3):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != len(header) + 1 or any(v not in ("1", "-1") for v in parts[1:]):
            raise DataLayoutError(f"{attr_file}:{n}: expected a file name and {len(header)} values of 1/-1")
        files.append(parts[0])
        values.append([v == "1" for v in parts[1:]])
    partition = {}
    for n, line in enumerate(part_lines, 1):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
            raise DataLayoutError(f"{part_file}:{n}: expected 'file.jpg 0|1|2'")
        partition[parts[0]] = int(parts[1])
    missing = [f for f in files if f not in partition]
    if missing:
        raise DataLayoutError(f"{part_file}: no partition for {missing[0]} (and {len(missing) - 1} more)")
    table = np.array(values, dtype=bool).reshape(len(files), len(header))
    attrs = {name: table[:, i].astype(np.int64) for i, name in enumerate(header)}
    paths = [str(directory / "img_align_celeba" / f) for f in files]
    return paths, attrs, np.array([partition[f] for f in files], dtype=np.int64)


def read_aircraft(directory: Path) -> dict[str, Records]:
    """torchvision's FGVCAircraft (`fgvc-aircraft-2013b`): variant labels of trainval and test,
    classes in the order of `variants.txt`."""
    data = directory / "data"
    classes = _lines(data / "variants.txt")
    index = {c: i for i, c in enumerate(classes)}
    out = {}
    for split in ("trainval", "test"):
        file = data / f"images_variant_{split}.txt"
        paths, labels = [], []
        for n, line in enumerate(_lines(file), 1):
            image_id, _, variant = line.partition(" ")
            if variant not in index:
                raise DataLayoutError(f"{file}:{n}: variant {variant!r} is not in {data / 'variants.txt'}")
            paths.append(str(data / "images" / f"{image_id}.jpg"))
            labels.append(index[variant])
        out[split] = Records(np.array(labels, dtype=np.int64), paths)
    return out


def read_cars(directory: Path) -> dict[str, Records]:
    """torchvision's StanfordCars: `devkit/cars_train_annos.mat`, `cars_test_annos_withlabels.mat`,
    images in `cars_train/` and `cars_test/`; labels 0-based."""
    from scipy.io import loadmat

    sources = {"train": (directory / "devkit" / "cars_train_annos.mat", directory / "cars_train"),
               "test": (directory / "cars_test_annos_withlabels.mat", directory / "cars_test")}
    out = {}
    for split, (mat, images) in sources.items():
        try:
            annos = loadmat(str(mat), squeeze_me=True)["annotations"]
            paths = [str(images / str(a["fname"])) for a in annos]
            labels = np.array([int(a["class"]) - 1 for a in annos], dtype=np.int64)
        except (OSError, FileNotFoundError) as exc:
            raise DataLayoutError(f"{mat}: cannot read ({exc})") from None
        except (KeyError, ValueError, TypeError) as exc:
            raise DataLayoutError(f"{mat}: expected an 'annotations' struct with fname and class ({exc})") from None
        out[split] = Records(labels, paths)
    return out


def _lines(file: Path) -> list[str]:
    return [ln.strip() for ln in _text(file).splitlines() if ln.strip()]


def _text(file: Path) -> str:
    """A list or metadata file as UTF-8 text; unreadable or not UTF-8 is one line naming it."""
    try:
        return file.read_bytes().decode("utf-8")
    except OSError as exc:
        raise DataLayoutError(f"{file}: cannot read ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        raise DataLayoutError(f"{file}: not UTF-8 text (byte {exc.start}: {exc.reason})") from None

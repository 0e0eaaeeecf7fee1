"""External outliers (for methods oe and mixoe): where they come from, and the leakage guard.

A source is `embedded` (the embedded outlier set, `ascood.data.embedded.build_outliers`), an image
folder, a class-folder tree (both read recursively), or an OpenOOD image list (`.txt`, paths
relative to an image root). Files are decoded to the benchmark's stored size through the same
decoded-image cache as the benchmarks, so outliers are cropped, flipped and normalized exactly as
the ID training images are. Generated outliers (SynOOD, Dream-OOD) are a folder like any other.

An outlier set that shares an image (by the hash of its decoded pixels) with the benchmark's ID
splits or any of its OOD sets would train on what the evaluation measures: it is refused.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import torch

from ascood.data.decode import decode_files, resize_square
from ascood.data.env import cache_dir
from ascood.data.errors import DataLayoutError, DatasetError, DatasetNotFound
from ascood.data.sources import list_images, read_imglist
from ascood.data.types import BenchmarkData, Split

EMBEDDED = "embedded"


class OutlierOverlapError(DatasetError):
    """The outlier set shares images with the benchmark; the message names both sets."""


def outlier_files(source: str, image_root: Path | None = None) -> list[str]:
    """The image files of a folder, tree or list source, without decoding any (a missing path or
    one without images is refused, naming it)."""
    path = Path(source).expanduser()
    if not path.exists():
        raise DatasetNotFound(f"outliers {source}: no such file or folder")
    if path.is_dir():
        files = [str(p) for p in list_images(path)]
        if not files:
            raise DataLayoutError(f"outliers {source}: a folder with no images in it (or its sub-folders)")
        return files
    if path.suffix != ".txt":
        raise DataLayoutError(f"outliers {source}: expected `embedded`, a folder of images or an OpenOOD image list (.txt)")
    root = Path(image_root).expanduser() if image_root is not None else path.parent
    files = read_imglist(path, root).paths or []
    if not files:
        raise DataLayoutError(f"outliers {source}: an image list with no entries")
    missing = next((f for f in files if not os.path.isfile(f)), None)
    if missing is not None:
        raise DatasetNotFound(f"outliers {source}: listed image {missing} not found (image root {root})")
    return files


def load_outliers(source: str, size: int, *, image_root: Path | None = None, skip_corrupt: bool = False) -> Split:
    """The outlier images as a uint8 N×3×size×size split (labels −1)."""
    if source == EMBEDDED:
        images = _embedded(size)
    else:
        decoded = decode_files(outlier_files(source, image_root), size, cache_dir() / "decoded",
                               skip_corrupt=skip_corrupt)
        images = decoded.images
        if len(images) == 0:
            raise DataLayoutError(f"outliers {source}: none of its images could be read")
    return Split(images, torch.full((len(images),), -1, dtype=torch.int64))


def _embedded(size: int) -> torch.Tensor:
    from ascood.data.embedded import OUTLIERS_VERSION, SIZE, build_outliers
    from ascood.data.registry import cached

    path = cache_dir() / "benchmarks" / f"outliers-v{OUTLIERS_VERSION}.pt"
    images = cached(path, lambda: build_outliers().images)
    return images if size == SIZE else resize_square(images, size)


def image_hashes(images: torch.Tensor, chunk: int = 1024) -> set[bytes]:
    """One digest per image of its pixels (shape and bytes)."""
    out: set[bytes] = set()
    for s in range(0, len(images), chunk):
        block = np.ascontiguousarray(images[s : s + chunk].numpy())
        shape = str(block.shape[1:]).encode()
        out.update(hashlib.blake2b(shape + img.tobytes(), digest_size=16).digest() for img in block)
    return out


def benchmark_sets(data: BenchmarkData) -> dict[str, Split]:
    """Every image set of the benchmark, by the name an error gives it."""
    sets = {f"{data.name} ID {s}": data.id_split(s) for s in ("train", "val", "test")}
    for o in data.ood:
        for s in ("val", "test"):
            sets[f"{data.name} OOD {o.name} ({s})"] = getattr(o, s)
    return sets


def check_disjoint(outliers: Split, data: BenchmarkData, source: str) -> None:
    """Refuse an outlier set that shares any image with the benchmark's ID splits or OOD sets."""
    mine = image_hashes(outliers.images)
    for name, split in benchmark_sets(data).items():
        if len(split) == 0 or split.images.shape[1:] != outliers.images.shape[1:]:
            continue
        shared = mine & image_hashes(split.images)
        if shared:
            raise OutlierOverlapError(f"outliers {source}: shares {len(shared)} image(s) with {name} (by content hash); "
                                      "external outliers must not contain images of the benchmark")


def outliers_for(data: BenchmarkData, source: str, *, image_root: Path | None = None,
                 skip_corrupt: bool = False) -> Split:
    """A run's outliers: decoded at the benchmark's stored size and checked disjoint from it."""
    outliers = load_outliers(source, int(data.train.images.shape[-1]), image_root=image_root, skip_corrupt=skip_corrupt)
    check_disjoint(outliers, data, source)
    return outliers

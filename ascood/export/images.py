"""Images to score: files, folders (searched recursively) and image lists → uint8 batches.

Each image is decoded as a benchmark's images are (`ascood.data.decode.decode_image`: RGB, shorter
side resized to the decode size, centre square), so a bundle sees what its network was trained on.
An image list is a text file of paths, one a line, relative to the list's folder; a trailing
integer label (OpenOOD's `path label` lines) is ignored. An unreadable image inside a batch is
skipped and reported; a missing path, a folder without images or an empty list is an error.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ascood.data.decode import decode_image

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")
LIST_SUFFIXES = (".txt", ".lst")


class ImageInputError(ValueError):
    """A path that gives no image to score; one line naming it."""


def _list_entries(path: Path) -> list[Path]:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ImageInputError(f"{path}: not a readable UTF-8 image list ({type(exc).__name__})") from None
    out = []
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        parts = line.rsplit(None, 1)
        name = parts[0] if len(parts) == 2 and parts[1].lstrip("-").isdigit() else line
        out.append(Path(name) if Path(name).is_absolute() else path.parent / name)
    if not out:
        raise ImageInputError(f"{path}: an image list with no entries")
    return out


def image_files(paths: Sequence[str | Path]) -> list[Path]:
    """Every file to score, in the order given (a folder's images sorted by path)."""
    if not paths:
        raise ImageInputError("no PATH given: expected images, folders or image lists")
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
            if not found:
                raise ImageInputError(f"{path}: a folder with no images (looked for {', '.join(IMAGE_SUFFIXES)})")
            files += found
        elif path.is_file() and path.suffix.lower() in LIST_SUFFIXES:
            files += _list_entries(path)
        elif path.is_file():
            files.append(path)
        else:
            raise ImageInputError(f"{path}: no such file or folder")
    return files


def batches_of(files: Sequence[Path], size: int, batch_size: int) -> Iterator[tuple[list[str], Tensor, list[tuple[str, str]]]]:
    """(names, uint8 B×3×size×size, skipped (path, reason)) per batch of up to `batch_size` files."""
    if batch_size < 1:
        raise ImageInputError(f"--batch-size: expected a positive number, got {batch_size}")
    for start in range(0, len(files), batch_size):
        names, arrays, bad = [], [], []
        for path in files[start : start + batch_size]:
            try:
                arrays.append(decode_image(path, size))
                names.append(str(path))
            except Exception as exc:  # any decoder failure: the file is no readable image
                bad.append((str(path), f"{type(exc).__name__}: {exc}".splitlines()[0][:200]))
        images = torch.from_numpy(np.stack(arrays)) if arrays else torch.zeros(0, 3, size, size, dtype=torch.uint8)
        yield names, images, bad

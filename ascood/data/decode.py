"""Decode a list of image files once into a uint8 array on disk, memory-mapped by every trial.

The cache key covers each file's path, size and modification time and the decode size, so an
edited or replaced image is decoded again and two benchmarks sharing a file list share the
array. Decoding runs in a process pool; the array is written under a temporary name and renamed,
so a crash never leaves a torn cache behind. A build reports how many images it has decoded to an
optional callback, in the calling process, a chunk at a time.
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from ascood.data.errors import CorruptImageError

DECODE_VERSION = 1
CHUNK = 128


@dataclass(frozen=True)
class Decoded:
    images: Tensor  # uint8 N×3×S×S, memory-mapped
    kept: np.ndarray  # indices into the input file list of the images kept
    skipped: tuple[tuple[str, str], ...]  # (path, reason) of each unreadable file skipped


def decode_image(path: str | Path, size: int) -> np.ndarray:
    """RGB, shorter side resized to `size` (bilinear, as torchvision's Resize), centre size×size
    square; 3×size×size uint8."""
    with Image.open(path) as im:
        im = im.convert("RGB")
        w, h = im.size
        if w <= h:
            nw, nh = size, max(size, int(size * h / w))
        else:
            nw, nh = max(size, int(size * w / h)), size
        if (nw, nh) != (w, h):
            im = im.resize((nw, nh), Image.BILINEAR)
        left, top = int(round((nw - size) / 2.0)), int(round((nh - size) / 2.0))
        im = im.crop((left, top, left + size, top + size))
        return np.ascontiguousarray(np.asarray(im, dtype=np.uint8).transpose(2, 0, 1))


def resize_square(images: Tensor, size: int) -> Tensor:
    """uint8 N×3×S×S images → N×3×size×size (bilinear, antialiased, rounded back to uint8)."""
    return torch.nn.functional.interpolate(images.float(), size=(size, size), mode="bilinear", antialias=True,
                                           align_corners=False).round().clamp(0, 255).to(torch.uint8)


def cache_key(paths: Sequence[str | Path], size: int) -> str:
    h = hashlib.sha256(f"v{DECODE_VERSION}|{size}|".encode())
    for p in paths:
        try:
            st = os.stat(p)
            h.update(f"{p}|{st.st_size}|{st.st_mtime_ns}\n".encode())
        except OSError:
            h.update(f"{p}|missing\n".encode())
    return h.hexdigest()[:24]


def _decode_chunk(args: tuple[str, int, list[str], int]) -> list[tuple[int, str, str]]:
    tmp, start, paths, size = args
    out = np.lib.format.open_memmap(tmp, mode="r+")
    bad = []
    for i, p in enumerate(paths):
        try:
            out[start + i] = decode_image(p, size)
        except Exception as exc:  # any decoder failure: the file is unreadable as an image
            bad.append((start + i, p, f"{type(exc).__name__}: {exc}".splitlines()[0][:200]))
    out.flush()
    del out
    return bad


def decode_files(
    paths: Sequence[str | Path], size: int, cache_dir: Path, *, skip_corrupt: bool = False,
    workers: int | None = None, progress: Callable[[int], None] | None = None,
) -> Decoded:
    """Every file decoded to 3×size×size, from the cache when it is there.

    An unreadable file stops with its name unless `skip_corrupt`, which leaves it out and
    reports it in `skipped`. `progress(n)` is called as each chunk of n files is decoded (never
    on a cache hit).
    """
    paths = [str(p) for p in paths]
    if not paths:
        return Decoded(torch.zeros(0, 3, size, size, dtype=torch.uint8), np.zeros(0, dtype=np.int64), ())
    key = cache_key(paths, size)
    npy, meta = cache_dir / f"{key}.npy", cache_dir / f"{key}.json"
    if not (npy.exists() and meta.exists()):
        _build(paths, size, npy, meta, workers, progress or (lambda n: None))
    info = json.loads(meta.read_text())
    skipped = tuple((p, r) for _, p, r in info["skipped"])
    if skipped and not skip_corrupt:
        p, r = skipped[0]
        more = f" (and {len(skipped) - 1} more)" if len(skipped) > 1 else ""
        raise CorruptImageError(f"{p}: unreadable image ({r}){more}; set ASCOOD_SKIP_CORRUPT=1 to skip such files")
    bad = {i for i, _, _ in info["skipped"]}
    kept = np.array([i for i in range(len(paths)) if i not in bad], dtype=np.int64)
    array = np.load(npy, mmap_mode="c")
    if array.shape != (len(kept), 3, size, size):
        npy.unlink(missing_ok=True)
        meta.unlink(missing_ok=True)
        return decode_files(paths, size, cache_dir, skip_corrupt=skip_corrupt, workers=workers, progress=progress)
    return Decoded(torch.from_numpy(array), kept, skipped)


def _build(
    paths: list[str], size: int, npy: Path, meta: Path, workers: int | None, progress: Callable[[int], None],
) -> None:
    npy.parent.mkdir(parents=True, exist_ok=True)
    tmp = npy.with_name(f".{npy.stem}.{os.getpid()}.tmp.npy")
    n = len(paths)
    np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=(n, 3, size, size)).flush()
    jobs = [(str(tmp), s, paths[s : s + CHUNK], size) for s in range(0, n, CHUNK)]
    workers = workers or min(os.cpu_count() or 1, 16)
    bad = []
    if workers > 1 and len(jobs) > 1:
        with multiprocessing.get_context("fork").Pool(min(workers, len(jobs))) as pool:
            for (_, _, chunk, _), found in zip(jobs, pool.imap(_decode_chunk, jobs), strict=True):
                bad += found
                progress(len(chunk))
    else:
        for job in jobs:
            bad += _decode_chunk(job)
            progress(len(job[2]))
    meta_tmp = meta.with_name(f".{meta.name}.{os.getpid()}.tmp")
    try:
        if bad:
            _drop(tmp, {i for i, _, _ in bad}, n, size)
        meta_tmp.write_text(json.dumps({"size": size, "n": n, "skipped": sorted(bad)}))
        os.replace(tmp, npy)
        os.replace(meta_tmp, meta)
    finally:
        tmp.unlink(missing_ok=True)
        meta_tmp.unlink(missing_ok=True)


def _drop(tmp: Path, bad: set[int], n: int, size: int) -> None:
    """Rewrite `tmp` without the rows in `bad` (unreadable files), in place."""
    src = np.load(tmp, mmap_mode="r")
    kept = [i for i in range(n) if i not in bad]
    compact = tmp.with_name(tmp.name + ".compact.npy")
    dst = np.lib.format.open_memmap(compact, mode="w+", dtype=np.uint8, shape=(len(kept), 3, size, size))
    for s in range(0, len(kept), CHUNK):
        dst[s : s + CHUNK] = src[kept[s : s + CHUNK]]
    dst.flush()
    del dst, src
    os.replace(compact, tmp)

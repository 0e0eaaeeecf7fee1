"""The data choices the environment makes, read in one place so the modules below take them as
plain arguments."""

from __future__ import annotations

import os
from pathlib import Path


def data_root(explicit: str | Path | None = None) -> Path:
    """Where users' datasets live: the explicit root, else $ASCOOD_DATA, else ~/data."""
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("ASCOOD_DATA", Path.home() / "data"))


def cache_dir() -> Path:
    """Where built benchmarks are cached: $ASCOOD_CACHE, else ~/.cache/ascood."""
    return Path(os.environ.get("ASCOOD_CACHE", Path.home() / ".cache" / "ascood"))


def skip_corrupt_from_env() -> bool:
    """Skip unreadable images (and count them) instead of stopping: `ASCOOD_SKIP_CORRUPT=1`."""
    return os.environ.get("ASCOOD_SKIP_CORRUPT", "") not in ("", "0", "false", "no")

"""Benchmarks by name: each builder registers itself here, and `load_benchmark` builds one.

A benchmark resolves to in-memory uint8 image tensors (N×3×H×W) with labels: ID train/val/test
splits and OOD sets, each OOD set with disjoint val and test halves. Images are normalized on
the device, batch-wise, with the benchmark's per-channel mean and std. The registry knows no
builder: importing `ascood.data` imports the embedded and the real ones, which register.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from ascood.choices import expected_one_of, one_of
from ascood.data.env import cache_dir, data_root
from ascood.data.errors import DatasetError, DatasetNotFound, UnknownBenchmarkError
from ascood.data.types import SETTINGS, BenchmarkData, Geometry, OODSet, Split

__all__ = [
    "BenchmarkData", "BenchmarkSpec", "DatasetError", "DatasetNotFound", "Geometry", "OODSet", "Split",
    "UnknownBenchmarkError", "cache_dir", "data_root", "get_spec", "list_benchmarks", "load_benchmark",
    "parse_name", "register_benchmark",
]


@dataclass(frozen=True)
class BenchmarkSpec:
    name: str
    setting: str
    description: str
    build: Callable[..., BenchmarkData]
    embedded: bool = False
    version: int = 1
    params: bool = False  # takes `name[key=value,…]` parameters
    check_params: Callable[[dict[str, str]], object] | None = None  # raises UnknownBenchmarkError


T = TypeVar("T")

_REGISTRY: dict[str, BenchmarkSpec] = {}


def register_benchmark(name: str, *, setting: str, description: str, embedded: bool = False, version: int = 1,
                       params: bool = False, check_params: Callable[[dict[str, str]], object] | None = None):
    """Decorator adding a builder to the registry under `name`: `fn(seed)` for embedded
    benchmarks, `fn(seed, root, skip_corrupt, /, **params)` for those built from the user's data
    under `root` (positional-only, so no `name[key=value]` parameter can collide with them).
    `check_params` refuses bad parameter values by name alone, before any data is read."""
    one_of(setting, SETTINGS, "setting")

    def wrap(fn: Callable[..., BenchmarkData]) -> Callable[..., BenchmarkData]:
        if name in _REGISTRY:
            raise ValueError(f"benchmark {name!r} is registered twice")
        _REGISTRY[name] = BenchmarkSpec(name, setting, description, fn, embedded, version, params, check_params)
        return fn

    return wrap


def list_benchmarks() -> list[str]:
    return sorted(_REGISTRY)


def parse_name(name: str) -> tuple[str, dict[str, str]]:
    """`aircraft[split=1,size=64]` → ("aircraft", {"split": "1", "size": "64"})."""
    base, sep, rest = name.partition("[")
    if not sep:
        return name, {}
    if not rest.endswith("]"):
        raise UnknownBenchmarkError(f"benchmark {name!r}: expected NAME[key=value,…]")
    params = {}
    for item in filter(None, (x.strip() for x in rest[:-1].split(","))):
        key, eq, value = item.partition("=")
        if not eq or not key.strip() or not value.strip():
            raise UnknownBenchmarkError(f"benchmark {name!r}: expected key=value, got {item!r}")
        params[key.strip()] = value.strip()
    return base, params


def get_spec(name: str) -> BenchmarkSpec:
    base, params = parse_name(name)
    try:
        spec = _REGISTRY[base]
    except KeyError:
        raise UnknownBenchmarkError(
            f"unknown benchmark {base!r}; {expected_one_of(sorted(_REGISTRY), base)}"
        ) from None
    if params and not spec.params:
        raise UnknownBenchmarkError(f"benchmark {base!r} takes no parameters, got {name!r}")
    if params and spec.check_params is not None:
        spec.check_params(params)
    return spec


def load_benchmark(name: str, *, seed: int = 0, root: str | Path | None = None,
                   skip_corrupt: bool = False) -> BenchmarkData:
    """Build (deterministically from `seed`) or read from the on-disk cache.

    Real benchmarks read the user's data under `data_root(root)` and leave unreadable images out
    (counted) when `skip_corrupt`, which the commands take from `skip_corrupt_from_env()`;
    embedded ones need no data.
    """
    spec = get_spec(name)
    if not spec.embedded:
        return spec.build(seed, data_root(root), skip_corrupt, **parse_name(name)[1])
    path = cache_dir() / "benchmarks" / f"{name}-v{spec.version}-seed{seed}.pt"
    return cached(path, lambda: spec.build(seed, **parse_name(name)[1]), encode=_to_state,
                  decode=lambda state: _from_state(state, spec))


def cached(path: Path, build: Callable[[], T], *, encode: Callable[[T], object] = lambda x: x,
           decode: Callable[[object], T] = lambda x: x) -> T:
    """What `build` makes, kept in `path` (a `weights_only` torch file, written atomically). A torn
    or stale file is rebuilt, never trusted."""
    import torch  # here, not at the top: a benchmark's name is checked without torch

    if path.exists():
        try:
            return decode(torch.load(path, weights_only=True))
        except Exception:
            path.unlink(missing_ok=True)
    value = build()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    torch.save(encode(value), tmp)
    os.replace(tmp, path)
    return value


def _to_state(d: BenchmarkData) -> dict:
    state = {
        "num_classes": d.num_classes,
        "mean": list(d.mean),
        "std": list(d.std),
        "ood_names": [o.name for o in d.ood],
        "ood_groups": [o.group for o in d.ood],
    }
    for split in ("train", "val", "test"):
        s = d.id_split(split)
        state[f"id/{split}/images"], state[f"id/{split}/labels"] = s.images, s.labels
    for o in d.ood:
        for split in ("val", "test"):
            s = getattr(o, split)
            state[f"ood/{o.name}/{split}/images"], state[f"ood/{o.name}/{split}/labels"] = s.images, s.labels
    return state


def _from_state(state: dict, spec: BenchmarkSpec) -> BenchmarkData:
    def split(prefix: str) -> Split:
        return Split(state[f"{prefix}/images"], state[f"{prefix}/labels"])

    ood = tuple(
        OODSet(name, group, split(f"ood/{name}/val"), split(f"ood/{name}/test"))
        for name, group in zip(state["ood_names"], state["ood_groups"], strict=True)
    )
    return BenchmarkData(
        name=spec.name,
        setting=spec.setting,
        num_classes=int(state["num_classes"]),
        mean=tuple(state["mean"]),
        std=tuple(state["std"]),
        train=split("id/train"),
        val=split("id/val"),
        test=split("id/test"),
        ood=ood,
        embedded=spec.embedded,
    )


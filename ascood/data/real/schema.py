"""The real benchmarks as `benchmarks.yaml` defines them: its schema, the parameters a name may
set, and the geometry and normalization a definition implies. Reads no dataset."""

from __future__ import annotations

from functools import cache
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field

from ascood.choices import expected_one_of
from ascood.data.errors import UnknownBenchmarkError
from ascood.data.types import Geometry

DEFINITIONS = Path(__file__).parent.parent / "benchmarks.yaml"


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
            choices = sorted([*params, "without"])
            raise UnknownBenchmarkError(f"{defn.name}: unknown parameter {key!r}; {expected_one_of(choices, key)}")
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

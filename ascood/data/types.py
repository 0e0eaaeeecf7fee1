"""What a benchmark is in memory: uint8 image tensors with labels, per split and OOD set.

Kept free of project imports so that every other data module can use these types without
pulling in the registry or any builder.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # (no torch import for a name check: the CLIs' refusals stay fast)
    from torch import Tensor

SETTINGS = ("spurious", "fine-grained", "conventional")


@dataclass(frozen=True)
class Split:
    images: Tensor  # uint8, N×C×H×W
    labels: Tensor  # int64, N (−1 for OOD)

    def __len__(self) -> int:
        return int(self.images.shape[0])


@dataclass(frozen=True)
class OODSet:
    name: str
    group: str
    val: Split
    test: Split


@dataclass(frozen=True)
class Geometry:
    """How stored images become model inputs: `size` is the crop the model sees (None: as
    stored, evaluation takes the centre crop); training takes random crops (after `padding` zero
    pixels) or random resized crops, and flips when `flip`."""

    size: int | None = None
    padding: int = 0
    flip: bool = False
    train: str = "random"  # "random": RandomCrop(size, padding); "resized": RandomResizedCrop(size)


@dataclass(frozen=True)
class BenchmarkData:
    name: str
    setting: str
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    train: Split
    val: Split
    test: Split
    ood: tuple[OODSet, ...]
    embedded: bool = False
    geometry: Geometry = field(default_factory=Geometry)

    def id_split(self, split: str) -> Split:
        return {"train": self.train, "val": self.val, "test": self.test}[split]

    def ood_sets(self, split: str) -> tuple[OODSet, ...]:
        """The OOD sets that have images in `split`: a real benchmark's test-only sets (OpenOOD
        keeps one designated validation OOD set) have none in val."""
        return tuple(o for o in self.ood if len(getattr(o, split)) > 0)

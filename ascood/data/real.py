"""The paper's seven ID benchmarks, registered by name with their setting.

Their loaders (OpenOOD imglists, torchvision layouts, Waterbirds metadata, …) are the subject of
the real-benchmarks issue. Until then a sweep naming one stops before any trial, saying where
the data was looked for.
"""

from __future__ import annotations

from pathlib import Path

from ascood.data.registry import BenchmarkData, DatasetNotFound, register_benchmark

# name → (setting, directory under the data root, description)
REAL_BENCHMARKS = {
    "waterbirds": ("spurious", "waterbirds", "Waterbirds (r = 0.9), 224 px, spurious OOD: bird-free backgrounds"),
    "celeba": ("spurious", "celeba", "CelebA grey hair vs not, environment male; spurious OOD: bald men"),
    "cars": ("fine-grained", "stanford_cars", "Stanford Cars, 150 ID / 46 held-out classes (MixOE split)"),
    "aircraft": ("fine-grained", "fgvc-aircraft", "FGVC-Aircraft, 90 ID / 10 held-out classes (MixOE split)"),
    "cifar10": ("conventional", "cifar10", "CIFAR-10 with OpenOOD v1.5 near/far OOD"),
    "cifar100": ("conventional", "cifar100", "CIFAR-100 with OpenOOD v1.5 near/far OOD"),
    "imagenet100": ("conventional", "imagenet100", "ImageNet-100 (class-list subset of ImageNet-1K)"),
}


def _unavailable(name: str, directory: str):
    def build(seed: int, root: Path) -> BenchmarkData:
        path = Path(root) / directory
        if not path.exists():
            raise DatasetNotFound(
                f"dataset {name} not found at {path} (set data_root in the sweep file, --data-root or ASCOOD_DATA)"
            )
        raise DatasetNotFound(f"dataset {name} found at {path}, but its loader is not implemented yet")

    return build


for _name, (_setting, _dir, _desc) in REAL_BENCHMARKS.items():
    register_benchmark(_name, setting=_setting, description=_desc)(_unavailable(_name, _dir))

"""Main-process cost of one training epoch's batches from an in-memory uint8 split: the batched
fetch (`SplitDataset.__getitems__`, one numpy gather per batch) against B item reads and a stack
(PyTorch's default path), both with the run's sampler and no worker processes.

    python benchmarks/loader_fetch.py [--images 20000] [--size 32] [--batch 128] [--repeats 5]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import torch
from torch.utils.data import DataLoader

from ascood.data.loading import EpochShuffleSampler, SplitDataset, train_loader
from ascood.data.types import Split


class _ItemWise(SplitDataset):
    __getitems__ = None  # the DataLoader then reads items one by one and stacks them


def _epoch(loader) -> float:
    t0 = time.perf_counter()
    for _ in loader:
        pass
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=20000)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--repeats", type=int, default=5)
    args = p.parse_args()
    g = torch.Generator().manual_seed(0)
    split = Split(torch.randint(0, 256, (args.images, 3, args.size, args.size), dtype=torch.uint8, generator=g),
                  torch.arange(args.images))
    batched, _ = train_loader(split, args.batch, seed=0)
    itemwise = DataLoader(_ItemWise(split), batch_size=args.batch, sampler=EpochShuffleSampler(args.images, 0))
    for (xa, ya), (xb, yb) in zip(batched, itemwise, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb), "the two paths give different batches"
    times = {"batched": [], "itemwise": []}
    for _ in range(args.repeats):  # interleaved: machine noise hits both alike
        times["batched"].append(_epoch(batched))
        times["itemwise"].append(_epoch(itemwise))
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"# loader fetch: {args.images} images {args.size}×{args.size}, batch {args.batch}, median of "
          f"{args.repeats}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{platform.processor() or platform.machine()}")
    print("| path | s/epoch | µs/batch |")
    print("|---|---:|---:|")
    n_batches = len(batched)
    for k in ("itemwise", "batched"):
        print(f"| {k} | {med[k]:.3f} | {med[k] / n_batches * 1e6:.0f} |")
    print(f"\nbatched is {med['itemwise'] / med['batched']:.1f}× faster")


if __name__ == "__main__":
    main()

"""Main-process cost of one training epoch's batches from an in-memory uint8 split: the batched
fetch (`SplitDataset.__getitems__`, one numpy gather per batch) against B item reads and a stack
(PyTorch's default path), both with the run's sampler and no worker processes.

    python benchmarks/loader_fetch.py [--images 20000] [--size 32] [--batch 128] [--repeats 5]
        [--work DIR] [--resume] [--table] [--quick]

Each shape (images, size, batch) is a case, one row in `DIR/rows.jsonl` (benchmarks/rows.py);
`--resume` measures only the shapes not there, so a second shape can join the first's table.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import rows

# torch and ascood are imported where they are used: --table and a finished --resume import neither


def _epoch(loader) -> float:
    t0 = time.perf_counter()
    for _ in loader:
        pass
    return time.perf_counter() - t0


def measure(images: int, size: int, batch: int, repeats: int) -> dict:
    import torch
    from torch.utils.data import DataLoader

    from ascood.data.loading import EpochShuffleSampler, SplitDataset, train_loader
    from ascood.data.types import Split

    class _ItemWise(SplitDataset):
        __getitems__ = None  # the DataLoader then reads items one by one and stacks them

    g = torch.Generator().manual_seed(0)
    split = Split(torch.randint(0, 256, (images, 3, size, size), dtype=torch.uint8, generator=g), torch.arange(images))
    batched, _ = train_loader(split, batch, seed=0)
    itemwise = DataLoader(_ItemWise(split), batch_size=batch, sampler=EpochShuffleSampler(images, 0))
    for (xa, ya), (xb, yb) in zip(batched, itemwise, strict=True):
        assert torch.equal(xa, xb) and torch.equal(ya, yb), "the two paths give different batches"
    times: dict[str, list[float]] = {"batched": [], "itemwise": []}
    for _ in range(repeats):  # interleaved: machine noise hits both alike
        times["batched"].append(_epoch(batched))
        times["itemwise"].append(_epoch(itemwise))
    n_batches = len(batched)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"images": images, "size": size, "batch": batch, "repeats": repeats, "batches": n_batches,
            "torch": torch.__version__, "threads": torch.get_num_threads(),
            "s_per_epoch": {k: round(v, 5) for k, v in med.items()},
            "us_per_batch": {k: round(v / n_batches * 1e6, 1) for k, v in med.items()},
            "speedup": round(med["itemwise"] / med["batched"], 2),
            "epochs_s": {k: [round(t, 5) for t in v] for k, v in times.items()}}


def table(rows_: list[dict]) -> str:
    lines = [(r["case"] + (" (quick)" if r.get("quick") else ""),
              f"{r['us_per_batch']['itemwise']:,.0f}", f"{r['us_per_batch']['batched']:,.0f}", f"{r['speedup']:.1f}×")
             for r in rows_]
    return rows.markdown(["images, size, batch", "item-wise µs/batch", "batched µs/batch", "speed-up"], lines, "lrrr")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=20000)
    p.add_argument("--size", type=int, default=32)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--repeats", type=int, default=5)
    rows.add_options(p, "loader-fetch", "512 images, batch 64, one repeat")
    args = p.parse_args(argv)
    if rows.table_only(args, table):
        return 0
    if args.quick:
        args.images, args.batch, args.repeats = 512, 64, 1
    book = rows.Rows(args, free=("images", "size", "batch"))
    key = f"{args.images} images {args.size}×{args.size}, batch {args.batch}"
    book.measure([(key, lambda: measure(args.images, args.size, args.batch, args.repeats))],
                 say=lambda r: f"{r['case']}: batched {r['speedup']:.1f}× faster")
    print(table(book.rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())

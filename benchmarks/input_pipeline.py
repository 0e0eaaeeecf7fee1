"""Input pipeline throughput (images/s): decoding JPEGs every epoch (the reference's way) against
the decoded-image cache, beside the ASCOOD training step that consumes the images.

    python benchmarks/input_pipeline.py [--images 512] [--size 224] [--workers N] [--batch 32]
        [--backbone resnet18] [--work DIR] [--resume] [--table] [--quick]

Writes synthetic JPEGs of a typical photo size (500×375, like CUB and Places) to a temporary
folder, then measures:
  cold     — building the cache once (parallel decode + resize to the decode size, written to disk);
  per-epoch reference — torchvision's PIL pipeline in DataLoader workers (open, Resize,
             RandomResizedCrop, flip, ToTensor, Normalize), what OpenOOD runs every epoch;
  cached   — one epoch from the memory-mapped cache: DataLoader batches + on-device
             RandomResizedCrop/flip + normalization (`Preprocess.train`);
  step     — the ASCOOD training step (ResNet-18, eval-mode saliency) on batches of that size.
Each is a row in `DIR/rows.jsonl` as soon as it is measured (benchmarks/rows.py); `--resume`
measures the missing ones (the JPEGs and the cache are made again for them, unmeasured).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import rows

# torch, PIL and ascood are imported where they are used: --table and a finished --resume import none
PATHS = ("cold", "reference", "cached", "cached+crops", "step")


class _PilDataset:
    def __init__(self, paths: list[Path], transform):
        self.paths, self.transform = paths, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        from PIL import Image

        with Image.open(self.paths[i]) as im:
            return self.transform(im.convert("RGB")), 0


def label(r: dict) -> str:
    s = r["settings"]
    return {
        "cold": f"cold: build the decoded-image cache once ({s['workers']} decode processes, written to disk)",
        "reference": "reference: torchvision PIL pipeline every epoch (Resize, RandomResizedCrop, flip, ToTensor, "
                     f"Normalize; {s['workers']} DataLoader workers)",
        "cached": "cached: an epoch of memory-mapped uint8 batches (main process, no workers)",
        "cached+crops": "cached+crops: the same + RandomResizedCrop/flip/normalize run on the CPU",
        "step": f"step: the ASCOOD training step it feeds ({s.get('backbone', 'resnet18')}, {s['size']} px, eval-mode saliency, "
                f"{r.get('device', 'cpu')})",
    }[r["case"]]


def table(rows_: list[dict]) -> str:
    ref = next((r["images_per_s"] for r in rows_ if r["case"] == "reference"), None)
    lines = [(label(r), f"{r['images_per_s']:,.1f}", f"{r['images_per_s'] / ref:.2f}×" if ref else "–") for r in rows_]
    s = rows_[0]["settings"]
    head = (f"{s['images']} JPEGs 500×375, decode {round(s['size'] * 256 / 224)} px, crop {s['size']} px, "
            f"batch {s['batch']}{', quick' if rows_[0].get('quick') else ''}")
    return head + "\n\n" + rows.markdown(["path", "images/s", "× reference"], lines, "lrr")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--size", type=int, default=224, help="model crop; decode size = size·256/224")
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--step-batches", type=int, default=3)
    ap.add_argument("--backbone", default="resnet18", help="the model of the step")
    rows.add_options(ap, "input-pipeline", "32 images, 32 px crops, batch 8, one step of a small CNN")
    args = ap.parse_args(argv)
    if rows.table_only(args, table):
        return 0
    if args.quick:
        args.images, args.size, args.batch, args.step_batches, args.backbone = 32, 32, 8, 1, "small_cnn"
    book = rows.Rows(args)
    if book.missing(PATHS):
        measure(args, book)
    print(table(book.rows))
    return 0


def measure(args: argparse.Namespace, book: rows.Rows) -> None:
    import numpy as np
    import torch
    from PIL import Image
    from torch.utils.data import DataLoader

    torch.manual_seed(0)

    from torchvision import transforms

    from ascood.config import TrainConfig
    from ascood.data import BenchmarkData, Geometry, Split
    from ascood.data.decode import decode_files
    from ascood.data.loading import Preprocess, train_loader
    from ascood.models import create_model
    from ascood.train import ascood_step, make_accelerator

    def rate(seconds: float, n: int = args.images) -> dict:
        return {"images_per_s": round(n / seconds, 2), "seconds": round(seconds, 4), "images": n}

    decode = int(round(args.size * 256 / 224))
    with tempfile.TemporaryDirectory() as tmp:
        rng = np.random.default_rng(0)
        paths = []
        for i in range(args.images):
            p = Path(tmp) / f"{i}.jpg"
            base = rng.integers(0, 256, (47, 63, 3), dtype=np.uint8)  # smooth-ish content compresses like a photo
            Image.fromarray(base).resize((500, 375), Image.BILINEAR).save(p, quality=90)
            paths.append(p)
        print(f"{args.images} JPEGs 500×375, decode {decode}px, crop {args.size}px, {args.workers} workers, "
              f"{os.cpu_count()} CPUs, torch {torch.__version__}", flush=True)

        def say(r: dict) -> str:
            return f"{r['case']:15s} {r['images_per_s']:8.1f} images/s"

        t = time.perf_counter()
        decoded = decode_files(paths, decode, Path(tmp) / "cache", workers=args.workers)
        cold = time.perf_counter() - t
        book.measure([("cold", lambda: rate(cold))], say)  # made again, not kept, when only later rows are missing

        def reference() -> dict:
            ref_tf = transforms.Compose([
                transforms.Resize(decode), transforms.RandomResizedCrop(args.size), transforms.RandomHorizontalFlip(),
                transforms.ToTensor(), transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
            ])
            loader = DataLoader(_PilDataset(paths, ref_tf), batch_size=args.batch, num_workers=args.workers)
            t = time.perf_counter()
            for _ in loader:
                pass
            return rate(time.perf_counter() - t)

        labels = torch.zeros(len(decoded.kept), dtype=torch.int64)
        split = Split(decoded.images, labels)
        data = BenchmarkData("bench", "spurious", 2, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), split, split, split, (),
                             geometry=Geometry(size=args.size, flip=True, train="resized"))
        pre = Preprocess(data)
        loader, _ = train_loader(split, args.batch, seed=0)
        g = torch.Generator().manual_seed(0)

        def batches() -> dict:
            t = time.perf_counter()
            for _ in loader:
                pass
            return rate(time.perf_counter() - t)

        def crops() -> dict:
            t = time.perf_counter()
            for images, _ in loader:
                pre.train(images, g)
            return rate(time.perf_counter() - t)

        def step() -> dict:
            cfg = TrainConfig(benchmark="mnist10", backbone=args.backbone, batch_size=args.batch, p_inv=0.1,
                              alpha_max=0.1, alpha_min=0.1)
            accelerator = make_accelerator("no")
            model = create_model(args.backbone, num_classes=2)
            opt = torch.optim.SGD(model.parameters(), lr=0.01)
            model, opt = accelerator.prepare(model, opt)
            x = pre.train(decoded.images[: args.batch], g)
            y = torch.zeros(args.batch, dtype=torch.int64)
            times = []
            for _ in range(args.step_batches + 1):
                t = time.perf_counter()
                loss = ascood_step(model, model, x, y, cfg=cfg, alpha=0.1, generator=g, accelerator=accelerator).loss
                accelerator.backward(loss)
                opt.step()
                opt.zero_grad()
                times.append(time.perf_counter() - t)
            return {**rate(float(np.median(times[1:])), args.batch), "device": str(accelerator.device),
                    "step_s": [round(v, 4) for v in times[1:]]}

        book.measure([("reference", reference), ("cached", batches), ("cached+crops", crops), ("step", step)], say)


if __name__ == "__main__":
    sys.exit(main())

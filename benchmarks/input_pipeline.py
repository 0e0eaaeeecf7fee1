"""Input pipeline throughput (images/s): decoding JPEGs every epoch (the reference's way) against
the decoded-image cache, beside the ASCOOD training step that consumes the images.

    python benchmarks/input_pipeline.py [--images 512] [--size 224] [--workers N] [--batch 32]

Writes synthetic JPEGs of a typical photo size (500×375, like CUB and Places) to a temporary
folder, then measures:
  cold     — building the cache once (parallel decode + resize to the decode size, written to disk);
  per-epoch reference — torchvision's PIL pipeline in DataLoader workers (open, Resize,
             RandomResizedCrop, flip, ToTensor, Normalize), what OpenOOD runs every epoch;
  cached   — one epoch from the memory-mapped cache: DataLoader batches + on-device
             RandomResizedCrop/flip + normalization (`Preprocess.train`);
  step     — the ASCOOD training step (ResNet-18, eval-mode saliency) on batches of that size.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset


class _PilDataset(Dataset):
    def __init__(self, paths: list[Path], transform):
        self.paths, self.transform = paths, transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        with Image.open(self.paths[i]) as im:
            return self.transform(im.convert("RGB")), 0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--size", type=int, default=224, help="model crop; decode size = size·256/224")
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--step-batches", type=int, default=3)
    args = ap.parse_args()
    torch.manual_seed(0)

    from torchvision import transforms

    from ascood.config import TrainConfig
    from ascood.data import BenchmarkData, Geometry, Split
    from ascood.data.decode import decode_files
    from ascood.data.loading import Preprocess, train_loader
    from ascood.models import create_model
    from ascood.train import ascood_step, make_accelerator

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
              f"{os.cpu_count()} CPUs, torch {torch.__version__}")

        t = time.perf_counter()
        decoded = decode_files(paths, decode, Path(tmp) / "cache", workers=args.workers)
        cold = args.images / (time.perf_counter() - t)
        print(f"cold (build cache once):     {cold:8.1f} images/s")

        ref_tf = transforms.Compose([
            transforms.Resize(decode), transforms.RandomResizedCrop(args.size), transforms.RandomHorizontalFlip(),
            transforms.ToTensor(), transforms.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        ])
        loader = DataLoader(_PilDataset(paths, ref_tf), batch_size=args.batch, num_workers=args.workers)
        t = time.perf_counter()
        for _ in loader:
            pass
        ref = args.images / (time.perf_counter() - t)
        print(f"per-epoch reference decode:  {ref:8.1f} images/s")

        labels = torch.zeros(len(decoded.kept), dtype=torch.int64)
        split = Split(decoded.images, labels)
        data = BenchmarkData("bench", "spurious", 2, (0.485, 0.456, 0.406), (0.229, 0.224, 0.225), split, split, split, (),
                             geometry=Geometry(size=args.size, flip=True, train="resized"))
        pre = Preprocess(data)
        loader, _ = train_loader(split, args.batch, seed=0)
        g = torch.Generator().manual_seed(0)
        t = time.perf_counter()
        for _ in loader:
            pass
        read = args.images / (time.perf_counter() - t)
        print(f"cached epoch, batches only:  {read:8.1f} images/s")
        t = time.perf_counter()
        for images, _ in loader:
            pre.train(images, g)
        cached = args.images / (time.perf_counter() - t)
        print(f"cached epoch + crops on CPU: {cached:8.1f} images/s")

        cfg = TrainConfig(benchmark="mnist10", backbone="resnet18", batch_size=args.batch, p_inv=0.1,
                          alpha_max=0.1, alpha_min=0.1)
        accelerator = make_accelerator("no")
        model = create_model("resnet18", num_classes=2)
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
        step = args.batch / float(np.median(times[1:]))
        print(f"ASCOOD step (ResNet-18):     {step:8.1f} images/s")
        print(f"cache vs per-epoch decode: {cached / ref:.1f}×; input pipeline / model step: "
              f"cached {cached / step:.1f}×, reference {ref / step:.1f}×")


if __name__ == "__main__":
    main()

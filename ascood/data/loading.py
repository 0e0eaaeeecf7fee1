"""DataLoaders over in-memory uint8 splits, and on-device normalization of a batch."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from ascood.data.augment import center_crop, random_crop_flip, random_resized_crop
from ascood.data.types import BenchmarkData, Split


class SplitDataset(Dataset):
    """A split's in-memory (or memory-mapped) tensors. A batch is one indexing of each tensor
    (`__getitems__`, which the DataLoader prefers), not B item reads and a stack: with no worker
    processes the main process then spends microseconds per batch, not milliseconds."""

    def __init__(self, split: Split):
        self.images = split.images
        self.labels = split.labels

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        return self.images[i], self.labels[i]

    def __getitems__(self, indices: list[int]) -> tuple[Tensor, Tensor]:
        idx = np.asarray(indices, dtype=np.int64)  # numpy's gather: torch's CPU index kernel is ~100× slower on uint8
        return torch.from_numpy(self.images.numpy()[idx]), torch.from_numpy(self.labels.numpy()[idx])


def _batch(batch: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
    """The collate step of an already batched `__getitems__` result."""
    return batch


class EpochShuffleSampler(Sampler[int]):
    """A permutation drawn from (seed, epoch) alone, so a resumed run sees the same order.

    The epoch is set with `use_epoch`, deliberately not `set_epoch`: Accelerate's prepared loader
    calls `set_epoch` with its own iteration count, which restarts at 0 in a resumed process.
    """

    def __init__(self, n: int, seed: int):
        self.n = n
        self.seed = seed
        self.epoch = 0

    def use_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(self.seed * 100_003 + self.epoch)
        return iter(torch.randperm(self.n, generator=g).tolist())

    def __len__(self) -> int:
        return self.n


def train_loader(split: Split, batch_size: int, seed: int, num_workers: int = 0, *,
                 pin_memory: bool = False) -> tuple[DataLoader, EpochShuffleSampler]:
    """Pin only for a CUDA run: pinned batches are what makes the copy to the GPU non-blocking,
    and pinning for a CPU run (even one on a GPU machine) only costs."""
    sampler = EpochShuffleSampler(len(split), seed)
    loader = DataLoader(
        SplitDataset(split), batch_size=batch_size, sampler=sampler, num_workers=num_workers, drop_last=False,
        collate_fn=_batch, pin_memory=pin_memory, persistent_workers=num_workers > 0,
    )
    return loader, sampler


class OutlierBatches:
    """Batches of external outliers for one process, drawn without replacement pass after pass.

    Each epoch's passes are permutations drawn from (seed, epoch, rank, pass) alone, so a resumed
    run draws the same outliers, and each rank of a DDP run its own. Batches are gathered on the
    host (NumPy) and copied to `device` without blocking when pinned.
    """

    def __init__(self, split: Split, batch_size: int, seed: int, rank: int, device: torch.device):
        if len(split) == 0:
            raise ValueError("an outlier set needs at least one image")
        self.images = split.images.numpy()
        self.batch_size = batch_size
        self.seed, self.rank = seed, rank
        self.device = device
        self.pin = device.type == "cuda"

    def epoch(self, epoch: int) -> Iterator[Tensor]:
        """An endless stream of uint8 batches for `epoch` (each pass a fresh permutation)."""
        n, pass_ = len(self.images), 0
        order, at = np.zeros(0, dtype=np.int64), 0
        while True:
            idx = np.empty(0, dtype=np.int64)
            while len(idx) < self.batch_size:
                if at == len(order):
                    state = np.random.SeedSequence([self.seed, epoch, self.rank, pass_]).generate_state(1)[0]
                    g = torch.Generator().manual_seed(int(state))
                    order, at, pass_ = torch.randperm(n, generator=g).numpy(), 0, pass_ + 1
                take = order[at : at + self.batch_size - len(idx)]
                idx, at = np.concatenate([idx, take]), at + len(take)
            batch = torch.from_numpy(self.images[idx])
            if self.pin:
                batch = batch.pin_memory()
            yield batch.to(self.device, non_blocking=self.pin)


def eval_loader(split: Split, batch_size: int, num_workers: int = 0, *, pin_memory: bool = False) -> DataLoader:
    return DataLoader(SplitDataset(split), batch_size=batch_size, shuffle=False, num_workers=num_workers,
                      collate_fn=_batch, pin_memory=pin_memory)


class Normalizer:
    """uint8 images → float, (x/255 − mean)/std per channel, on the batch's device.

    With `channels_last` the result is laid out NHWC in memory (same logical shape), which makes
    convolutions faster on CPU and GPU alike.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], channels_last: bool = False):
        self.mean = torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1)
        self.memory_format = torch.channels_last if channels_last else torch.contiguous_format

    def __call__(self, images: Tensor) -> Tensor:
        if self.mean.device != images.device:
            self.mean, self.std = self.mean.to(images.device), self.std.to(images.device)
        x = (images.float().div_(255.0) - self.mean) / self.std
        return x.contiguous(memory_format=self.memory_format)


class Preprocess:
    """A benchmark's uint8 batches → model inputs: crop/flip per its geometry, then normalize."""

    def __init__(self, data: BenchmarkData, channels_last: bool = False):
        self.geometry = data.geometry
        self.normalize = Normalizer(data.mean, data.std, channels_last)

    def train(self, images: Tensor, generator: torch.Generator | None = None) -> Tensor:
        g = self.geometry
        if g.train == "resized" and g.size is not None:
            images = random_resized_crop(images, g.size, flip=g.flip, generator=generator)
        elif g.size is not None or g.padding or g.flip:
            images = random_crop_flip(images, g.size or images.shape[-1], padding=g.padding, flip=g.flip,
                                      generator=generator)
        return self.normalize(images)

    def eval(self, images: Tensor) -> Tensor:
        if self.geometry.size is not None:
            images = center_crop(images, self.geometry.size)
        return self.normalize(images)

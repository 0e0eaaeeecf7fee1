"""Batch-wise image geometry on the batch's device: the crops and flips of the reference transforms.

Images are stored once at a decode size (e.g. shorter side resized to 256, centre square); the
training crop/flip and the evaluation centre crop then run on uint8 batches where the model runs,
so no worker decodes or resizes a JPEG per epoch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor


def center_crop(images: Tensor, size: int) -> Tensor:
    """The central size×size window of N×C×H×W images (torchvision's rounding)."""
    h, w = images.shape[-2:]
    if (h, w) == (size, size):
        return images
    if size > h or size > w:
        raise ValueError(f"crop size {size} is larger than the stored images ({h}×{w})")
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return images[..., top : top + size, left : left + size]


def random_crop_flip(images: Tensor, size: int, *, padding: int = 0, flip: bool = True,
                     generator: torch.Generator | None = None) -> Tensor:
    """Per-sample random size×size crops (after zero padding) and horizontal flips with p = 0.5.

    Offsets and flips are drawn from `generator` on the images' device, so a resumed run that
    re-seeds the generator sees the same crops.
    """
    if padding:
        images = F.pad(images, (padding, padding, padding, padding))
    n, _, h, w = images.shape
    if size > h or size > w:
        raise ValueError(f"crop size {size} is larger than the padded images ({h}×{w})")
    dev = images.device
    top = torch.randint(0, h - size + 1, (n,), device=dev, generator=generator)
    left = torch.randint(0, w - size + 1, (n,), device=dev, generator=generator)
    rows = top[:, None] + torch.arange(size, device=dev)  # n×size
    cols = left[:, None] + torch.arange(size, device=dev)
    if flip:
        flipped = torch.rand(n, device=dev, generator=generator) < 0.5
        cols = torch.where(flipped[:, None], cols.flip(1), cols)
    batch = torch.arange(n, device=dev)[:, None, None]
    out = images.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # n×size×size×c
    return out.permute(0, 3, 1, 2)


def random_resized_crop(images: Tensor, size: int, *, scale: tuple[float, float] = (0.08, 1.0),
                        ratio: tuple[float, float] = (3 / 4, 4 / 3), flip: bool = True,
                        generator: torch.Generator | None = None) -> Tensor:
    """torchvision's RandomResizedCrop (+ horizontal flip), for a whole batch in one resampling.

    Boxes are drawn as torchvision draws them (10 tries per image of area fraction in `scale` and
    log-uniform aspect ratio in `ratio`, else the whole image); each box is resampled to
    size×size bilinearly (no antialiasing). Returns float images on the 0…255 scale.
    """
    n, _, h, w = images.shape
    dev = images.device
    tries = 10
    area = h * w * (scale[0] + (scale[1] - scale[0]) * torch.rand(n, tries, device=dev, generator=generator))
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])  # Python floats: no tensor copied to the device per step
    aspect = torch.exp(log_lo + (log_hi - log_lo) * torch.rand(n, tries, device=dev, generator=generator))
    bw = torch.sqrt(area * aspect).round()
    bh = torch.sqrt(area / aspect).round()
    ok = (bw > 0) & (bw <= w) & (bh > 0) & (bh <= h)
    first = torch.where(ok.any(1), ok.float().argmax(1), torch.full((n,), -1, device=dev))
    pick = first.clamp(min=0)[:, None]
    bw = torch.where(first >= 0, bw.gather(1, pick)[:, 0], torch.full((n,), float(w), device=dev))
    bh = torch.where(first >= 0, bh.gather(1, pick)[:, 0], torch.full((n,), float(h), device=dev))
    top = torch.floor(torch.rand(n, device=dev, generator=generator) * (h - bh + 1))
    left = torch.floor(torch.rand(n, device=dev, generator=generator) * (w - bw + 1))
    sx = bw / w
    if flip:
        sx = torch.where(torch.rand(n, device=dev, generator=generator) < 0.5, -sx, sx)
    theta = torch.zeros(n, 2, 3, device=dev)
    theta[:, 0, 0] = sx
    theta[:, 0, 2] = (2 * left + bw) / w - 1
    theta[:, 1, 1] = bh / h
    theta[:, 1, 2] = (2 * top + bh) / h - 1
    grid = F.affine_grid(theta, [n, images.shape[1], size, size], align_corners=False)
    return F.grid_sample(images.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)

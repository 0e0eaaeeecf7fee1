"""Schedules: α by epoch, learning rate by step."""

from __future__ import annotations

import math


def alpha_at(epoch: int, epochs: int, alpha_max: float, alpha_min: float) -> float:
    """α for 0-based `epoch` of `epochs`: linear from α_max (epoch 0) towards α_min (epoch E)."""
    return (alpha_max - alpha_min) * (1.0 - epoch / epochs) + alpha_min


def cosine_lr_factor(step: int, total_steps: int, lr: float, lr_min: float = 1e-6) -> float:
    """Multiplier of the base lr at `step`: cosine from 1 down to lr_min/lr over `total_steps`."""
    floor = lr_min / lr
    return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * min(step, total_steps) / total_steps))

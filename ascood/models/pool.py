"""Global average pooling as a plain mean over H and W.

`nn.AdaptiveAvgPool2d(1)` computes the same values, but its CUDA backward accumulates with
atomic adds, so the input gradients (the ASCOOD saliency, ODIN's step) and weight gradients
differ between identical runs; the mean's backward is an exact broadcast.
"""

from __future__ import annotations

from torch import Tensor, nn


class GlobalAvgPool(nn.Module):
    """N×C×H×W → N×C×1×1, as `nn.AdaptiveAvgPool2d(1)` (no parameters: checkpoints are unchanged)."""

    def forward(self, x: Tensor) -> Tensor:
        return x.mean(dim=(2, 3), keepdim=True)

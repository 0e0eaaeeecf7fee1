"""A small CNN for 3×32×32: an epoch of an embedded benchmark in seconds on 2 CPU cores."""

from __future__ import annotations

from torch import Tensor, nn

from ascood.models.pool import GlobalAvgPool


def _block(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True)]


class SmallCNN(nn.Module):
    """Four conv-BN-ReLU stages (16-32-64-128 channels, 2× pooling between), global average pool.

    BatchNorm is kept on purpose: the eval-mode vs train-mode saliency distinction of the method
    only exists with batch statistics.
    """

    feature_dim = 128

    def __init__(self) -> None:
        super().__init__()
        self.features = nn.Sequential(
            *_block(3, 16),
            nn.MaxPool2d(2),
            *_block(16, 32),
            nn.MaxPool2d(2),
            *_block(32, 64),
            nn.MaxPool2d(2),
            *_block(64, 128),
            GlobalAvgPool(),
            nn.Flatten(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x)

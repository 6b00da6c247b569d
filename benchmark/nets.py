"""Network building blocks shared by the trained methods."""

from __future__ import annotations

import torch
from torch import nn


def conv_block(in_channels: int, out_channels: int) -> nn.Sequential:
    """3x3 convolution, batch norm, ReLU, 2x2 max-pool: the block of Vinyals et al. and Snell et al."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
        nn.MaxPool2d(2),
    )


class ConvNet4(nn.Module):
    """Four conv blocks, flattened: the standard few-shot embedding (64 features at 28x28)."""

    def __init__(self, channels: int = 64, blocks: int = 4, in_channels: int = 1):
        super().__init__()
        widths = [in_channels] + [channels] * blocks
        self.blocks = nn.Sequential(*(conv_block(a, b) for a, b in zip(widths, widths[1:])))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.blocks(images).flatten(1)

    @staticmethod
    def output_size(image_size: int, blocks: int = 4) -> int:
        """Spatial size after the blocks (each max-pool floors the size by 2)."""
        for _ in range(blocks):
            image_size //= 2
        return image_size

"""The twin networks of the Siamese method: Koch et al.'s (2015) full-size net and a compact one.

Both map an image to features; the pair head is a dense layer on |h1 - h2| whose logit is
the evidence that two images show the same character (its sigmoid is the probability).
The twins share every weight, so swapping the two inputs gives exactly the same score.
Not registered as a method (the leading underscore keeps the registry from importing it).
"""

from __future__ import annotations

import torch
from torch import nn

from benchmark.nets import ConvNet4

ARCHITECTURES = ("koch", "compact")
KOCH_PARAMETERS = 38_951_745


class KochEmbedding(nn.Module):
    """105x105 -> conv 64@10, pool, conv 128@7, pool, conv 128@4, pool, conv 256@4 -> dense 4096, sigmoid."""

    def __init__(self, image_size: int = 105):
        super().__init__()
        self.convs = nn.ModuleList([nn.Conv2d(1, 64, 10), nn.Conv2d(64, 128, 7),
                                    nn.Conv2d(128, 128, 4), nn.Conv2d(128, 256, 4)])
        side = image_size
        for kernel, pooled in ((10, True), (7, True), (4, True), (4, False)):
            side = side - kernel + 1
            side = side // 2 if pooled else side
        if side < 1:
            raise ValueError(f"image_size {image_size} is too small for the koch architecture (use 105)")
        self.dense = nn.Linear(256 * side * side, 4096)
        self.features = 4096

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images
        for index, conv in enumerate(self.convs):
            x = torch.relu(conv(x))
            if index < 3:
                x = torch.max_pool2d(x, 2)
        return torch.sigmoid(self.dense(x.flatten(1)))

    def layers(self) -> list[nn.Module]:
        return [*self.convs, self.dense]

    def koch_initialise(self, generator: torch.Generator) -> None:
        """The paper's initialisation: conv weights N(0, 0.01), dense N(0, 0.2), biases N(0.5, 0.01)."""
        with torch.no_grad():
            for layer in self.layers():
                std = 0.2 if layer is self.dense else 0.01
                layer.weight.normal_(0.0, std, generator=generator)
                layer.bias.normal_(0.5, 0.01, generator=generator)


class CompactEmbedding(nn.Module):
    """Four 3x3 conv blocks with batch norm (ConvNet4) on a small input: fast on a CPU."""

    def __init__(self, image_size: int = 28, channels: int = 64):
        super().__init__()
        side = ConvNet4.output_size(image_size)
        if side < 1:
            raise ValueError(f"image_size {image_size} is too small for the compact architecture (at least 16)")
        self.body = ConvNet4(channels=channels)
        self.features = channels * side * side

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.body(images)

    def layers(self) -> list[nn.Module]:
        return [block[0] for block in self.body.blocks]


class SiameseNet(nn.Module):
    """Shared twin `embedding` and a dense head on |h1 - h2| giving a same-character logit."""

    def __init__(self, architecture: str, image_size: int, channels: int = 64):
        super().__init__()
        if architecture == "koch":
            self.embedding = KochEmbedding(image_size)
        elif architecture == "compact":
            self.embedding = CompactEmbedding(image_size, channels)
        else:
            raise ValueError(f"unknown architecture {architecture!r}: use one of {', '.join(ARCHITECTURES)}")
        self.head = nn.Linear(self.embedding.features, 1)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.embedding(images)

    def pair_logits(self, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
        """Features (..., d) and (..., d) -> logits (...); symmetric in its two arguments."""
        return self.head((first - second).abs()).squeeze(-1)

    def layers(self) -> list[nn.Module]:
        """The weight-bearing layers in order, for per-layer learning rates and L2."""
        return [*self.embedding.layers(), self.head]

    def is_dense(self, layer: nn.Module) -> bool:
        return isinstance(layer, nn.Linear)


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())

"""Relation Network (Sung, Yang, Zhang, Xiang, Torr & Hospedales, 2018): a learned similarity.

An embedding net keeps feature maps (Sung et al.'s four conv blocks, pooling after the first
two only: 64 x 5 x 5 at 28 x 28), a class is the mean of its support maps (Sung et al. sum
them and train a model for each k; one model trained on 1-shot episodes serves every k here,
and a mean keeps k-shot maps on the scale it learned), and a relation
module (two conv blocks and two linear layers) reads each (class, query) pair of maps,
concatenated, and outputs a relation score in [0, 1], trained towards 1 for the true class
and 0 for the others by mean squared error (the paper's loss). Trained on episodes of the
background alphabets through the shared training loop (protonet's episodes, validation and
schedule: methods/protonet.py).

The relation module's first convolution is linear in the concatenated maps, so it is applied
to each class and each query once and the halves are added per pair (`RelationModule`), which
gives the same numbers as convolving every concatenated pair while computing that layer
N + Q times an episode instead of N x Q times.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.errors import ConfigError
from benchmark.registry import register_method
from methods.protonet import PrototypicalNetwork


def _block(in_channels: int, out_channels: int, padding: int, pool: bool) -> nn.Sequential:
    layers = [nn.Conv2d(in_channels, out_channels, 3, padding=padding), nn.BatchNorm2d(out_channels), nn.ReLU()]
    return nn.Sequential(*layers, *([nn.MaxPool2d(2)] if pool else []))


class RelationModule(nn.Module):
    """(class maps, query maps) -> relation scores: conv block on the concatenated pair, conv
    block, linear 8, linear 1, sigmoid (Sung et al.'s Omniglot module)."""

    def __init__(self, channels: int, hidden: int = 8):
        super().__init__()
        self.pair_conv = nn.Conv2d(2 * channels, channels, 3, padding=1)
        self.pair_rest = nn.Sequential(nn.BatchNorm2d(channels), nn.ReLU(), nn.MaxPool2d(2))
        self.block = _block(channels, channels, padding=1, pool=True)
        self.head = nn.Sequential(nn.Linear(channels, hidden), nn.ReLU(), nn.Linear(hidden, 1))

    def forward(self, classes: torch.Tensor, queries: torch.Tensor) -> torch.Tensor:
        """classes (e, N, C, h, w), queries (e, Q, C, h, w) -> scores (e, Q, N) in [0, 1]."""
        e, n, c, h, w = classes.shape
        q = queries.shape[1]
        weight = self.pair_conv.weight  # (C, 2C, 3, 3): the class half first, as Sung et al. concatenate
        class_part = F.conv2d(classes.reshape(e * n, c, h, w), weight[:, :c], self.pair_conv.bias, padding=1)
        query_part = F.conv2d(queries.reshape(e * q, c, h, w), weight[:, c:], None, padding=1)
        pairs = query_part.view(e, q, 1, c, h, w) + class_part.view(e, 1, n, c, h, w)
        hidden = self.block(self.pair_rest(pairs.reshape(e * q * n, c, h, w)))
        return torch.sigmoid(self.head(hidden.flatten(1))).view(e, q, n)


class RelationNet(nn.Module):
    """Sung et al.'s embedding (flattened maps, so features can be cached per image) and relation module."""

    def __init__(self, channels: int, image_size: int):
        super().__init__()
        self.encoder = nn.Sequential(_block(1, channels, 0, True), _block(channels, channels, 0, True),
                                     _block(channels, channels, 1, False), _block(channels, channels, 1, False))
        self.map_side = ((image_size - 2) // 2 - 2) // 2
        self.channels = channels
        self.relation = RelationModule(channels)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder(images).flatten(1)

    def maps(self, features: torch.Tensor) -> torch.Tensor:
        """(..., C*s*s) -> (..., C, s, s)."""
        return features.reshape(*features.shape[:-1], self.channels, self.map_side, self.map_side)


@register_method("relation")
class RelationNetwork(PrototypicalNetwork):
    """Relation Network (Sung et al. 2018): a learned relation module on concatenated feature maps."""

    # capabilities: protonet's, inherited. The relation module learns from scratch: it needs more
    # steps than protonet to pass the checks.
    CHECK_PARAMS = {"steps": 40, "train_ways": 5, "train_queries": 2, "channels": 16,
                    "validate_every": 20, "validation_episodes": 20}
    # Scores are made per (class, query) pair: 1 MiB of features a chunk keeps the pairs' maps small.
    score_chunk_bytes = 2**20

    def __init__(self, steps: int = 2500, train_ways: int = 20, train_queries: int = 5,
                 learning_rate: float = 1e-3, **kwargs):
        super().__init__(steps=steps, train_ways=train_ways, train_queries=train_queries,
                         learning_rate=learning_rate, **kwargs)

    def build_network(self) -> nn.Module:
        if self.image_size < 22:
            raise ConfigError(f"relation: image_size must be >= 22 (maps of at least 4 x 4 for the relation "
                              f"module's two poolings), got {self.image_size}")
        return RelationNet(self.channels, self.image_size)

    def score(self, query: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
        net = self.network_
        # k-shot: the mean of the class's maps. Sung et al. sum them, with a model trained for each k;
        # a sum of 5 fed to a module trained on single maps scored 15.7% at 20-way 5-shot (commit 11b6685).
        return net.relation(net.maps(support.mean(dim=2)), net.maps(query))

    def episode_loss(self, query: torch.Tensor, support: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        scores = self.score(query, support)[0]
        return F.mse_loss(scores, F.one_hot(labels, scores.shape[-1]).to(scores.dtype))

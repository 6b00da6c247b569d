"""1-nearest-neighbour on raw pixels with L2 distance: the classic pixel baseline."""

from __future__ import annotations

import numpy as np
import torch

from benchmark.api import Capabilities, EmbeddingMethod
from benchmark.registry import register_method


@register_method("nearest_neighbor")
class NearestNeighbor(EmbeddingMethod):
    """1-NN on the 105x105 pixels, L2 distance (k-shot: the nearest of a class's k images)."""

    capabilities = Capabilities(needs_training=False, deterministic=True, uses_gpu=False)

    def __init__(self):
        pass

    def fit(self, training_split, context) -> NearestNeighbor:
        self.reset_embeddings()  # nothing to learn: an empty cache of pixel vectors
        return self

    def embed(self, images: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(images.reshape(len(images), -1).astype(np.float32))

    def score(self, query: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
        # -|q - s|^2 = 2 q.s - |s|^2 - |q|^2; |q|^2 is the same for every class of a query, so
        # it is left out: the ranking, and so the prediction, is unchanged. The pixels are 0/1,
        # so every term is an exact integer in float32 and ties are broken the same everywhere.
        e, n, k, d = support.shape
        flat_support = support.reshape(e, n * k, d)
        dots = torch.bmm(query, flat_support.transpose(1, 2))  # (e, Q, N*k)
        scores = 2 * dots - flat_support.square().sum(-1)[:, None, :]
        return scores.reshape(e, query.shape[1], n, k).amax(-1)

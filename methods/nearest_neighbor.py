"""1-nearest-neighbour on raw pixels with L2 distance: the classic pixel baseline.

The images are 0/1, so every distance is an exact integer: -|q - s|^2 = 2 q.s - |s|^2 - |q|^2,
and |q|^2 is the same for every class of a query, so it is left out (the ranking, and so the
prediction, is unchanged). Two ways compute the same integers:

- **Gram table** (pools of at most `GRAM_MAX_IMAGES` images, such as Lake's evaluation split):
  every image's dot product with every other one, once per pool, by an int8 matrix product
  with int32 sums, kept as int16 (a dot product is at most 105 * 105 = 11025). Each episode is
  then a lookup. The default sweep asks for 83 million (query, support) pairs of 13,180 images:
  gathering each episode's 11,025 pixels per image and multiplying them again took 42-50 s
  on 2 cores; the table takes a few seconds (perf/README.md, "1-NN at scale").
- **Per episode** (larger pools, such as the Vinyals test split's 33,840 rotated images, whose
  table would not fit the memory budget): `score_by_embedding` gathers pixel vectors and
  multiplies them batch by batch.

Both give identical scores (tests/test_methods_baseline.py), so a prediction never depends on
which one ran.
"""

from __future__ import annotations

import numpy as np
import torch

from benchmark.api import Capabilities, EmbeddingMethod, EpisodeBatch
from benchmark.registry import register_method

# 16,384^2 int16 is 512 MiB: Lake's evaluation split (13,180 images) fits, a rotated split does not.
GRAM_MAX_IMAGES = 16_384
GRAM_ROWS_PER_BLOCK = 2048  # rows of the table made per matrix product (int32 temporaries of ~100 MB)
EPISODES_PER_LOOKUP = 256


def int_gram(pixels: torch.Tensor) -> torch.Tensor:
    """(n, d) 0/1 int8 -> (n, n) int16 table of exact dot products.

    The table is symmetric: each block of rows is multiplied only by the columns from its own
    diagonal on, and mirrored, which halves the products."""
    n = len(pixels)
    table = torch.empty((n, n), dtype=torch.int16)
    columns = pixels.T.contiguous()
    for start in range(0, n, GRAM_ROWS_PER_BLOCK):
        rows = pixels[start:start + GRAM_ROWS_PER_BLOCK]
        block = _int_matmul(rows, columns[:, start:].contiguous()).to(torch.int16)
        table[start:start + len(rows), start:] = block
        table[start:, start:start + len(rows)] = block.T
    return table


def _int_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    try:  # int8 x int8 -> int32 (VNNI / AVX2 kernels): exact, and 4 times faster than float32 here
        return torch._int_mm(a, b)
    except (AttributeError, RuntimeError):  # a torch without it: float32 is exact below 2^24
        return (a.float() @ b.float()).round().int()


@register_method("nearest_neighbor")
class NearestNeighbor(EmbeddingMethod):
    """1-NN on the 105x105 pixels, L2 distance (k-shot: the nearest of a class's k images)."""

    capabilities = Capabilities(needs_training=False, deterministic=True, uses_gpu=False)

    def __init__(self):
        pass

    def fit(self, training_split, context) -> NearestNeighbor:
        self.reset_embeddings()  # nothing to learn: an empty cache of pixel vectors
        self.gram_ = None  # (images_key, table, squared norms), made by the first batch of a pool
        return self

    def predict(self, batch: EpisodeBatch) -> np.ndarray:
        self.check_is_fitted("embeddings_")
        if len(batch.images) > GRAM_MAX_IMAGES:
            return super().predict(batch)
        table, norms = self._gram_for(batch)
        e, n, k = batch.support.shape
        scores = np.empty(batch.score_shape, np.float32)
        for start in range(0, e, EPISODES_PER_LOOKUP):
            part = slice(start, start + EPISODES_PER_LOOKUP)
            query = torch.from_numpy(batch.query[part].astype(np.int64))
            support = torch.from_numpy(batch.support[part].reshape(-1, n * k).astype(np.int64))
            dots = table[query[:, :, None], support[:, None, :]].int()  # (e, Q, N*k)
            distances = 2 * dots - norms[support][:, None, :]
            scores[part] = distances.reshape(len(query), -1, n, k).amax(-1).float().numpy()
        return scores

    def _gram_for(self, batch: EpisodeBatch) -> tuple[torch.Tensor, torch.Tensor]:
        if self.gram_ is None or self.gram_[0] != batch.images_key:
            self.gram_ = None  # free the old pool's table before making the new one
            pixels = torch.from_numpy(np.asarray(batch.images).reshape(len(batch.images), -1).astype(np.int8))
            table = int_gram(pixels)
            self.gram_ = (batch.images_key, table, table.diagonal().int())
        return self.gram_[1], self.gram_[2]

    def embed(self, images: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(images.reshape(len(images), -1).astype(np.float32))

    def score(self, query: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
        # The per-episode way, for pools too large for a Gram table (see the module's docstring).
        e, n, k, d = support.shape
        flat_support = support.reshape(e, n * k, d)
        dots = torch.bmm(query, flat_support.transpose(1, 2))  # (e, Q, N*k)
        scores = 2 * dots - flat_support.square().sum(-1)[:, None, :]
        return scores.reshape(e, query.shape[1], n, k).amax(-1)

"""An example plugin: cosine similarity between downsampled pixel images.

Run it next to a built-in method:

    python run_benchmark.py --plugin examples/cosine_pixels.py --methods cosine_pixels,nearest_neighbor

A plugin is one file: a `Method` subclass registered under a name. This one is an
`EmbeddingMethod`, so it only says how to turn images into features (`embed`) and how to
score queries against supports (`score`); the base class embeds every image once and
gathers episodes by index. The contract test (`examples/test_cosine_pixels.py`) runs
`benchmark.checks.check_method` on it.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from benchmark.api import Capabilities, EmbeddingMethod, FitContext
from benchmark.errors import ConfigError
from benchmark.registry import register_method


@register_method("cosine_pixels")
class CosinePixels(EmbeddingMethod):
    """Cosine similarity of ink density on a size x size grid, against each class's mean."""

    # Nothing to train, no GPU needed, same scores every time.
    capabilities = Capabilities(needs_training=False, deterministic=True, uses_gpu=False)
    # Small hyperparameters for the contract check would go here (e.g. {"steps": 5} for a
    # trained method); this one is fast as it is.
    CHECK_PARAMS: dict = {}

    def __init__(self, size: int = 21):
        # Store hyperparameters unchanged and do nothing else (the contract checks it);
        # they can be set from the config: --set methods.cosine_pixels.size=15
        self.size = size

    def fit(self, training_split, context: FitContext) -> CosinePixels:
        # Validate hyperparameters here, not in __init__. Fitted state ends in an underscore.
        if not 1 <= self.size <= 105:
            raise ConfigError(f"methods.cosine_pixels.size must be between 1 and 105, got {self.size}")
        self.grid_ = (self.size, self.size)  # nothing to learn from the training alphabets
        self.reset_embeddings()  # an EmbeddingMethod's fit ends here: predict works from now on
        return self

    def embed(self, images: np.ndarray) -> torch.Tensor:
        """(n, 105, 105) uint8 ink -> (n, size*size) unit vectors of ink density."""
        ink = torch.from_numpy(images.astype(np.float32))[:, None]  # a copy: the input stays read-only
        density = F.adaptive_avg_pool2d(ink, self.grid_).flatten(1)
        return F.normalize(density, dim=1)

    def score(self, query: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
        """query (e, Q, d), support (e, N, k, d) -> (e, Q, N) cosine similarity to class means."""
        prototypes = F.normalize(support.mean(dim=2), dim=-1)  # (e, N, d)
        return torch.bmm(query, prototypes.transpose(1, 2))

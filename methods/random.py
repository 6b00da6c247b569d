"""Random guessing: the floor every method must beat (accuracy 1/N)."""

from __future__ import annotations

import numpy as np

from benchmark.api import Capabilities, EpisodeBatch, Method
from benchmark.registry import register_method


@register_method("random")
class RandomGuess(Method):
    """Uniform random scores, seeded: accuracy 1/N by construction."""

    capabilities = Capabilities(needs_training=False, deterministic=True, uses_gpu=False)
    # Rules of the method contract (benchmark/checks.py) that a chance baseline cannot meet.
    CHECK_SKIP = {"relabel_equivariant": "scores are seeded from the whole batch, so relabelling "
                                         "the supports draws new ones",
                  "inductive": "scores are seeded from the whole batch, so other queries draw other "
                               "noise; no image informs them",
                  "above_chance": "a chance baseline"}

    def __init__(self, seed: int | None = None):
        self.seed = seed  # None: use the run's seed

    def fit(self, training_split, context) -> RandomGuess:
        self.seed_ = context.seed if self.seed is None else self.seed
        return self

    def predict(self, batch: EpisodeBatch) -> np.ndarray:
        self.check_is_fitted("seed_")
        # Seeded by the episodes themselves, so the scores do not depend on the order of calls.
        rng = np.random.default_rng([self.seed_, batch.fingerprint()])
        return rng.random(batch.score_shape, dtype=np.float32)

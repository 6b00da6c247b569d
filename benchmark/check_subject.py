"""The method under a contract check (benchmark/checks.py): its class, its check
hyperparameters and fresh synthetic data, and how a rule fits it, asks it for scores and
reports what it broke."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from benchmark.api import EpisodeBatch, FitContext, checked_scores
from benchmark.errors import MethodError
from benchmark.synthetic import synthetic_splits
from tasks.episodes import generate

CHECK_SEED = 0


class CheckFailure(AssertionError):
    """A method broke a rule of the contract; `rule` and `method` say which and who."""

    def __init__(self, method: str, rule: str, detail: str):
        super().__init__(f"method {method!r} breaks the contract rule {rule!r}: {detail}")
        self.method = method
        self.rule = rule


@dataclass
class Subject:
    """A method class under check, with its check hyperparameters and fresh synthetic data."""

    cls: type
    params: dict
    device: str = "cpu"
    background: Any = field(init=False, repr=False)
    evaluation: Any = field(init=False, repr=False)

    def __post_init__(self):
        self.background, self.evaluation = synthetic_splits()

    @property
    def label(self) -> str:
        return getattr(self.cls, "name", "") or getattr(self.cls, "__qualname__", repr(self.cls))

    def fail(self, rule: str, detail: str):
        raise CheckFailure(self.label, rule, detail)

    def new(self, rule: str):
        try:
            return self.cls(**self.params)
        except Exception as error:
            self.fail(rule, f"the constructor raised {type(error).__name__}: {error}")

    def fit(self, method, rule: str):
        """`method.fit` as the runner calls it: torch's global generator seeded first (plugins
        often use it for layer initialisation); fork_rng leaves the caller's generator as it was."""
        context = FitContext(device=self.device, seed=CHECK_SEED, progress=False, checkpoints=None,
                             retrain=True, log=lambda message: None)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(CHECK_SEED)
            try:
                return method.fit(self.background, context)
            except Exception as error:
                self.fail(rule, f"fit raised {type(error).__name__}: {error}")

    def fitted(self, rule: str):
        """A new instance, fitted; `fit` must return it."""
        method = self.new(rule)
        if self.fit(method, rule) is not method:
            self.fail(rule, "fit must end with `return self`")
        return method

    def batch(self, n_way: int, k_shot: int, episodes: int = 2, n_query: int = 2):
        split = self.evaluation
        tasks = generate(split.alphabet, split.sha256, "cross", n_way, k_shot, n_query, episodes,
                         seed=1000 * n_way + k_shot)
        return EpisodeBatch(split.flat_images, tasks.support.copy(), tasks.query.copy(), split.sha256), tasks

    def predict(self, method, batch: EpisodeBatch, rule: str) -> np.ndarray:
        where = f"{batch.n_way}-way {batch.k_shot}-shot"
        try:
            return checked_scores(method.predict(batch), batch)
        except MethodError as error:
            self.fail(rule, str(error))
        except Exception as error:
            self.fail(rule, f"predict raised {type(error).__name__} on {where} episodes: {error}")

    def data_digests(self) -> dict[str, str]:
        arrays = {"training images": self.background.images, "training alphabets": self.background.alphabet,
                  "training characters": self.background.character, "evaluation images": self.evaluation.images}
        return {name: hashlib.sha256(np.ascontiguousarray(a).tobytes()).hexdigest() for name, a in arrays.items()}

"""What every trained method shares: a validation hold-out, images on the device, validation
by one-shot episodes, keeping the best weights, and the checkpoint cache.

Training sees the background split only. Some background alphabets are held out to choose
the checkpoint and to stop early; the evaluation alphabets are never touched.
"""

from __future__ import annotations

import copy
import time
import warnings
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from benchmark.api import EpisodeBatch, FitContext
from benchmark.checkpoints import load_state_into
from tasks import episodes as episode_sets

VALIDATION_WAYS = 20


def split_background(background, validation_alphabets: int):
    """(train, validation) splits of the background alphabets.

    The held-out alphabets are spread evenly over the sorted names of those with at least
    VALIDATION_WAYS characters (so 20-way within-alphabet validation is possible). The choice
    does not depend on the training seed: every seed is validated on the same alphabets.
    """
    if validation_alphabets <= 0:
        return background, None
    names, counts = np.unique(background.alphabet, return_counts=True)
    eligible = [str(n) for n, c in zip(names, counts) if c >= VALIDATION_WAYS] or [str(n) for n in names]
    if validation_alphabets >= len(names):
        raise ValueError(f"cannot hold out {validation_alphabets} of {len(names)} background alphabets")
    positions = np.linspace(0, len(eligible) - 1, min(validation_alphabets, len(eligible))).round().astype(int)
    held_out = [eligible[p] for p in positions]
    kept = [str(n) for n in names if str(n) not in held_out]
    return (background.subset(kept, f"{background.name}[train]"),
            background.subset(held_out, f"{background.name}[validation]"))


def resize_images(images: np.ndarray | torch.Tensor, size: int, device="cpu",
                  chunk: int = 4096) -> torch.Tensor:
    """(n, 105, 105) 0/1 ink -> (n, 1, size, size) float32 in [0, 1], area-averaged.

    Averaging keeps thin strokes visible when shrinking (nearest-neighbour sampling drops them).
    """
    if isinstance(images, np.ndarray):
        with warnings.catch_warnings():  # splits are read-only; each chunk is copied below, never written
            warnings.simplefilter("ignore", UserWarning)
            images = torch.as_tensor(images)
    out = []
    for start in range(0, len(images), chunk):
        part = images[start:start + chunk].to(device=device, dtype=torch.float32).unsqueeze(1)
        out.append(part if size == part.shape[-1] else F.interpolate(part, size=(size, size), mode="area"))
    return torch.cat(out) if out else torch.zeros((0, 1, size, size), device=device)


def split_tensor(split, size: int, device="cpu") -> torch.Tensor:
    """All images of a split as (characters, 20, 1, size, size) float32 on `device`."""
    flat = resize_images(split.flat_images, size, device)
    return flat.reshape(split.n_characters, 20, 1, size, size)


@dataclass
class Validator:
    """Fixed 20-way (or fewer) within-alphabet one-shot episodes on the held-out alphabets."""

    split: object
    episodes: int = 200
    seed: int = 12345
    _set: object = field(init=False, default=None)

    def __post_init__(self):
        largest = episode_sets.max_n_way(self.split.alphabet, "within")
        self._set = episode_sets.generate(self.split.alphabet, self.split.sha256, "within",
                                          min(VALIDATION_WAYS, largest), 1, 1, self.episodes, self.seed)

    def accuracy(self, method) -> float:
        """One-shot accuracy of `method` (its current weights) on the validation episodes."""
        method._embedding_cache = None  # embeddings of earlier weights are stale
        batch = EpisodeBatch(self.split.flat_images, self._set.support, self._set.query,
                             f"validation:{self.split.sha256}")
        scores = method.predict(batch)
        method._embedding_cache = None
        return float(np.mean(scores.argmax(-1) == self._set.query_label))


@dataclass
class BestKeeper:
    """Keeps the weights with the best validation accuracy; says when to stop early."""

    patience: int  # evaluations without improvement before stopping; 0 = never stop early
    best_accuracy: float = -1.0
    best_step: int = 0
    best_state: dict | None = None
    evaluations_since_best: int = 0

    def update(self, accuracy: float, step: int, module: torch.nn.Module) -> bool:
        """Record an evaluation; return True when training should stop."""
        if accuracy > self.best_accuracy:
            self.best_accuracy, self.best_step = accuracy, step
            self.best_state = copy.deepcopy(module.state_dict())
            self.evaluations_since_best = 0
        else:
            self.evaluations_since_best += 1
        return self.patience > 0 and self.evaluations_since_best >= self.patience


def load_or_train(method, context: FitContext, module: torch.nn.Module, key: str, train) -> dict:
    """Load `module`'s weights from the checkpoint cache, or call `train()` and cache them.

    `train()` trains `module` in place and returns a dict of plain facts about the training
    (steps, best validation accuracy, seconds); the facts are stored with the weights and
    returned either way, so a run from cache reports how its weights were made.
    """
    store = context.checkpoints
    if store is not None and not context.retrain:
        state = store.load(method.name, key)
        if state is not None and load_state_into(module, state.get("weights"), log=context.log):
            info = dict(state.get("info", {}), from_checkpoint=str(store.path(method.name, key)))
            context.log(f"{method.name}: loaded trained weights from {info['from_checkpoint']}")
            return info
    started = time.perf_counter()
    info = dict(train())
    info.setdefault("train_seconds", round(time.perf_counter() - started, 2))
    if store is not None:
        weights = {k: v.detach().cpu() for k, v in module.state_dict().items()}
        path = store.save(method.name, key, {"weights": weights, "info": info})
        context.log(f"{method.name}: saved trained weights to {path}")
    return info


def seeded_generator(seed: int, device) -> torch.Generator:
    """A torch generator on `device`: batches and augmentations are reproducible per seed."""
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator

"""The one training loop every trained method uses, and what goes with it.

Read top to bottom: a method builds its network, optimiser and a `step_loss(step)` function
(sample a batch on the device, forward, return the loss), then calls

    info = load_or_train(self, context, network, params, training_split, VERSION,
                         lambda: train(self.name, network, optimiser, step_loss, schedule,
                                       validate_every=..., validate=validator_fn))

`load_or_train` looks the weights up in the checkpoint cache (keyed by the method's name,
the hyperparameters that shape the weights, the seed, the training data's sha256 and
VERSION) and only trains when they are not there. `train` runs the steps: it sets every
learning rate from the one schedule function (`learning_rate_factor`), steps the
optimiser, validates every `validate_every` steps and at the end, keeps the best weights,
stops early after `patience` validations without improvement, and shows one progress bar.

Training sees the training split only. Some of its classes are held out to validate
(`split_background`: whole alphabets, or the validation list a split names, as Vinyals et
al.'s `val`); the test classes are never touched.
"""

from __future__ import annotations

import copy
import math
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from benchmark.api import EMBED_BATCH_SIZES, SCORE_CHUNK_BYTES, EpisodeBatch, FitContext, score_by_embedding
from benchmark.checkpoints import checkpoint_key, load_state_into
from benchmark.shipped_weights import code_fingerprint
from benchmark.errors import BenchmarkError, MethodError
from tasks import episodes as episode_sets

VALIDATION_WAYS = 20
LR_SCHEDULES = ("constant", "cosine", "step", "exponential")
PROGRESS_EVERY = 50  # steps between loss readings for the progress bar (each one waits for the device)


# ---- data for training -------------------------------------------------------------------

def split_background(background, validation_alphabets: int):
    """(train, validation) splits of the training split; validation is None for 0.

    A training split that names its own validation classes (the Vinyals split's `val`) is split
    that way, whatever the number. Otherwise `validation_alphabets` alphabets are held out,
    spread evenly over the sorted names of those with at least VALIDATION_WAYS characters (so
    20-way within-alphabet validation is possible). The choice does not depend on the training
    seed: every seed is validated on the same classes.
    """
    if validation_alphabets <= 0:
        return background, None
    named = background.held_out() if hasattr(background, "held_out") else None
    if named is not None:
        return named
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
    out = []
    for start in range(0, len(images), chunk):
        part = images[start:start + chunk]  # a numpy array, a tensor, or rotated images read as numpy
        if not isinstance(part, torch.Tensor):
            with warnings.catch_warnings():  # splits are read-only; the chunk is copied below, never written
                warnings.simplefilter("ignore", UserWarning)
                part = torch.as_tensor(part)
        part = part.to(device=device, dtype=torch.float32).unsqueeze(1)
        out.append(part if size == part.shape[-1] else F.interpolate(part, size=(size, size), mode="area"))
    return torch.cat(out) if out else torch.zeros((0, 1, size, size), device=device)


def split_tensor(split, size: int, device="cpu") -> torch.Tensor:
    """All images of a split as (characters, 20, 1, size, size) float32 on `device`."""
    flat = resize_images(split.flat_images, size, device)
    return flat.reshape(split.n_characters, 20, 1, size, size)


def seeded_generator(seed: int, device) -> torch.Generator:
    """A torch generator on `device`: batches and augmentations are reproducible per seed."""
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator


# ---- validation and keeping the best weights ---------------------------------------------

class Validator:
    """Fixed 20-way (or fewer) within-alphabet one-shot episodes on the held-out alphabets."""

    def __init__(self, split, episodes: int = 200, seed: int = 12345):
        largest = episode_sets.max_n_way(split.alphabet, "within")
        tasks = episode_sets.generate(split.alphabet, split.sha256, "within", min(VALIDATION_WAYS, largest),
                                      1, 1, episodes, seed)
        self.batch = EpisodeBatch(split.flat_images, tasks.support, tasks.query, f"validation:{split.sha256}")
        self.labels = tasks.query_label

    def accuracy(self, scorer) -> float:
        """One-shot accuracy of `scorer`'s current weights: anything with `embed(images)` and
        `score(query, support)` as an EmbeddingMethod has them (its own feature cache is not
        used: the weights change between validations)."""
        scores = score_by_embedding(self.batch, scorer.embed, scorer.score, None,
                                    getattr(scorer, "embed_batch_sizes", EMBED_BATCH_SIZES),
                                    getattr(scorer, "score_chunk_bytes", SCORE_CHUNK_BYTES),
                                    getattr(scorer, "score_needs_grad", False))
        return float(np.mean(scores.argmax(-1) == self.labels))


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


# ---- the learning rate -------------------------------------------------------------------

@dataclass(frozen=True)
class Schedule:
    """How the learning rates move over the steps (see `learning_rate_factor`)."""

    steps: int
    shape: str = "cosine"  # one of LR_SCHEDULES
    warmup_steps: int = 0  # a linear ramp from 1/warmup_steps to 1, multiplying the decay
    decay_start: int = 0  # the decay runs from this step to the last (0: the whole budget)
    final_factor: float = 0.0  # cosine: the factor it ends at
    steps_per_epoch: int = 1  # exponential: the steps of one pass over the training images
    decay_per_epoch: float = 0.01  # exponential: the share lost per epoch (Koch et al.: 1%)


def learning_rate_factor(step: int, schedule: Schedule) -> float:
    """The multiplier of every base learning rate at `step` (0-based): the only LR formula."""
    warm = min(1.0, (step + 1) / schedule.warmup_steps) if schedule.warmup_steps > 0 else 1.0
    span = max(1, schedule.steps - schedule.decay_start)
    elapsed = min(max(0, step - schedule.decay_start), span)
    if schedule.shape == "cosine":
        final = schedule.final_factor
        return warm * (final + (1 - final) * 0.5 * (1 + math.cos(math.pi * elapsed / span)))
    if schedule.shape == "step":  # halve four times, evenly over the decay
        return warm * 0.5 ** min(4, 5 * elapsed // span)
    if schedule.shape == "exponential":
        return warm * (1 - schedule.decay_per_epoch) ** (elapsed / schedule.steps_per_epoch)
    if schedule.shape == "constant":
        return warm
    raise ValueError(f"unknown learning-rate schedule {schedule.shape!r}: use one of {', '.join(LR_SCHEDULES)}")


# ---- the loop ------------------------------------------------------------------------------

def train(label: str, module: torch.nn.Module, optimizer: torch.optim.Optimizer,
          step_loss: Callable[[int], torch.Tensor], schedule: Schedule, context: FitContext, *,
          validate: Callable[[], float] | None = None, validate_every: int = 0, patience: int = 0) -> dict:
    """Train `module` in place for `schedule.steps` steps; keep the weights that validate best.

    Each step sets the learning rates (base rate x `learning_rate_factor`), computes
    `step_loss(step)` (0-based), and steps the optimiser. `validate()` returns the accuracy of
    the current weights; it runs every `validate_every` steps and after the last, and the best
    weights are restored at the end (without it, the last weights stay); after each one,
    `context.on_validation(step, accuracy)` is called when set. Returns plain facts for the
    checkpoint and run.json; its times leave out the time spent validating.
    """
    base_rates = [group["lr"] for group in optimizer.param_groups]
    keeper = BestKeeper(patience if validate else 0)
    loss_sum, loss_count, history = torch.zeros(()), 0, []
    progress = context.progress
    bar = tqdm(total=schedule.steps, desc=f"{label}: training", unit="step", disable=not progress,
               leave=False, file=sys.stderr)
    started, validating, step = time.perf_counter(), 0.0, 0
    module.train()
    for step in range(1, schedule.steps + 1):
        factor = learning_rate_factor(step - 1, schedule)
        for group, base in zip(optimizer.param_groups, base_rates):
            group["lr"] = base * factor
        loss = _checked_step(label, step, step_loss, optimizer)
        loss_sum = loss_sum.to(loss.device) + loss
        loss_count += 1
        bar.update(1)
        if validate and ((validate_every and step % validate_every == 0) or step == schedule.steps):
            validation_started = time.perf_counter()
            accuracy = validate()
            if context.on_validation is not None:
                context.on_validation(step, accuracy)
            module.train()
            validating += time.perf_counter() - validation_started
            history.append({"step": step, "loss": round(loss_sum.item() / loss_count, 4),
                            "validation_accuracy": round(accuracy, 4),
                            "train_seconds": round(time.perf_counter() - started - validating, 1)})
            loss_sum, loss_count = torch.zeros((), device=loss.device), 0
            bar.set_postfix(loss=f"{history[-1]['loss']:.3f}", val=f"{accuracy:.3f}",
                            best=f"{max(keeper.best_accuracy, accuracy):.3f}")
            if keeper.update(accuracy, step, module):
                break
        elif progress and step % PROGRESS_EVERY == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    # Reading the loss waits for the device, so on a GPU the time below includes every step.
    final_loss = loss_sum.item() / loss_count if loss_count else (history[-1]["loss"] if history else math.nan)
    seconds = time.perf_counter() - started - validating
    if keeper.best_state is not None:
        module.load_state_dict(keeper.best_state)
    module.eval()
    info = {"steps": step, "final_loss": round(final_loss, 4), "train_seconds": round(seconds, 2),
            "validation_seconds": round(validating, 2), "seconds_per_step": round(seconds / max(step, 1), 4)}
    if validate:
        info.update(best_step=keeper.best_step, best_validation_accuracy=round(keeper.best_accuracy, 4),
                    history=history)
    return info


def train_episodic(method, module: torch.nn.Module, step_loss: Callable[[int], torch.Tensor], schedule: Schedule,
                   context: FitContext, validation_split, *, patience: int = 0) -> dict:
    """`train` as the episodic methods (protonet and its subclasses, maml) run it: Adam at
    `method.learning_rate`, and, when `validation_split` is not None, `method.validation_episodes`
    20-way within-alphabet episodes of it predicted by the method every `method.validate_every`
    steps, the best validation logged in one line."""
    validate = None
    if validation_split is not None:
        validator = Validator(validation_split, episodes=method.validation_episodes)
        validate = lambda: validator.accuracy(method)  # noqa: E731 -- predicts in eval mode
    optimizer = torch.optim.Adam(module.parameters(), lr=method.learning_rate)
    info = train(method.name, module, optimizer, step_loss, schedule, context, validate=validate,
                 validate_every=method.validate_every, patience=patience)
    if validate is not None:
        info["validation_alphabets"] = validation_split.alphabets()
        context.log(f"{method.name}: best validation accuracy {info['best_validation_accuracy']:.3f} "
                    f"(20-way within-alphabet episodes of {validation_split.name}) at step {info['best_step']}")
    return info


def _checked_step(label: str, step: int, step_loss, optimizer) -> torch.Tensor:
    """One optimiser step; a method's own error comes out as one line naming it and the step."""
    try:
        loss = step_loss(step - 1)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    except BenchmarkError:
        raise
    except Exception as error:
        raise MethodError(f"{label}: training failed at step {step}: {type(error).__name__}: {error}") from error
    return loss.detach()


# ---- the checkpoint cache ------------------------------------------------------------------

def load_or_train(method, context: FitContext, module: torch.nn.Module, params: dict, training_split,
                  version: int, train_fn: Callable[[], dict]) -> dict:
    """Load `module`'s weights from the checkpoint cache or the shipped weights, or call
    `train_fn()` and cache them.

    The key is the method's name, `params` (the hyperparameters that shape the weights), the
    training seed, the training split's sha256 and `version`. Cached weights are used only when
    the training code that made them is today's (`shipped_weights.code_fingerprint`: the method's
    module and the project modules it imports); shipped ones (weights/) only when, besides,
    their file hashes to its manifest entry. `train_fn()` trains `module` in place and returns
    plain facts about the training; they are stored with the weights and returned either way,
    with `weights` saying where they came from ("cached", "shipped" or "trained") and the
    `checkpoint_key`.
    """
    key = checkpoint_key(method.name, params, context.seed, training_split.sha256, version=version)
    fingerprint = code_fingerprint(type(method).__module__)
    if not context.retrain:
        for source, store in (("cached", context.checkpoints), ("shipped", context.shipped_weights)):
            info = _loaded(method.name, key, fingerprint, source, store, module, context.log)
            if info is not None:
                return dict(info, checkpoint_key=key)
    started = time.perf_counter()
    info = dict(train_fn())
    info.setdefault("train_seconds", round(time.perf_counter() - started, 2))
    info["training_code"] = fingerprint
    if context.checkpoints is not None:
        weights = {k: v.detach().cpu() for k, v in module.state_dict().items()}
        path = context.checkpoints.save(method.name, key, {"weights": weights, "info": info})
        context.log(f"{method.name}: saved trained weights to {path}")
    return dict(info, weights="trained", checkpoint_key=key)


def _loaded(name, key, fingerprint, source, store, module, log) -> dict | None:
    """The stored info after loading `store`'s weights for `key` into `module`, or None."""
    state = store.load(name, key) if store is not None else None
    if state is None:
        return None
    info = state.get("info", {})
    if info.get("training_code") != fingerprint:
        log(f"{name}: {source} weights {store.path(name, key)} were trained by other training code; "
            f"not used")
        return None
    if not load_state_into(module, state.get("weights"), log=log):
        return None
    log(f"{name}: loaded {source} weights from {store.path(name, key)}")
    return dict(info, from_checkpoint=str(store.path(name, key)), weights=source)

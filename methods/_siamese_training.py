"""The training loop of the Siamese method: batches sampled on the device, pair losses, the
two optimiser recipes and their learning-rate schedules.

Two ways to turn a batch into training signal:
- `koch`: half the pairs show one character twice (two different drawings), half show two
  characters; each image is in one pair (Koch et al. 2015, and the Keras tutorial).
- `all`: the batch holds a few drawings of each of several characters and every pair of
  images in it is scored, positives and negatives weighted equally. The same forward and
  backward pass then trains on B(B-1)/2 pairs instead of B/2, which is what lets a small
  network learn within minutes on a CPU.
"""

from __future__ import annotations

import math
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from tqdm import tqdm

from benchmark.augment import random_affine
from benchmark.training import BestKeeper

PAIRINGS = ("all", "koch")
RECIPES = ("adam", "sgd")
SCHEDULES = ("constant", "cosine", "exponential")
MOMENTUM_START, MOMENTUM_RAMP_EPOCHS = 0.5, 10  # Koch: momentum rises linearly from 0.5


@dataclass(frozen=True)
class TrainSettings:
    steps: int
    batch_images: int
    drawings_per_character: int
    pairing: str
    recipe: str
    learning_rate: float
    lr_schedule: str
    warmup_steps: int
    lr_decay_per_epoch: float
    momentum: float
    layer_learning_rates: tuple[float, ...]
    l2_conv: float
    l2_dense: float
    augment_probability: float
    validate_every: int
    patience: int
    compile: bool


def sample_batch(data: torch.Tensor, settings: TrainSettings, generator: torch.Generator):
    """data (C, 20, 1, s, s) on the device -> images (B, 1, s, s) and what the loss needs.

    `all`: (images, character label per image). `koch`: (images, same-character target per
    pair), where pair i is images i and B/2 + i.
    """
    characters, drawings, device = data.shape[0], data.shape[1], data.device

    def randint(high, size):
        return torch.randint(high, (size,), device=device, generator=generator)

    if settings.pairing == "all":
        per_character = settings.drawings_per_character
        n_characters = settings.batch_images // per_character
        chosen = torch.randperm(characters, device=device, generator=generator)[:n_characters]
        # Distinct drawings of each character: the first columns of a random permutation per row.
        order = torch.rand((n_characters, drawings), device=device, generator=generator).argsort(1)
        images = data[chosen[:, None], order[:, :per_character]].reshape(-1, *data.shape[2:])
        labels = torch.arange(n_characters, device=device).repeat_interleave(per_character)
        return images, labels
    pairs = settings.batch_images // 2
    first = randint(characters, pairs)
    same = torch.arange(pairs, device=device) >= pairs // 2
    second = torch.where(same, first, (first + 1 + randint(characters - 1, pairs)) % characters)
    first_drawing = randint(drawings, pairs)
    second_drawing = torch.where(same, (first_drawing + 1 + randint(drawings - 1, pairs)) % drawings,
                                 randint(drawings, pairs))
    images = torch.cat([data[first, first_drawing], data[second, second_drawing]])
    return images, same.float()


def pair_loss(net, features: torch.Tensor, targets: torch.Tensor, pairing: str) -> torch.Tensor:
    """Binary cross-entropy of the pair logits; for `all`, positives and negatives weigh the same."""
    if pairing == "koch":
        half = features.shape[0] // 2
        logits = net.pair_logits(features[:half], features[half:]).float()
        return F.binary_cross_entropy_with_logits(logits, targets)
    first, second = torch.triu_indices(len(features), len(features), 1, device=features.device)
    logits = net.pair_logits(features[first], features[second]).float()
    same = (targets[first] == targets[second]).float()
    losses = F.binary_cross_entropy_with_logits(logits, same, reduction="none")
    positive = (losses * same).sum() / same.sum().clamp(min=1)
    negative = (losses * (1 - same)).sum() / (1 - same).sum().clamp(min=1)
    return (positive + negative) / 2


def make_optimizer(net, settings: TrainSettings) -> torch.optim.Optimizer:
    """One parameter group per layer: its own learning rate (multiplier) and L2 coefficient.

    L2 is the loss term l2 * sum(w^2) (Keras's regularizer), i.e. weight_decay = 2 * l2 added
    to the gradient; biases and batch-norm parameters are not decayed.
    """
    layers = net.layers()
    multipliers = settings.layer_learning_rates or (1.0,) * len(layers)
    if len(multipliers) != len(layers):
        raise ValueError(f"layer_learning_rates has {len(multipliers)} values; this network has "
                         f"{len(layers)} layers")
    groups, covered = [], set()
    for layer, multiplier in zip(layers, multipliers):
        l2 = settings.l2_dense if net.is_dense(layer) else settings.l2_conv
        rate = settings.learning_rate * multiplier
        groups.append({"params": [layer.weight], "lr": rate, "weight_decay": 2 * l2})
        groups.append({"params": [layer.bias], "lr": rate, "weight_decay": 0.0})
        covered |= {id(layer.weight), id(layer.bias)}
    rest = [p for p in net.parameters() if id(p) not in covered]
    if rest:
        groups.append({"params": rest, "lr": settings.learning_rate, "weight_decay": 0.0})
    if settings.recipe == "adam":
        return torch.optim.Adam(groups)
    return torch.optim.SGD(groups, momentum=MOMENTUM_START)


def epoch_steps(n_images: int, settings: TrainSettings) -> int:
    """Steps that show as many images as the training set holds: the 'epoch' of the schedules."""
    return max(1, n_images // settings.batch_images)


def learning_rate_factor(step: int, settings: TrainSettings, steps_per_epoch: int) -> float:
    warm = min(1.0, (step + 1) / settings.warmup_steps) if settings.warmup_steps > 0 else 1.0
    if settings.lr_schedule == "cosine":
        return warm * 0.5 * (1 + math.cos(math.pi * min(step, settings.steps) / settings.steps))
    if settings.lr_schedule == "exponential":  # Koch: 1% less every epoch
        return warm * (1 - settings.lr_decay_per_epoch) ** (step / steps_per_epoch)
    return warm


def set_schedule(optimizer, base_rates, step: int, settings: TrainSettings, steps_per_epoch: int) -> None:
    factor = learning_rate_factor(step, settings, steps_per_epoch)
    ramp = min(1.0, step / (steps_per_epoch * MOMENTUM_RAMP_EPOCHS))
    for group, base in zip(optimizer.param_groups, base_rates):
        group["lr"] = base * factor
        if settings.recipe == "sgd":
            group["momentum"] = MOMENTUM_START + ramp * (settings.momentum - MOMENTUM_START)


class Trainer:
    """One optimisation step at a time: sample a batch on the device, distort it, score its
    pairs, step the optimiser. `train` loops over it; benchmarks time it on its own."""

    def __init__(self, net, data: torch.Tensor, settings: TrainSettings, generator: torch.Generator):
        self.net, self.data, self.settings, self.generator = net, data, settings, generator
        self.cuda = data.device.type == "cuda"
        self.optimizer = make_optimizer(net, settings)
        self.base_rates = [group["lr"] for group in self.optimizer.param_groups]
        self.steps_per_epoch = epoch_steps(data.shape[0] * data.shape[1], settings)
        self.embed = torch.compile(net.embedding) if settings.compile else net.embedding

    def step(self, index: int) -> torch.Tensor:
        """Step `index` (0-based, for the schedules); returns the loss, still on the device."""
        settings = self.settings
        set_schedule(self.optimizer, self.base_rates, index, settings, self.steps_per_epoch)
        images, targets = sample_batch(self.data, settings, self.generator)
        if settings.augment_probability > 0:
            images = random_affine(images, self.generator, probability=settings.augment_probability)
        images = images.contiguous(memory_format=torch.channels_last)  # as the network's weights
        with torch.autocast("cuda", dtype=torch.bfloat16) if self.cuda else nullcontext():
            features = self.embed(images)
            loss = pair_loss(self.net, features.float(), targets, settings.pairing)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.detach()


def train(net, data: torch.Tensor, settings: TrainSettings, generator: torch.Generator,
          validate=None, progress: bool = True, label: str = "siamese") -> dict:
    """Train `net` in place on `data` (C, 20, 1, s, s); keep the weights that validate best.

    `validate(step)` returns the current validation accuracy (or the loop keeps the last
    weights when it is None). Returns plain facts about the training; its times leave out
    the time spent validating.
    """
    trainer = Trainer(net, data, settings, generator)
    keeper = BestKeeper(patience=settings.patience if validate else 0)
    history, loss_sum, loss_count, step = [], torch.zeros((), device=data.device), 0, 0
    bar = tqdm(total=settings.steps, desc=f"{label}: training", unit="step", disable=not progress,
               leave=False, file=sys.stderr)
    started, validating = time.perf_counter(), 0.0
    net.train()
    for step in range(1, settings.steps + 1):
        loss = trainer.step(step - 1)
        loss_sum += loss
        loss_count += 1
        bar.update(1)
        last = step == settings.steps
        if validate and (step % settings.validate_every == 0 or last):
            mean_loss = (loss_sum / loss_count).item()  # one device sync per validation
            loss_sum.zero_()
            loss_count = 0
            validation_started = time.perf_counter()
            accuracy = validate(step)
            net.train()
            validating += time.perf_counter() - validation_started
            history.append({"step": step, "loss": round(mean_loss, 4),
                            "validation_accuracy": round(accuracy, 4),
                            "train_seconds": round(time.perf_counter() - started - validating, 1)})
            bar.set_postfix(loss=f"{mean_loss:.3f}", val=f"{accuracy:.3f}",
                            best=f"{max(keeper.best_accuracy, accuracy):.3f}")
            if keeper.update(accuracy, step, net):
                break
        elif progress and step % 50 == 0:
            bar.set_postfix(loss=f"{loss.item():.3f}", best=f"{keeper.best_accuracy:.3f}")
    bar.close()
    seconds = time.perf_counter() - started - validating
    if keeper.best_state is not None:
        net.load_state_dict(keeper.best_state)
    net.eval()
    return {"steps": step, "best_step": keeper.best_step if validate else step,
            "best_validation_accuracy": round(keeper.best_accuracy, 4) if validate else None,
            "train_seconds": round(seconds, 2), "validation_seconds": round(validating, 2),
            "seconds_per_step": round(seconds / max(step, 1), 4), "history": history}

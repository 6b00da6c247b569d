"""How the Siamese method trains, on the shared loop (benchmark/training.py): batches sampled
on the device, pair losses, and the two optimiser recipes.

Two ways to turn a batch into training signal:
- `koch`: half the pairs show one character twice (two different drawings), half show two
  characters; each image is in one pair (Koch et al. 2015, and the Keras tutorial).
- `all`: the batch holds a few drawings of each of several characters and every pair of
  images in it is scored, positives and negatives weighted equally. The same forward and
  backward pass then trains on B(B-1)/2 pairs instead of B/2, which is what lets a small
  network learn within minutes on a CPU.
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from benchmark.augment import random_affine
from benchmark.training import Schedule

PAIRINGS = ("all", "koch")
RECIPES = ("adam", "sgd")
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
    # index_select, not features[first]: on a CPU the backward of advanced indexing adds the
    # repeated rows' gradients in whatever order the threads finish (two same-seed fits on 2
    # threads gave other weights); index_select's backward adds them in a fixed order.
    logits = net.pair_logits(features.index_select(0, first), features.index_select(0, second)).float()
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


class PairTrainer:
    """The Siamese net's side of the training loop (benchmark.training.train): the optimiser,
    the learning-rate schedule, and the loss of one step (sample a batch on the device,
    distort it, score its pairs)."""

    def __init__(self, net, data: torch.Tensor, settings: TrainSettings, generator: torch.Generator):
        self.net, self.data, self.settings, self.generator = net, data, settings, generator
        self.cuda = data.device.type == "cuda"
        self.optimizer = make_optimizer(net, settings)
        self.steps_per_epoch = epoch_steps(data.shape[0] * data.shape[1], settings)
        self.embed = torch.compile(net.embedding) if settings.compile else net.embedding

    def schedule(self) -> Schedule:
        """Warm-up multiplying a decay over the whole budget (Koch: 1% less every epoch)."""
        settings = self.settings
        return Schedule(settings.steps, settings.lr_schedule, warmup_steps=settings.warmup_steps,
                        steps_per_epoch=self.steps_per_epoch, decay_per_epoch=settings.lr_decay_per_epoch)

    def loss(self, index: int) -> torch.Tensor:
        """The loss of step `index` (0-based, for the momentum ramp), still on the device."""
        settings = self.settings
        if settings.recipe == "sgd":  # Koch: momentum rises linearly over the first epochs
            ramp = min(1.0, index / (self.steps_per_epoch * MOMENTUM_RAMP_EPOCHS))
            for group in self.optimizer.param_groups:
                group["momentum"] = MOMENTUM_START + ramp * (settings.momentum - MOMENTUM_START)
        images, targets = sample_batch(self.data, settings, self.generator)
        if settings.augment_probability > 0:
            images = random_affine(images, self.generator, probability=settings.augment_probability)
        images = images.contiguous(memory_format=torch.channels_last)  # as the network's weights
        with torch.autocast("cuda", dtype=torch.bfloat16) if self.cuda else nullcontext():
            features = self.embed(images)
            return pair_loss(self.net, features.float(), targets, settings.pairing)

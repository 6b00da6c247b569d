"""Fine-tuned softmax transfer: the transfer-learning baseline of the one-shot literature.

A conv net learns to classify the characters of the background alphabets (softmax
cross-entropy, light affine distortions); some background alphabets are held out to choose
the checkpoint. For an episode, the trunk's features feed a new N-way linear head, trained
on that episode's support images alone (optionally with the trunk's last conv block), and
the head then scores the queries. Every episode of a batch is fine-tuned at once
(methods/_episode_finetune.py); each evaluation image goes through the trunk once.
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from benchmark.api import Capabilities, EmbeddingMethod, FitContext
from benchmark.augment import random_affine
from benchmark.errors import ConfigError
from benchmark.nets import ConvNet4
from benchmark.registry import register_method
from benchmark.training import (Schedule, Validator, load_or_train, resize_images, seeded_generator,
                                split_background, split_tensor, train)
from methods._episode_finetune import ADAPT_CHOICES, FineTuneSettings, LastBlock, classify, fine_tune_heads

# Hyperparameters that shape the trained trunk (and so its checkpoint); the others only
# change the per-episode fine-tuning and reuse the same trained weights.
TRAINING_PARAMS = ("image_size", "channels", "steps", "batch_size", "learning_rate", "weight_decay",
                   "label_smoothing", "augment", "validation_alphabets", "validate_every", "patience")
# Bump when training changes in a way the hyperparameters do not show (invalidates checkpoints).
TRAINING_VERSION = 1


@register_method("softmax_transfer")
class SoftmaxTransfer(EmbeddingMethod):
    """Background-character softmax classifier; a new head fine-tuned on each episode's supports."""

    capabilities = Capabilities(needs_training=True, deterministic=True, uses_gpu=True)
    # Small enough for the contract checks on tiny synthetic data to run in seconds.
    CHECK_PARAMS: ClassVar[dict] = {"channels": 8, "steps": 20, "batch_size": 16, "validation_alphabets": 1,
                                    "validate_every": 10, "finetune_steps": 5}
    # Fine-tuning holds a few copies of each chunk; 32 MiB chunks keep whole 1000-episode
    # sets in one program when only the head is tuned.
    score_chunk_bytes: ClassVar[int] = 32 * 2**20

    def __init__(self, image_size: int = 28, channels: int = 64, steps: int = 2000, batch_size: int = 128,
                 learning_rate: float = 0.003, weight_decay: float = 0.0, label_smoothing: float = 0.1,
                 augment: bool = True, validation_alphabets: int = 4, validate_every: int = 500,
                 patience: int = 0, adapt: str = "head", finetune_steps: int = 20,
                 finetune_learning_rate: float = 0.01, finetune_weight_decay: float = 0.0,
                 prototype_init: bool = True, logit_scale: float = 10.0):
        self.image_size = image_size
        self.channels = channels
        self.steps = steps
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.label_smoothing = label_smoothing
        self.augment = augment
        self.validation_alphabets = validation_alphabets
        self.validate_every = validate_every
        self.patience = patience
        self.adapt = adapt
        self.finetune_steps = finetune_steps
        self.finetune_learning_rate = finetune_learning_rate
        self.finetune_weight_decay = finetune_weight_decay
        self.prototype_init = prototype_init
        self.logit_scale = logit_scale

    # ---- training ------------------------------------------------------------------------

    def fit(self, training_split, context: FitContext) -> SoftmaxTransfer:
        self._check_params()
        device = torch.device(context.device)
        train_split, validation = split_background(training_split, self.validation_alphabets)
        # Layers are initialised from the training seed without touching torch's global generator.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(context.seed)
            trunk = ConvNet4(self.channels).to(device)
            classifier = nn.Linear(self._feature_size(), train_split.n_characters).to(device)
        params = {name: getattr(self, name) for name in TRAINING_PARAMS}
        info = load_or_train(self, context, trunk, params, training_split, TRAINING_VERSION,
                             lambda: self._train(trunk, classifier, train_split, validation, context, device))
        # channels_last makes the CPU's pooling and convolutions of embedding about 1.7x faster.
        self.trunk_ = trunk.eval().to(memory_format=torch.channels_last)
        self.device_ = device
        self.training_info_ = info
        self.last_block_ = self._last_block() if self.adapt == "head+last" else None
        self.reset_embeddings()
        return self

    def _train(self, trunk, classifier, train_split, validation, context, device) -> dict:
        images = split_tensor(train_split, self.image_size, device)  # (characters, 20, 1, s, s)
        n_characters = images.shape[0]
        generator = seeded_generator(context.seed, device)

        def step_loss(step: int) -> torch.Tensor:
            characters = torch.randint(n_characters, (self.batch_size,), device=device, generator=generator)
            drawings = torch.randint(20, (self.batch_size,), device=device, generator=generator)
            batch = images[characters, drawings]
            if self.augment:
                batch = random_affine(batch, generator)
            return F.cross_entropy(classifier(trunk(batch)), characters, label_smoothing=self.label_smoothing)

        validate = None
        if validation is not None:
            validator, probe = Validator(validation), _CosineProbe(trunk, self.image_size, device)
            validate = lambda: validator.accuracy(probe)  # noqa: E731
        parameters = list(trunk.parameters()) + list(classifier.parameters())
        optimiser = torch.optim.AdamW(parameters, lr=self.learning_rate, weight_decay=self.weight_decay)
        # Linear warm-up over the first 5% of the steps, then cosine decay to zero at the end.
        warmup = max(1, self.steps // 20)
        schedule = Schedule(self.steps, "cosine", warmup_steps=warmup, decay_start=warmup)
        info = train(self.name, trunk, optimiser, step_loss, schedule, context, validate=validate,
                     validate_every=self.validate_every, patience=self.patience)
        info["train_characters"] = n_characters
        if validate is not None:
            info["validation_alphabets"] = sorted(validation.alphabets())
            context.log(f"{self.name}: best 20-way validation accuracy {info['best_validation_accuracy']:.3f} "
                        f"(cosine to supports) at step {info['best_step']} of {info['steps']}")
        return info

    # ---- episodes ------------------------------------------------------------------------

    def embed(self, images: np.ndarray) -> torch.Tensor:
        """The trunk's features; with `adapt="head+last"`, the input of its last block instead."""
        trunk = self.trunk_
        trunk.eval()
        with torch.no_grad():
            pixels = resize_images(images, self.image_size, self.device_)
            pixels = pixels.contiguous(memory_format=torch.channels_last)
            blocks = trunk.blocks if self.adapt == "head" else trunk.blocks[:-1]
            return blocks(pixels).flatten(1)

    def score(self, query: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
        """Fine-tune each episode's head on its supports (e, N, k, d), then score its queries (e, Q, d)."""
        heads = fine_tune_heads(support, self._settings(), self.last_block_)
        return classify(query, heads, self.last_block_)

    def _settings(self) -> FineTuneSettings:
        return FineTuneSettings(steps=self.finetune_steps, learning_rate=self.finetune_learning_rate,
                                weight_decay=self.finetune_weight_decay, prototype_init=self.prototype_init,
                                logit_scale=self.logit_scale)

    def _last_block(self) -> LastBlock:
        size = ConvNet4.output_size(self.image_size, blocks=len(self.trunk_.blocks) - 1)
        return LastBlock.from_block(self.trunk_.blocks[-1], (self.channels, size, size))

    def _feature_size(self) -> int:
        return self.channels * ConvNet4.output_size(self.image_size) ** 2

    def _check_params(self) -> None:
        if self.adapt not in ADAPT_CHOICES:
            raise ConfigError(f"softmax_transfer: adapt must be one of {', '.join(ADAPT_CHOICES)}, "
                              f"got {self.adapt!r}")
        if self.image_size < 16:
            raise ConfigError(f"softmax_transfer: image_size must be at least 16 for four pooling blocks, "
                              f"got {self.image_size}")
        for name in ("channels", "steps", "batch_size", "validate_every"):
            if getattr(self, name) < 1:
                raise ConfigError(f"softmax_transfer: {name} must be at least 1, "
                                  f"got {getattr(self, name)}")
        if self.finetune_steps < 0:
            raise ConfigError(f"softmax_transfer: finetune_steps must be at least 0, "
                              f"got {self.finetune_steps}")


class _CosineProbe:
    """The trunk under training seen as a cosine nearest-support classifier, for validation.

    Validating the trunk this way, rather than with the fine-tuning, keeps the trained weights
    (and their checkpoint) independent of the fine-tuning settings.
    """

    def __init__(self, trunk: nn.Module, image_size: int, device):
        self.trunk, self.image_size, self.device = trunk, image_size, device

    def embed(self, images: np.ndarray) -> torch.Tensor:
        self.trunk.eval()
        with torch.no_grad():
            return F.normalize(self.trunk(resize_images(images, self.image_size, self.device)), dim=-1)

    def score(self, query: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
        return torch.einsum("eqd,enkd->eqnk", query, support).amax(-1)

"""Fine-tuned softmax transfer: the transfer-learning baseline of the one-shot literature.

A conv net learns to classify the characters of the background alphabets (softmax
cross-entropy, light affine distortions); some background alphabets are held out to choose
the checkpoint. For an episode, the trunk's features feed a new N-way linear head, trained
on that episode's support images alone (optionally with the trunk's last conv block), and
the head then scores the queries. Every episode of a batch is fine-tuned at once
(methods/_episode_finetune.py); each evaluation image goes through the trunk once.
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from benchmark.api import Capabilities, EmbeddingMethod, FitContext
from benchmark.augment import random_affine
from benchmark.checkpoints import checkpoint_key
from benchmark.errors import ConfigError
from benchmark.nets import ConvNet4
from benchmark.registry import register_method
from benchmark.training import (BestKeeper, Validator, load_or_train, resize_images, seeded_generator,
                                split_background, split_tensor)
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

    capabilities = Capabilities(needs_training=True, uses_gpu=True, deterministic=True)
    # Small enough for the contract checks on tiny synthetic data to run in seconds.
    CHECK_PARAMS: ClassVar[dict] = {"channels": 8, "steps": 20, "batch_size": 16, "validation_alphabets": 1,
                                    "validate_every": 10, "finetune_steps": 5}
    # Fine-tuning holds a few copies of each chunk; 32 MiB chunks keep whole 1000-episode
    # sets in one program when only the head is tuned.
    score_chunk_bytes: ClassVar[int] = 32 * 2**20
    # Conv activations of 512 images at 28x28 take about 200 MB; 2048 (the default) took 2 GB.
    embed_batch_size: ClassVar[int] = 512

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

    def fit(self, background, context: FitContext) -> SoftmaxTransfer:
        self._check_params()
        device = torch.device(context.device)
        train, validation = split_background(background, self.validation_alphabets)
        # Layers are initialised from the training seed without touching torch's global generator.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(context.seed)
            trunk = ConvNet4(self.channels).to(device)
            classifier = nn.Linear(self._feature_size(), train.n_characters).to(device)
        params = {name: getattr(self, name) for name in TRAINING_PARAMS}
        key = checkpoint_key(self.name or "softmax_transfer", params, context.seed, background.sha256,
                             version=TRAINING_VERSION)
        info = load_or_train(self, context, trunk, key,
                             lambda: self._train(trunk, classifier, train, validation, context, device))
        # channels_last makes the CPU's pooling and convolutions of embedding about 1.7x faster.
        self.trunk_ = trunk.eval().to(memory_format=torch.channels_last)
        self.device_ = device
        self.training_info_ = info
        self.last_block_ = self._last_block() if self.adapt == "head+last" else None
        return self

    def _train(self, trunk, classifier, train, validation, context, device) -> dict:
        images = split_tensor(train, self.image_size, device)  # (characters, 20, 1, s, s)
        n_characters = images.shape[0]
        generator = seeded_generator(context.seed, device)
        parameters = list(trunk.parameters()) + list(classifier.parameters())
        optimiser = torch.optim.AdamW(parameters, lr=self.learning_rate, weight_decay=self.weight_decay)
        warmup = max(1, self.steps // 20)

        def rate(step):  # linear warm-up, then cosine decay to zero at the end of the budget
            if step < warmup:
                return (step + 1) / warmup
            return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, self.steps - warmup)))

        schedule = torch.optim.lr_scheduler.LambdaLR(optimiser, rate)
        validator = Validator(validation) if validation is not None else None
        keeper = BestKeeper(self.patience)
        bar = tqdm(range(1, self.steps + 1), desc="softmax_transfer: training", unit="step",
                   disable=not context.progress, leave=False)
        trunk.train()
        for step in bar:
            characters = torch.randint(n_characters, (self.batch_size,), device=device, generator=generator)
            drawings = torch.randint(20, (self.batch_size,), device=device, generator=generator)
            batch = images[characters, drawings]
            if self.augment:
                batch = random_affine(batch, generator)
            loss = F.cross_entropy(classifier(trunk(batch)), characters, label_smoothing=self.label_smoothing)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            optimiser.step()
            schedule.step()
            first_loss = loss.item() if step == 1 else first_loss
            if validator is not None and (step % self.validate_every == 0 or step == self.steps):
                accuracy = validator.accuracy(_PrototypeProbe(trunk, self.image_size, device))
                trunk.train()
                bar.set_postfix(loss=f"{loss.item():.3f}", validation=f"{accuracy:.3f}")
                if keeper.update(accuracy, step, trunk):
                    break
        if keeper.best_state is not None:
            trunk.load_state_dict(keeper.best_state)
        info = {"steps": step, "first_loss": round(first_loss, 4), "final_loss": round(loss.item(), 4),
                "train_characters": n_characters}
        if validator is not None:
            info.update(best_step=keeper.best_step, validation_accuracy=round(keeper.best_accuracy, 4),
                        validation_alphabets=sorted(validation.alphabets()))
            context.log(f"softmax_transfer: best 20-way validation accuracy {keeper.best_accuracy:.3f} "
                        f"(cosine to supports) at step {keeper.best_step} of {step}")
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


class _PrototypeProbe(EmbeddingMethod):
    """The trunk under training seen as a cosine nearest-support classifier, for validation.

    Validating the trunk this way, rather than with the fine-tuning, keeps the trained weights
    (and their checkpoint) independent of the fine-tuning settings.
    """

    def __init__(self, trunk: nn.Module, image_size: int, device):
        self.trunk, self.image_size, self.device = trunk, image_size, device
        self.is_fitted_ = True

    def fit(self, background, context):
        return self

    def embed(self, images: np.ndarray) -> torch.Tensor:
        self.trunk.eval()
        with torch.no_grad():
            return F.normalize(self.trunk(resize_images(images, self.image_size, self.device)), dim=-1)

    def score(self, query: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
        return torch.einsum("eqd,enkd->eqnk", query, support).amax(-1)

"""Prototypical networks (Snell, Swersky & Zemel, 2017): the nearest class mean in a learned space.

A four-block convolutional net maps each (downsampled) image to a vector; a class is
represented by the mean of its support vectors (its prototype) and a query is scored by the
negative squared Euclidean distance to each prototype. The net is trained on episodes drawn
from the background alphabets, with more ways than at test time (Snell et al.: harder
training episodes transfer better), each 90-degree rotation of a character counting as a
class of its own. A few background alphabets are held out to keep the best weights.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from benchmark.api import Capabilities, EmbeddingMethod, FitContext
from benchmark.augment import random_affine
from benchmark.errors import ConfigError
from benchmark.nets import ConvNet4
from benchmark.registry import register_method
from benchmark.training import (LR_SCHEDULES, Schedule, load_or_train, resize_images, seeded_generator,
                                split_background, split_tensor, train_episodic)

PRECISIONS = ("auto", "bf16", "fp32")
# Bump when a change to training makes cached weights wrong for the same hyperparameters.
TRAINING_VERSION = 1


def prototypes(support: torch.Tensor) -> torch.Tensor:
    """support (e, N, k, d) -> the class means (e, N, d)."""
    return support.mean(dim=2)


def negative_squared_distances(query: torch.Tensor, centres: torch.Tensor) -> torch.Tensor:
    """query (e, Q, d), centres (e, N, d) -> -|q - c|^2, shape (e, Q, N).

    Expanded as 2 q.c - |q|^2 - |c|^2 so memory is (e, Q, N), not (e, Q, N, d); clamped at 0
    because rounding can make a tiny distance negative.
    """
    dots = torch.bmm(query, centres.transpose(1, 2))
    squared = query.square().sum(-1)[:, :, None] + centres.square().sum(-1)[:, None, :] - 2 * dots
    return -squared.clamp_min(0)


def training_precision(requested: str, device: torch.device) -> str:
    """"bf16" or "fp32": auto picks bf16 where the hardware computes it natively.

    bf16 convolutions halve the training time on CPUs with AVX512-BF16 or AMX and on GPUs;
    elsewhere they are emulated and slower, so auto keeps fp32 there. Inference stays fp32.
    """
    if requested != "auto":
        return requested
    if device.type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    try:
        native = bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a private check: absent in some builds
        native = False
    return "bf16" if device.type == "cpu" and native else "fp32"


def rotate_quarter_turns(images: torch.Tensor, turns: torch.Tensor) -> torch.Tensor:
    """images (B, 1, s, s), turns (B,) in 0..3 -> each image rotated by its number of 90-degree turns."""
    rotated = images.clone()
    for k in (1, 2, 3):
        chosen = turns == k
        if bool(chosen.any()):
            rotated[chosen] = torch.rot90(images[chosen], k, dims=(2, 3))
    return rotated


@register_method("protonet")
class PrototypicalNetwork(EmbeddingMethod):
    """Prototypical networks (Snell et al. 2017): conv4 embedding trained on episodes, nearest class mean."""

    capabilities = Capabilities(needs_training=True, deterministic=True, uses_gpu=True)
    # Small enough for the contract checks (benchmark/checks.py) to train in seconds.
    CHECK_PARAMS = {"steps": 10, "train_ways": 5, "train_queries": 2, "channels": 8,
                    "validate_every": 5, "validation_episodes": 20}

    def __init__(self, steps: int = 1800, train_ways: int = 60, train_shots: int = 1,
                 train_queries: int = 5, image_size: int = 28, channels: int = 64,
                 learning_rate: float = 3e-3, lr_schedule: str = "cosine", rotations: bool = True,
                 affine_probability: float = 0.0, precision: str = "auto", validation_alphabets: int = 3,
                 validate_every: int = 250, validation_episodes: int = 200, patience: int = 0):
        self.steps = steps
        self.train_ways = train_ways
        self.train_shots = train_shots
        self.train_queries = train_queries
        self.image_size = image_size
        self.channels = channels
        self.learning_rate = learning_rate
        self.lr_schedule = lr_schedule
        self.rotations = rotations
        self.affine_probability = affine_probability
        self.precision = precision
        self.validation_alphabets = validation_alphabets
        self.validate_every = validate_every
        self.validation_episodes = validation_episodes
        self.patience = patience

    # ---- fitting -------------------------------------------------------------------------

    def fit(self, training_split, context: FitContext) -> PrototypicalNetwork:
        self._check_params()
        device = torch.device(context.device)
        # Initialise from the training seed alone, without touching torch's global generator.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(context.seed)
            network = self.build_network()
        self.network_ = network.to(device=device, memory_format=torch.channels_last)
        self.device_ = device
        self.training_precision_ = training_precision(self.precision, device)
        # The resolved precision is part of the key: "auto" trains differently on other hardware.
        params = dict(self.get_params(), precision=self.training_precision_)
        self.training_info_ = load_or_train(self, context, self.network_, params, training_split, TRAINING_VERSION,
                                            lambda: self._train(training_split, context))
        self.network_.eval()
        self.reset_embeddings()
        return self

    def build_network(self) -> torch.nn.Module:
        """The network `fit` trains and `embed` runs: images (B, 1, s, s) -> features (B, d)."""
        return ConvNet4(channels=self.channels)

    def _check_params(self) -> None:
        positive = {"steps": self.steps, "train_ways": self.train_ways, "train_shots": self.train_shots,
                    "train_queries": self.train_queries, "image_size": self.image_size,
                    "channels": self.channels, "validate_every": self.validate_every,
                    "validation_episodes": self.validation_episodes}
        for name, value in positive.items():
            if value < 1:
                raise ConfigError(f"{self.name}: {name} must be >= 1, got {value}")
        if self.train_ways < 2:
            raise ConfigError(f"{self.name}: train_ways must be >= 2, got {self.train_ways}")
        if self.train_shots + self.train_queries > 20:
            raise ConfigError(f"{self.name}: train_shots + train_queries must be <= 20 (drawings per "
                              f"character), got {self.train_shots + self.train_queries}")
        if self.image_size < 16:
            raise ConfigError(f"{self.name}: image_size must be >= 16 (four 2x2 poolings), got {self.image_size}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f"{self.name}: lr_schedule must be one of {', '.join(LR_SCHEDULES)}, "
                              f"got {self.lr_schedule!r}")
        if self.precision not in PRECISIONS:
            raise ConfigError(f"{self.name}: precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")
        if not 0 <= self.affine_probability <= 1:
            raise ConfigError(f"{self.name}: affine_probability must be in [0, 1], got {self.affine_probability}")

    def _train(self, training_split, context: FitContext) -> dict:
        device = self.device_
        train_split, validation_split = split_background(training_split, self.validation_alphabets)
        images = split_tensor(train_split, self.image_size, device)  # (C, 20, 1, s, s)
        sampler = EpisodeSampler(images, self.train_ways, self.train_shots, self.train_queries,
                                 self.rotations, seeded_generator(context.seed, device))
        labels = torch.arange(sampler.ways, device=device).repeat_interleave(self.train_queries)
        bf16 = self.training_precision_ == "bf16"

        def step_loss(step: int) -> torch.Tensor:
            flat = sampler.sample().flatten(0, 1)  # ways x (shots + queries) images
            if self.affine_probability > 0:
                flat = random_affine(flat, sampler.generator, probability=self.affine_probability)
            with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
                features = self.network_(flat.contiguous(memory_format=torch.channels_last)).float()
            features = features.reshape(sampler.ways, self.train_shots + self.train_queries, -1)
            support = features[:, :self.train_shots][None]  # (1, ways, shots, d)
            queries = features[:, self.train_shots:].reshape(1, -1, features.shape[-1])
            return self.episode_loss(queries, support, labels)

        # Cosine to 1% of the rate at the end of the budget; "step" halves it four times;
        # "exponential" loses 1% per pass over the training images.
        epoch = max(1, images.shape[0] * images.shape[1] // (sampler.ways * sampler.per_class))
        schedule = Schedule(self.steps, self.lr_schedule, final_factor=0.01, steps_per_epoch=epoch)
        info = train_episodic(self, self.network_, step_loss, schedule, context, validation_split,
                              patience=self.patience)
        info["train_classes"] = sampler.n_classes
        return info

    # ---- inference -----------------------------------------------------------------------

    def embed(self, images: np.ndarray) -> torch.Tensor:
        self.network_.eval()  # batch norm uses its running statistics: a query never sees others
        inputs = resize_images(images, self.image_size, self.device_)
        with torch.no_grad():
            return self.network_(inputs.contiguous(memory_format=torch.channels_last)).float()

    def score(self, query: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
        return negative_squared_distances(query, prototypes(support))

    def episode_loss(self, query: torch.Tensor, support: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """The training loss of one episode: query (1, Q, d), support (1, N, k, d), labels (Q,)."""
        return F.cross_entropy(self.score(query, support)[0], labels)


class EpisodeSampler:
    """Training episodes drawn on the device: `ways` classes, `shots + queries` drawings each.

    With rotations, each character turned by 0, 90, 180 or 270 degrees is a class of its own
    (Snell et al.), so there are 4x as many classes; otherwise ways is capped at the number
    of characters.
    """

    def __init__(self, images: torch.Tensor, ways: int, shots: int, queries: int, rotations: bool,
                 generator: torch.Generator):
        self.images = images
        self.characters = images.shape[0]
        self.n_classes = self.characters * (4 if rotations else 1)
        self.ways = min(ways, self.n_classes)
        self.per_class = shots + queries
        self.generator = generator

    def sample(self) -> torch.Tensor:
        device = self.images.device
        classes = torch.randperm(self.n_classes, generator=self.generator, device=device)[:self.ways]
        drawings = torch.rand((self.ways, self.images.shape[1]), generator=self.generator,
                              device=device).argsort(dim=1)[:, :self.per_class]
        characters = classes % self.characters
        batch = self.images[characters[:, None], drawings]  # (ways, per_class, 1, s, s)
        if self.n_classes == self.characters:
            return batch
        turns = (classes // self.characters).repeat_interleave(self.per_class)
        return rotate_quarter_turns(batch.flatten(0, 1), turns).reshape(batch.shape)

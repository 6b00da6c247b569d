"""Koch et al.'s (2015) convolutional Siamese network: full size on a GPU, compact on a CPU.

Twin networks with shared weights embed two images; a dense layer on |h1 - h2| with a
sigmoid says whether they show the same character. Trained with binary cross-entropy on
pairs from the background alphabets (some held out to validate, keep the best and stop
early); the evaluation alphabets are never seen. To classify, each evaluation image is
embedded once and every (query, support) pair is scored by the head from the cached
features. k-shot: a class's score is the mean of its k pair logits (`shot_aggregation`;
measured against the mean probability and the max, see README).
"""

from __future__ import annotations

import math
from typing import ClassVar

import numpy as np
import torch

from benchmark.api import Capabilities, EmbeddingMethod, FitContext
from benchmark.errors import ConfigError
from benchmark.registry import register_method
from benchmark.training import (LR_SCHEDULES, Validator, load_or_train, resize_images, seeded_generator, split_background,
                                split_tensor, train)
from methods import _siamese_training as training
from methods._siamese_nets import ARCHITECTURES, SiameseNet

AGGREGATIONS = ("mean", "max", "mean_logit")
# Bound on the |q - s| tensor of one scoring step. 4 MiB chunks reuse memory the allocator
# keeps; 64 MiB ones were returned to the system and faulted in again each step (60-way
# scoring 4x slower; perf/README.md, "Scaling").
SCORE_CHUNK_BYTES = 4 * 2**20
TRAINING_VERSION = 1  # bump when a change to the training code changes the weights it makes

# What a hyperparameter left at None means, per architecture: the compact net's recipe was
# tuned for 2 CPU cores (README, "Siamese network"); the koch one is the GPU recipe of
# configs/koch2015.yaml (Adam at the probe's 1e-4, the Keras tutorial's per-layer L2, Koch's
# distortions).
PRESETS = {
    "compact": {"image_size": 28, "steps": 6000, "batch_images": 64, "learning_rate": 6e-2,
                "warmup_steps": 100, "l2_conv": 0.0, "l2_dense": 0.0, "augment_probability": 0.0,
                "validate_every": 1000, "compile": False},
    "koch": {"image_size": 105, "steps": 20000, "batch_images": 128, "learning_rate": 1e-4,
             "warmup_steps": 200, "l2_conv": 2e-4, "l2_dense": 1e-3, "augment_probability": 0.5,
             "validate_every": 1000, "compile": True},
}


@register_method("siamese")
class Siamese(EmbeddingMethod):
    """Convolutional Siamese network (Koch et al. 2015): |h1 - h2| head; compact on CPU, koch on GPU."""

    capabilities = Capabilities(needs_training=True, deterministic=True, uses_gpu=True)
    # Small settings for the contract checks (benchmark/checks.py): seconds, not minutes.
    CHECK_PARAMS: ClassVar[dict] = {"architecture": "compact", "image_size": 32, "channels": 16,
                                    "steps": 20, "batch_images": 16, "learning_rate": 1e-2,
                                    "warmup_steps": 0, "validation_alphabets": 0}

    def __init__(self, architecture: str = "auto", image_size: int | None = None, channels: int = 64,
                 steps: int | None = None, batch_images: int | None = None,
                 drawings_per_character: int = 4, pairing: str = "all", recipe: str = "adam",
                 learning_rate: float | None = None, lr_schedule: str = "cosine",
                 warmup_steps: int | None = None, lr_decay_per_epoch: float = 0.01,
                 momentum: float = 0.9, layer_learning_rates: tuple[float, ...] = (),
                 l2_conv: float | None = None, l2_dense: float | None = None,
                 augment_probability: float | None = None, validation_alphabets: int = 4,
                 validation_episodes: int = 200, validate_every: int | None = None,
                 patience: int = 0, koch_init: bool = False, compile: bool | None = None,
                 shot_aggregation: str = "mean_logit"):
        """Hyperparameters left at None take the architecture's value from PRESETS."""
        self.architecture = architecture
        self.image_size = image_size
        self.channels = channels
        self.steps = steps
        self.batch_images = batch_images
        self.drawings_per_character = drawings_per_character
        self.pairing = pairing
        self.recipe = recipe
        self.learning_rate = learning_rate
        self.lr_schedule = lr_schedule
        self.warmup_steps = warmup_steps
        self.lr_decay_per_epoch = lr_decay_per_epoch
        self.momentum = momentum
        self.layer_learning_rates = layer_learning_rates
        self.l2_conv = l2_conv
        self.l2_dense = l2_dense
        self.augment_probability = augment_probability
        self.validation_alphabets = validation_alphabets
        self.validation_episodes = validation_episodes
        self.validate_every = validate_every
        self.patience = patience
        self.koch_init = koch_init
        self.compile = compile
        self.shot_aggregation = shot_aggregation

    # ----------------------------------------------------------------------------- training
    def resolved_architecture(self, device: str) -> str:
        """`auto` is the paper's net on a GPU and the compact one on a CPU."""
        if self.architecture == "auto":
            return "koch" if str(device).startswith("cuda") else "compact"
        return self.architecture

    def resolved_params(self, device: str) -> dict:
        """Every hyperparameter, with the architecture resolved and None replaced by its preset."""
        self._check_choices()
        params = dict(self.get_params(), architecture=self.resolved_architecture(device))
        for name, value in PRESETS[params["architecture"]].items():
            if params[name] is None:
                params[name] = value
        self._check_numbers(params)
        return params

    def _check_choices(self) -> None:
        choices = {"architecture": ARCHITECTURES + ("auto",), "pairing": training.PAIRINGS,
                   "recipe": training.RECIPES, "lr_schedule": LR_SCHEDULES,
                   "shot_aggregation": AGGREGATIONS}
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(f"methods.siamese.{name} is {getattr(self, name)!r}: use one of "
                                  f"{', '.join(allowed)}")

    @staticmethod
    def _check_numbers(params: dict) -> None:
        for name in ("steps", "batch_images", "validate_every", "validation_episodes", "channels"):
            if params[name] < 1:
                raise ConfigError(f"methods.siamese.{name} must be at least 1, got {params[name]}")
        if params["pairing"] == "all" and not 2 <= params["drawings_per_character"] <= 20:
            raise ConfigError("methods.siamese.drawings_per_character must be between 2 and 20")
        if params["pairing"] == "all" and params["batch_images"] < 2 * params["drawings_per_character"]:
            raise ConfigError("methods.siamese.batch_images must hold at least two characters "
                              "(2 x drawings_per_character)")
        if params["pairing"] == "koch" and params["batch_images"] < 4:
            raise ConfigError("methods.siamese.batch_images must be at least 4 for koch pairing")
        if not 0 <= params["augment_probability"] <= 1:
            raise ConfigError("methods.siamese.augment_probability must be between 0 and 1")

    def settings(self, params: dict) -> training.TrainSettings:
        fields = training.TrainSettings.__dataclass_fields__
        return training.TrainSettings(**{name: params[name] for name in fields})

    def fit(self, training_split, context: FitContext) -> Siamese:
        self.initialise_network(context)
        self.training_info_ = load_or_train(self, context, self.network_, self.params_, training_split,
                                            TRAINING_VERSION, lambda: self.train_network(training_split, context))
        self.network_.eval()
        best = self.training_info_.get("best_validation_accuracy")
        context.log(f"{self.name}: {self.architecture_} at {self.input_size_}x{self.input_size_}, "
                    f"{self.training_info_.get('steps')} steps"
                    + (f", best validation accuracy {best:.3f} at step {self.training_info_.get('best_step')}"
                       if best is not None else ""))
        self.reset_embeddings()
        return self

    def initialise_network(self, context: FitContext) -> None:
        """Resolve the hyperparameters; build `network_` on the device, initialised from the seed."""
        self.params_ = self.resolved_params(context.device)
        device = torch.device(context.device)
        self.architecture_ = self.params_["architecture"]
        self.input_size_ = self.params_["image_size"]
        # Initialise from the training seed alone, without touching torch's global generator.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(context.seed)
            try:
                net = SiameseNet(self.architecture_, self.input_size_, self.channels)
            except ValueError as error:
                raise ConfigError(f"methods.siamese: {error}") from None
        if self.koch_init and self.architecture_ == "koch":
            net.embedding.koch_initialise(torch.Generator().manual_seed(context.seed))
        # channels_last on a CPU too: a third faster for the compact net (max-pooling mostly).
        self.network_ = net.to(device).to(memory_format=torch.channels_last)

    def train_network(self, training_split, context: FitContext) -> dict:
        """Train `network_` in place on the training split; return facts about the training."""
        device = torch.device(context.device)
        train_split, validation_split = split_background(training_split, self.params_["validation_alphabets"])
        data = split_tensor(train_split, self.input_size_, device)
        validate = None
        if validation_split is not None:
            validator = Validator(validation_split, episodes=self.params_["validation_episodes"])
            validate = lambda: validator.accuracy(self)  # noqa: E731
        settings = self.settings(self.params_)
        trainer = training.PairTrainer(self.network_, data, settings, seeded_generator(context.seed, device))
        info = train(self.name, self.network_, trainer.optimizer, trainer.loss, trainer.schedule(), context,
                     validate=validate, validate_every=settings.validate_every, patience=settings.patience)
        return dict(info, architecture=self.architecture_, image_size=self.input_size_, device=str(device))

    # --------------------------------------------------------------------------- prediction
    def embed(self, images: np.ndarray) -> torch.Tensor:
        net = self.network_
        device = next(net.parameters()).device
        net.eval()
        x = resize_images(images, self.input_size_, device).contiguous(memory_format=torch.channels_last)
        if device.type == "cuda":
            with torch.no_grad(), torch.autocast("cuda", dtype=torch.bfloat16):
                return net(x).float()
        with torch.no_grad():  # a CPU gets 64 images a call (EmbeddingMethod.embed_batch_sizes)
            return net(x)

    def score(self, query: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
        """query (e, Q, d), support (e, N, k, d) -> (e, Q, N): aggregated pair scores.

        |q - s| for every pair is (e, Q, N*k, d): computed a few queries at a time so that
        the 4096 features of the paper's net never need gigabytes.
        """
        e, n, k, d = support.shape
        flat = support.reshape(e, 1, n * k, d)
        per_query = max(1, SCORE_CHUNK_BYTES // max(1, e * n * k * d * 4))
        parts = [self.network_.pair_logits(query[:, start:start + per_query, None, :], flat)
                 for start in range(0, query.shape[1], per_query)]
        logits = torch.cat(parts, dim=1).float().reshape(e, query.shape[1], n, k)
        if self.shot_aggregation == "max" or k == 1:
            return logits.amax(-1)  # sigmoid is monotone: the max logit ranks like the max probability
        if self.shot_aggregation == "mean_logit":
            return logits.mean(-1)
        # log of the mean probability: ranks like the mean, without sigmoid's saturation at 1.0
        return torch.logsumexp(torch.nn.functional.logsigmoid(logits), -1) - math.log(k)

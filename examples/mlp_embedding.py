"""An example *trained* plugin: a small MLP embedding, trained on the harness's one loop.

    python run_benchmark.py --plugin examples/mlp_embedding.py --methods mlp_embedding,nearest_neighbor

A trained method builds its network and a `step_loss(step)` in `fit`, and hands them to
`benchmark.train` (steps, learning-rate schedule, validation, keeping the best weights,
progress) inside `benchmark.load_or_train` (the checkpoint cache, keyed by the
hyperparameters, seed and data). As an EmbeddingMethod it then writes `embed` and `score`.
Its contract test is examples/test_mlp_embedding.py.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from benchmark import (Capabilities, EmbeddingMethod, FitContext, Schedule, Validator, load_or_train,
                       register_method, resize_images, seeded_generator, split_background, split_tensor, train)

SIZE = 28  # images are area-averaged down to SIZE x SIZE
TRAINING_VERSION = 1  # bump when a change to _train makes other weights from the same hyperparameters


@register_method("mlp_embedding")
class MLPEmbedding(EmbeddingMethod):
    """Two-layer MLP on 28x28 pixels, trained to classify training characters; cosine to class means."""

    capabilities = Capabilities(needs_training=True, deterministic=True, uses_gpu=True)
    CHECK_PARAMS = {"steps": 30, "validation_alphabets": 0}  # the contract check trains for real: keep it short

    def __init__(self, hidden: int = 256, features: int = 64, steps: int = 1000, batch_size: int = 128,
                 learning_rate: float = 0.003, validation_alphabets: int = 2, validate_every: int = 250):
        self.hidden = hidden
        self.features = features
        self.steps = steps
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.validation_alphabets = validation_alphabets
        self.validate_every = validate_every

    def fit(self, training_split, context: FitContext) -> MLPEmbedding:
        train_split, validation_split = split_background(training_split, self.validation_alphabets)
        with torch.random.fork_rng(devices=[]):  # initialised from the training seed alone
            torch.manual_seed(context.seed)
            self.network_ = nn.Sequential(nn.Flatten(), nn.Linear(SIZE * SIZE, self.hidden), nn.ReLU(),
                                          nn.Linear(self.hidden, self.features)).to(context.device)
            classifier = nn.Linear(self.features, train_split.n_characters).to(context.device)
        self.device_ = context.device
        self.training_info_ = load_or_train(  # every hyperparameter shapes the weights: all are in the key
            self, context, self.network_, self.get_params(), training_split, TRAINING_VERSION,
            lambda: self._train(classifier, train_split, validation_split, context))
        self.reset_embeddings()  # an EmbeddingMethod's fit ends here: predict works from now on
        return self

    def _train(self, classifier: nn.Module, train_split, validation_split, context: FitContext) -> dict:
        images = split_tensor(train_split, SIZE, context.device)  # (characters, 20, 1, SIZE, SIZE)
        generator = seeded_generator(context.seed, context.device)

        def step_loss(step: int) -> torch.Tensor:  # one batch of random drawings of random characters
            characters = torch.randint(len(images), (self.batch_size,), generator=generator, device=images.device)
            drawings = torch.randint(20, (self.batch_size,), generator=generator, device=images.device)
            return F.cross_entropy(classifier(self.network_(images[characters, drawings])), characters)

        validate = None
        if validation_split is not None:  # keep the weights that do best on held-out alphabets
            validator = Validator(validation_split)
            validate = lambda: validator.accuracy(self)  # noqa: E731
        optimizer = torch.optim.Adam([*self.network_.parameters(), *classifier.parameters()], lr=self.learning_rate)
        return train(self.name, self.network_, optimizer, step_loss, Schedule(self.steps, "cosine"), context,
                     validate=validate, validate_every=self.validate_every)

    def embed(self, images) -> torch.Tensor:
        with torch.no_grad():
            return F.normalize(self.network_(resize_images(images, SIZE, self.device_)), dim=-1)

    def score(self, query: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
        """query (e, Q, d), support (e, N, k, d) -> cosine similarity to each class's mean, (e, Q, N)."""
        return torch.bmm(query, F.normalize(support.mean(dim=2), dim=-1).transpose(1, 2))

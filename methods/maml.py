"""Model-Agnostic Meta-Learning (Finn, Abbeel & Levine, 2017).

MAML learns an initialisation of a small network from which a few gradient steps on an
episode's support set classify its queries. The network is Finn et al.'s Omniglot conv net:
four blocks of a 3x3 convolution with stride 2 (instead of max-pooling), batch norm and ReLU,
64 channels, the features averaged over space, a linear head. Training: each step draws
`meta_batch` tasks of `train_ways` background classes (each 90-degree rotation a class of its
own), adapts a copy of the weights to each task's supports with `inner_steps` steps of SGD at
`inner_lr`, and moves the initialisation by Adam to lower the adapted weights' loss on the
task's queries, through the inner steps (second order) or not (`first_order: true`).

Prediction runs the same adaptation on each episode's supports (`test_inner_steps` steps),
batched over episodes with `torch.func.vmap` (one episode at a time for large support sets),
and scores the queries with the adapted weights.

Two choices the paper leaves to its code, made here so that the method meets the contract:
- Batch norm uses the statistics of the episode's support images, for the supports and the
  queries alike: a query is normalised without looking at the other queries, so the method is
  inductive. (Finn et al.'s code normalises the query batch by its own statistics, which is
  transductive.)
- The head starts each episode with one learned row for every class (the "single vector"
  initialisation of Ye & Chao, 2022): Finn et al.'s N-row head ties class j to output j,
  so its predictions would depend on the order of the classes, and it fits only the N it was
  trained for; a shared row gives any N and is order-free.

What the shared row implies, and the defaults follow: while every class has the same row, the
loss's gradient with respect to the features is zero (the softmax's errors sum to zero over the classes), so the
first inner step moves only the head, each class's row by inner_lr / N times the mean of its
supports' features less the mean of all of them. One step is therefore a prototype classifier
(dot product with centred class means) on the initialisation's features, whatever the N;
later steps also move the convolutions, by a step that does not shrink with N as the head's
does. (The meta-gradient still flows through the supports' features: second order differs.)
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from benchmark.api import Capabilities, EmbeddingMethod, FitContext
from benchmark.errors import ConfigError
from benchmark.registry import register_method
from benchmark.training import (LR_SCHEDULES, Schedule, load_or_train, resize_images, seeded_generator,
                                split_background, split_tensor, train_episodic)
from methods.protonet import EpisodeSampler

TRAINING_VERSION = 1
# Episodes with more supports than this adapt one at a time at prediction (`MAML.score`).
VMAP_MAX_SUPPORTS = 64


class MamlNet(nn.Module):
    """Finn et al.'s Omniglot network, run functionally (`logits`) so each episode adapts its own copy."""

    def __init__(self, channels: int = 64, blocks: int = 4):
        super().__init__()
        widths = [1] + [channels] * blocks
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, stride=2, padding=1) for a, b in zip(widths, widths[1:]))
        self.norms = nn.ModuleList(nn.BatchNorm2d(channels, track_running_stats=False) for _ in range(blocks))
        self.head = nn.Linear(channels, 1)  # one row, copied for every class of an episode

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """The features the runner caches are the images themselves: all learning is per episode."""
        return images.flatten(1)

    def initial_weights(self, n_way: int) -> dict[str, torch.Tensor]:
        weights = dict(self.named_parameters())
        weights["head.weight"] = weights["head.weight"].expand(n_way, -1)
        weights["head.bias"] = weights["head.bias"].expand(n_way)
        return weights


def features(weights: dict[str, torch.Tensor], images: torch.Tensor, n_support: int) -> torch.Tensor:
    """images (B, 1, s, s), of which the first n_support are supports -> pooled features (B, channels).

    Batch norm normalises every image by the supports' statistics (see the module docstring)."""
    x, block = images, 0
    while f"convs.{block}.weight" in weights:
        x = F.conv2d(x, weights[f"convs.{block}.weight"], weights[f"convs.{block}.bias"], stride=2, padding=1)
        reference = x[:n_support]
        mean = reference.mean(dim=(0, 2, 3), keepdim=True)
        variance = reference.var(dim=(0, 2, 3), unbiased=False, keepdim=True)
        x = (x - mean) * torch.rsqrt(variance + 1e-5)
        x = F.relu(x * weights[f"norms.{block}.weight"][:, None, None] + weights[f"norms.{block}.bias"][:, None, None])
        block += 1
    return x.mean(dim=(2, 3))


def logits(weights: dict[str, torch.Tensor], images: torch.Tensor, n_support: int) -> torch.Tensor:
    """images (B, 1, s, s), of which the first n_support are supports -> logits (B, N)."""
    return F.linear(features(weights, images, n_support), weights["head.weight"], weights["head.bias"])


def first_step_head(weights: dict, support_features: torch.Tensor, labels: torch.Tensor, inner_lr: float,
                    second_order: bool) -> dict:
    """The first SGD step on the supports' mean cross-entropy from the shared head, in closed form.

    Every class's logit is the same, so the softmax is 1/N and the gradient with respect to the
    features is zero: the convolutions do not move, and the head's gradient is (P - Y)^T F / B
    (tests/test_episodic_methods.py checks it against autograd's). One forward pass instead of a
    forward and a backward through the convolutions: the whole cost of a one-step prediction."""
    n_way = weights["head.weight"].shape[0]
    error = 1.0 / n_way - F.one_hot(labels, n_way).to(support_features.dtype)  # (B, N): P - Y
    weight_grad = error.T @ support_features / len(labels)
    bias_grad = error.mean(0)
    if not second_order:
        weight_grad, bias_grad = weight_grad.detach(), bias_grad.detach()
    return dict(weights, **{"head.weight": weights["head.weight"] - inner_lr * weight_grad,
                            "head.bias": weights["head.bias"] - inner_lr * bias_grad})


def adapted_logits(weights: dict, support: torch.Tensor, labels: torch.Tensor, query: torch.Tensor,
                   steps: int, inner_lr: float, second_order: bool) -> torch.Tensor:
    """One episode: `steps` SGD steps on the supports from the shared-head `weights`
    (`MamlNet.initial_weights`), then the queries' logits. The first step is `first_step_head`."""
    images = torch.cat([support, query])
    pooled = features(weights, images, len(support))
    weights = first_step_head(weights, pooled[:len(support)], labels, inner_lr, second_order)
    if steps == 1:  # the convolutions have not moved: the features above serve the queries
        return F.linear(pooled[len(support):], weights["head.weight"], weights["head.bias"])

    def support_loss(fast):
        return F.cross_entropy(logits(fast, support, len(support)), labels)

    for _ in range(steps - 1):
        grads = torch.func.grad(support_loss)(weights)
        weights = {name: w - inner_lr * (grads[name] if second_order else grads[name].detach())
                   for name, w in weights.items()}
    return logits(weights, images, len(support))[len(support):]


@register_method("maml")
class MAML(EmbeddingMethod):
    """MAML (Finn et al. 2017): a conv net's initialisation, adapted on each episode's supports by a few SGD steps."""

    capabilities = Capabilities(needs_training=True, deterministic=True, uses_gpu=True)
    CHECK_PARAMS = {"steps": 30, "train_ways": 5, "meta_batch": 2, "channels": 8, "validate_every": 15,
                    "validation_episodes": 10}
    score_needs_grad = True  # the adaptation takes gradients inside `score`

    # Defaults sized for 2 CPU cores (about 3 minutes of training): Protonet-sized tasks rather than
    # Finn et al.'s 5-way ones -- one 60-way task a step, 1 inner step at 4.8 (0.08 per class: the
    # step on a class's head row shrinks as 1/N, see the module docstring) and 1 step at test --
    # 4500 steps, a cosine schedule from 3e-3, 32 channels instead of 64 (prediction adapts on
    # every episode: 4x cheaper). configs/maml2017.yaml is the paper's recipe.
    def __init__(self, steps: int = 4500, train_ways: int = 60, train_shots: int = 1, train_queries: int = 5,
                 meta_batch: int = 1, inner_steps: int = 1, test_inner_steps: int = 1, inner_lr: float = 4.8,
                 first_order: bool = False, learning_rate: float = 3e-3, lr_schedule: str = "cosine",
                 image_size: int = 28, channels: int = 32, rotations: bool = True, validation_alphabets: int = 3,
                 validate_every: int = 500, validation_episodes: int = 100):
        self.steps = steps
        self.train_ways = train_ways
        self.train_shots = train_shots
        self.train_queries = train_queries
        self.meta_batch = meta_batch
        self.inner_steps = inner_steps
        self.test_inner_steps = test_inner_steps
        self.inner_lr = inner_lr
        self.first_order = first_order
        self.learning_rate = learning_rate
        self.lr_schedule = lr_schedule
        self.image_size = image_size
        self.channels = channels
        self.rotations = rotations
        self.validation_alphabets = validation_alphabets
        self.validate_every = validate_every
        self.validation_episodes = validation_episodes

    def fit(self, training_split, context: FitContext) -> MAML:
        self._check_params()
        self.device_ = torch.device(context.device)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(context.seed)
            self.network_ = MamlNet(self.channels).to(self.device_)
        self.training_info_ = load_or_train(self, context, self.network_, self.get_params(), training_split,
                                            TRAINING_VERSION, lambda: self._train(training_split, context))
        self.reset_embeddings()
        return self

    def _check_params(self) -> None:
        for name in ("steps", "train_ways", "train_shots", "train_queries", "meta_batch", "test_inner_steps",
                     "channels", "validate_every", "validation_episodes"):
            if getattr(self, name) < 1:
                raise ConfigError(f"maml: {name} must be >= 1, got {getattr(self, name)}")
        if self.inner_steps < 1 or self.inner_lr <= 0:
            raise ConfigError(f"maml: inner_steps must be >= 1 and inner_lr > 0, got {self.inner_steps} "
                              f"and {self.inner_lr}")
        if self.train_shots + self.train_queries > 20:
            raise ConfigError("maml: train_shots + train_queries must be <= 20 (drawings per character)")
        if self.image_size < 16:
            raise ConfigError(f"maml: image_size must be >= 16 (four stride-2 convolutions), got {self.image_size}")
        if self.lr_schedule not in LR_SCHEDULES:
            raise ConfigError(f"maml: lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}")

    def _train(self, training_split, context: FitContext) -> dict:
        train_split, validation_split = split_background(training_split, self.validation_alphabets)
        images = split_tensor(train_split, self.image_size, self.device_)  # (C, 20, 1, s, s)
        # One draw of meta_batch x train_ways distinct classes, cut into meta_batch tasks.
        sampler = EpisodeSampler(images, self.train_ways * self.meta_batch, self.train_shots, self.train_queries,
                                 self.rotations, seeded_generator(context.seed, self.device_))
        tasks = sampler.ways // self.train_ways
        shots = self.train_shots

        def step_loss(step: int) -> torch.Tensor:
            drawn = sampler.sample()[:tasks * self.train_ways]  # (tasks * ways, shots + queries, 1, s, s)
            drawn = drawn.reshape(tasks, self.train_ways, *drawn.shape[1:])
            support = drawn[:, :, :shots].flatten(1, 2)
            query = drawn[:, :, shots:].flatten(1, 2)
            query_logits = self._adapt(support, query, self.train_ways, shots, self.inner_steps,
                                       second_order=not self.first_order)
            query_labels = torch.arange(self.train_ways, device=self.device_).repeat_interleave(self.train_queries)
            return F.cross_entropy(query_logits.flatten(0, 1), query_labels.repeat(tasks))

        schedule = Schedule(self.steps, self.lr_schedule, final_factor=0.01)
        info = train_episodic(self, self.network_, step_loss, schedule, context, validation_split)
        info["train_classes"] = sampler.n_classes
        return info

    def _adapt(self, support: torch.Tensor, query: torch.Tensor, n_way: int, k_shot: int, steps: int,
               second_order: bool) -> torch.Tensor:
        """support (e, N*k, 1, s, s) class-major, query (e, Q, 1, s, s) -> adapted query logits (e, Q, N)."""
        weights = self.network_.initial_weights(n_way)
        labels = torch.arange(n_way, device=support.device).repeat_interleave(k_shot)
        episode = lambda s, q: adapted_logits(weights, s, labels, q, steps, self.inner_lr, second_order)  # noqa: E731
        return torch.func.vmap(episode, randomness="error")(support, query)

    # ---- inference -----------------------------------------------------------------------

    def embed(self, images: np.ndarray) -> torch.Tensor:
        return resize_images(images, self.image_size, self.device_).flatten(1)

    def score(self, query: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
        e, n, k, _ = support.shape
        side = self.image_size
        support_images = support.reshape(e, n * k, 1, side, side)
        query_images = query.reshape(e, query.shape[1], 1, side, side)
        # vmap turns each convolution into a grouped one over the chunk's episodes: faster than a
        # loop for small support sets, slower for large ones (measured on 2 CPU cores: 5.3 against
        # 11.7 ms an episode at 20-way 1-shot, 43 against 25 at 20-way 5-shot).
        per_call = e if n * k <= VMAP_MAX_SUPPORTS else 1
        return torch.cat([self._adapt(support_images[i:i + per_call], query_images[i:i + per_call], n, k,
                                      self.test_inner_steps, second_order=False).detach()
                          for i in range(0, e, per_call)])

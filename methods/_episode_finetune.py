"""Fine-tune a new linear head per episode, for every episode at once, on its supports only.

The parameters of all episodes are stacked along a leading episode axis (head weights of
shape episodes x N x features) and trained together by one optimiser: the loss is the sum
of the episodes' own losses and Adam works element by element, so each episode's head
follows exactly the path it would follow alone. The trunk's last conv block can be adapted
too, as per-episode copies of its weights applied with batched matrix products.

Labels come from positions: support[e, j] holds the k images of class j of episode e.
Nothing here sees a query until the heads are trained.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

ADAPT_CHOICES = ("head", "head+last")


@dataclass(frozen=True)
class FineTuneSettings:
    steps: int = 20
    learning_rate: float = 0.01
    weight_decay: float = 0.0  # L2 on the head's weights (not its bias, not the trunk layer)
    prototype_init: bool = True  # start from the normalised support means, else from zero
    logit_scale: float = 10.0  # length of the prototype-initialised weight rows
    last_layer_lr_scale: float = 0.1  # the trunk layer moves this much slower than the head


@dataclass(frozen=True)
class LastBlock:
    """A trained conv-BN-ReLU-maxpool(2) block with its batch norm folded into the conv.

    In evaluation mode batch norm is a fixed affine map per channel, so conv then BN is one
    conv with rescaled weights and a shifted bias: fine-tuning that conv adapts the block.
    """

    weight: torch.Tensor  # (out, in * 3 * 3)
    bias: torch.Tensor  # (out,)
    in_shape: tuple[int, int, int]  # (channels, height, width) of the block's input

    @classmethod
    def from_block(cls, block: nn.Sequential, in_shape: tuple[int, int, int]) -> LastBlock:
        conv, norm = block[0], block[1]
        if conv.kernel_size != (3, 3) or conv.padding != (1, 1) or conv.stride != (1, 1):
            raise ValueError("the last block must be a 3x3 convolution with padding 1 and stride 1")
        gain = norm.weight / torch.sqrt(norm.running_var + norm.eps)
        bias = conv.bias if conv.bias is not None else torch.zeros_like(norm.running_mean)
        weight = (conv.weight * gain[:, None, None, None]).reshape(conv.out_channels, -1)
        return cls(weight.detach().clone(), ((bias - norm.running_mean) * gain + norm.bias).detach().clone(),
                   tuple(in_shape))

    def columns(self, inputs: torch.Tensor) -> torch.Tensor:
        """(E, S, in*h*w) block inputs -> (E, in*9, S*P) patches of the P positions the pool keeps.

        Laid out once for a batched matrix product, so no step of the fine-tuning copies them.
        """
        channels, height, width = self.in_shape
        episodes, images = inputs.shape[:2]
        patches = F.unfold(inputs.reshape(episodes * images, channels, height, width), 3, padding=1)
        # A 2x2 max-pool with floor keeps only the top-left 2*(h//2) x 2*(w//2) outputs.
        kept_h, kept_w = 2 * (height // 2), 2 * (width // 2)
        patches = patches.reshape(episodes, images, channels * 9, height, width)[..., :kept_h, :kept_w]
        return patches.permute(0, 2, 1, 3, 4).reshape(episodes, channels * 9, images * kept_h * kept_w)

    def apply(self, columns: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        """Patches (E, in*9, S*P), per-episode weight (E, out, in*9), bias (E, out) -> (E, S, features)."""
        _, height, width = self.in_shape
        kept_h, kept_w = 2 * (height // 2), 2 * (width // 2)
        out = torch.baddbmm(bias[:, :, None], weight, columns).relu()  # (E, out, S*P)
        episodes, channels = out.shape[:2]
        out = out.reshape(episodes, channels, -1, kept_h, kept_w).transpose(1, 2)
        pooled = F.max_pool2d(out.reshape(-1, channels, kept_h, kept_w), 2)
        return pooled.reshape(episodes, out.shape[1], -1)


@dataclass
class EpisodeHeads:
    """The fine-tuned parameters of E episodes."""

    weight: torch.Tensor  # (E, N, features)
    bias: torch.Tensor  # (E, N)
    last_weight: torch.Tensor | None = None  # (E, out, in*9) when the last block is adapted
    last_bias: torch.Tensor | None = None  # (E, out)


def _features(inputs: torch.Tensor, heads: EpisodeHeads, last: LastBlock | None,
              columns: torch.Tensor | None = None) -> torch.Tensor:
    """Unit-length features (E, S, F) of cached trunk outputs (E, S, D) under each episode's parameters."""
    if last is not None:
        columns = last.columns(inputs) if columns is None else columns
        inputs = last.apply(columns, heads.last_weight, heads.last_bias)
    return F.normalize(inputs, dim=-1)


def _logits(features: torch.Tensor, heads: EpisodeHeads) -> torch.Tensor:
    return torch.einsum("esf,enf->esn", features, heads.weight) + heads.bias[:, None, :]


def fine_tune_heads(support: torch.Tensor, settings: FineTuneSettings,
                    last: LastBlock | None = None) -> EpisodeHeads:
    """Train one N-way head per episode on its support features (E, N, k, D); labels by position."""
    episodes, n_way, k_shot, _ = support.shape
    support = support.detach().reshape(episodes, n_way * k_shot, -1)
    labels = torch.arange(n_way, device=support.device).repeat_interleave(k_shot)
    columns = last.columns(support) if last is not None else None
    heads = EpisodeHeads(weight=torch.empty(0), bias=support.new_zeros(episodes, n_way))
    if last is not None:
        heads.last_weight = last.weight.to(support).expand(episodes, -1, -1).clone()
        heads.last_bias = last.bias.to(support).expand(episodes, -1).clone()
    with torch.no_grad():
        features = _features(support, heads, last, columns)
    if settings.prototype_init:
        prototypes = features.reshape(episodes, n_way, k_shot, -1).mean(2)
        heads.weight = settings.logit_scale * F.normalize(prototypes, dim=-1)
    else:
        heads.weight = features.new_zeros(episodes, n_way, features.shape[-1])
    if settings.steps <= 0:
        return heads
    groups = [{"params": [heads.weight], "weight_decay": settings.weight_decay},
              {"params": [heads.bias], "weight_decay": 0.0}]
    if last is not None:
        groups.append({"params": [heads.last_weight, heads.last_bias], "weight_decay": 0.0,
                       "lr": settings.learning_rate * settings.last_layer_lr_scale})
    for group in groups:
        for parameter in group["params"]:
            parameter.requires_grad_(True)
    optimiser = torch.optim.Adam(groups, lr=settings.learning_rate)
    with torch.enable_grad():
        for _ in range(settings.steps):
            logits = _logits(features if last is None else _features(support, heads, last, columns), heads)
            # Summed over episodes, so an episode's gradient does not depend on the others.
            loss = F.cross_entropy(logits.reshape(-1, n_way), labels.repeat(episodes), reduction="none")
            optimiser.zero_grad(set_to_none=True)
            loss.reshape(episodes, -1).mean(1).sum().backward()
            optimiser.step()
    for name in ("weight", "bias", "last_weight", "last_bias"):
        if getattr(heads, name) is not None:
            setattr(heads, name, getattr(heads, name).detach())
    return heads


def classify(query: torch.Tensor, heads: EpisodeHeads, last: LastBlock | None = None) -> torch.Tensor:
    """Query trunk outputs (E, Q, D) -> logits (E, Q, N) of each episode's own head."""
    with torch.no_grad():
        return _logits(_features(query, heads, last), heads)

"""Matching Networks (Vinyals, Blundell, Lillicrap, Kavukcuoglu & Wierstra, 2016).

A query attends to every support drawing of its episode by the cosine similarity of their
embeddings, softmaxed over the support set; a class's probability is the attention its
drawings receive (P(y | x) = sum over i of a(x, x_i) [y_i = y]), and its score is the log of
that. The embedding is the conv4 net of Vinyals et al. (the same as prototypical networks')
and trains on episodes of the background alphabets through the shared training loop (the
episodes, the validation and the schedule are protonet's: methods/protonet.py).

Full context embeddings (`full_context: true`, Vinyals et al. section 2.1.2) let the support
set shape every embedding: each support embedding is read by a bidirectional LSTM over the
set (g), and each query embedding is refined by an LSTM that attends over that set for
`context_steps` steps (f). The paper's LSTM reads the supports in the order they come; here
they are read in an order fixed by their own features, so reordering the classes of an
episode only reorders the scores (the contract's `relabel_equivariant` rule). A query never
sees the other queries, with or without it: the method is inductive.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from benchmark.errors import ConfigError
from benchmark.nets import ConvNet4
from benchmark.registry import register_method
from methods.protonet import PrototypicalNetwork


class FullContext(nn.Module):
    """Vinyals et al.'s full context embeddings: g, a bidirectional LSTM over the support set,
    and f, an attention LSTM that refines a query embedding against g's output."""

    def __init__(self, features: int, steps: int):
        super().__init__()
        self.steps = steps
        self.support_lstm = nn.LSTM(features, features, batch_first=True, bidirectional=True)
        self.query_cell = nn.LSTMCell(2 * features, features)

    def supports(self, support: torch.Tensor) -> torch.Tensor:
        """(e, S, d) -> (e, S, d): each support plus both directions' hidden states, read in
        an order fixed by the features themselves (so the class order does not matter)."""
        order = support.sum(-1).argsort(dim=1)
        ordered = support.gather(1, order[..., None].expand_as(support))
        hidden, _ = self.support_lstm(ordered)
        forward, backward = hidden.chunk(2, dim=-1)
        read = ordered + forward + backward
        return torch.empty_like(read).scatter_(1, order[..., None].expand_as(read), read)

    def queries(self, query: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
        """query (e, Q, d), support (e, S, d) as `supports` made them -> refined queries (e, Q, d)."""
        e, q, d = query.shape
        flat = query.reshape(e * q, d)
        hidden, cell = torch.zeros_like(flat), torch.zeros_like(flat)
        for _ in range(self.steps):
            attention = torch.softmax(torch.bmm(hidden.view(e, q, d), support.transpose(1, 2)), dim=-1)
            readout = torch.bmm(attention, support).reshape(e * q, d)
            hidden, cell = self.query_cell(torch.cat([flat, readout], dim=-1), (hidden, cell))
            hidden = hidden + flat
        return hidden.view(e, q, d)


class MatchingNet(nn.Module):
    """The conv4 embedding, and the full context embeddings when asked for."""

    def __init__(self, channels: int, image_size: int, full_context: bool, context_steps: int):
        super().__init__()
        self.encoder = ConvNet4(channels=channels)
        features = channels * ConvNet4.output_size(image_size) ** 2
        self.context = FullContext(features, context_steps) if full_context else None

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.encoder(images)


def attention_log_probabilities(query: torch.Tensor, support: torch.Tensor, scale: float) -> torch.Tensor:
    """query (e, Q, d), support (e, N, k, d) -> log P(class | query) (e, Q, N): the log of the
    softmax attention (over all N*k supports) of the cosine similarities, summed per class."""
    e, n, k, d = support.shape
    cosine = torch.bmm(F.normalize(query, dim=-1), F.normalize(support.reshape(e, n * k, d), dim=-1).transpose(1, 2))
    logits = scale * cosine
    per_class = logits.reshape(e, query.shape[1], n, k).logsumexp(-1)
    return per_class - logits.logsumexp(-1, keepdim=True)


@register_method("matching")
class MatchingNetwork(PrototypicalNetwork):
    """Matching Networks (Vinyals et al. 2016): cosine attention over the support set of a conv4 embedding."""

    # capabilities and CHECK_PARAMS: protonet's, inherited (the same training and scoring contract).

    def __init__(self, steps: int = 3000, train_ways: int = 20, train_queries: int = 5,
                 cosine_scale: float = 10.0, full_context: bool = False, context_steps: int = 5, **kwargs):
        super().__init__(steps=steps, train_ways=train_ways, train_queries=train_queries, **kwargs)
        self.cosine_scale = cosine_scale
        self.full_context = full_context
        self.context_steps = context_steps

    def build_network(self) -> nn.Module:
        if self.cosine_scale <= 0:
            raise ConfigError(f"matching: cosine_scale must be > 0, got {self.cosine_scale}")
        if self.context_steps < 1:
            raise ConfigError(f"matching: context_steps must be >= 1, got {self.context_steps}")
        return MatchingNet(self.channels, self.image_size, self.full_context, self.context_steps)

    def score(self, query: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
        context = self.network_.context
        if context is not None:
            e, n, k, d = support.shape
            read = context.supports(support.reshape(e, n * k, d))
            query, support = context.queries(query, read), read.reshape(e, n, k, d)
        return attention_log_probabilities(query, support, self.cosine_scale)

    def episode_loss(self, query: torch.Tensor, support: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.nll_loss(self.score(query, support)[0], labels)

"""Matching Networks, Relation Network and MAML on tiny synthetic data: training lowers the
loss, checkpoints round-trip, and each method's own piece against a direct computation.
(The contract rules run on every built-in method in tests/test_checks.py.)"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from benchmark.api import EpisodeBatch
from benchmark.checkpoints import CheckpointStore
from benchmark.checks import check_method
from benchmark.data import Omniglot
from benchmark.errors import ConfigError
from methods.maml import MAML, MamlNet, adapted_logits, logits
from methods.matching import MatchingNetwork, attention_log_probabilities
from methods.relation import RelationModule, RelationNetwork
from tasks import episodes as episode_sets
from tests.test_protonet import coarse_split, quiet_context

QUICK = {
    MatchingNetwork: dict(steps=30, train_ways=8, train_queries=2, channels=16, validation_alphabets=0,
                          rotations=False, precision="fp32", learning_rate=3e-3),
    RelationNetwork: dict(steps=40, train_ways=8, train_queries=2, channels=16, validation_alphabets=0,
                          rotations=False, precision="fp32", learning_rate=3e-3),
    MAML: dict(steps=40, train_ways=5, meta_batch=2, channels=16, validation_alphabets=0, rotations=False,
               learning_rate=1e-2, lr_schedule="constant", inner_lr=0.4, test_inner_steps=2),
}
METHODS = list(QUICK)


@pytest.fixture(scope="module")
def data():
    return Omniglot("synthetic", coarse_split("background", {"Alpha": 6, "Beta": 5, "Gamma": 5}, 1),
                    coarse_split("evaluation", {"Delta": 8, "Epsilon": 6, "Zeta": 4}, 2))


def batch_of(split, n_way=5, k_shot=1, episodes=20, seed=3):
    task = episode_sets.generate(split.alphabet, split.sha256, "cross", n_way, k_shot, 1, episodes, seed)
    return EpisodeBatch(split.flat_images, task.support, task.query, split.sha256), task


def accuracy(method, split):
    batch, task = batch_of(split, episodes=40)
    return float(np.mean(method.predict(batch).argmax(-1) == task.query_label))


@pytest.mark.parametrize("cls", METHODS, ids=lambda cls: cls.name)
def test_a_few_steps_lower_the_loss_and_beat_the_untrained_net(cls, data):
    trained = cls(**QUICK[cls]).fit(data.background, quiet_context())
    untrained = cls(**dict(QUICK[cls], steps=1, learning_rate=1e-12)).fit(data.background, quiet_context())
    assert trained.training_info_["final_loss"] < 0.7 * untrained.training_info_["final_loss"]
    assert accuracy(trained, data.evaluation) > max(0.5, accuracy(untrained, data.evaluation))


@pytest.mark.parametrize("cls", METHODS, ids=lambda cls: cls.name)
def test_checkpoint_round_trip_gives_identical_predictions(cls, data, tmp_path):
    batch, _ = batch_of(data.evaluation, episodes=6)
    store = CheckpointStore(tmp_path, log=lambda message: None)
    params = dict(QUICK[cls], steps=4)
    trained = cls(**params).fit(data.background, quiet_context(checkpoints=store))
    loaded = cls(**params).fit(data.background, quiet_context(checkpoints=store))
    assert "from_checkpoint" not in trained.training_info_ and "from_checkpoint" in loaded.training_info_
    assert np.array_equal(trained.predict(batch), loaded.predict(batch))


# ---- Matching Networks

def test_matching_scores_are_log_attention_summed_per_class():
    query, support = torch.randn(2, 3, 6), torch.randn(2, 4, 2, 6)
    scores = attention_log_probabilities(query, support, scale=5.0)
    cosine = F.cosine_similarity(query[:, :, None, None, :], support[:, None], dim=-1)  # (e, Q, N, k)
    attention = torch.softmax(5.0 * cosine.flatten(2), dim=-1).reshape(cosine.shape)
    torch.testing.assert_close(scores.exp(), attention.sum(-1))


def test_full_context_embeddings_keep_the_contract():
    # The support LSTM reads in an order fixed by the features: reordering classes reorders scores only.
    outcome = check_method(MatchingNetwork, {"full_context": True, "context_steps": 2},
                           rules=["relabel_equivariant", "inductive", "deterministic"])
    assert set(outcome.values()) == {"passed"}


def test_full_context_embeddings_change_the_scores(data):
    batch, _ = batch_of(data.evaluation, episodes=4)
    params = dict(QUICK[MatchingNetwork], steps=3)
    plain = MatchingNetwork(**params).fit(data.background, quiet_context())
    context = MatchingNetwork(**params, full_context=True).fit(data.background, quiet_context())
    assert not np.allclose(plain.predict(batch), context.predict(batch))


# ---- Relation Network

def test_the_split_first_convolution_equals_convolving_each_concatenated_pair():
    torch.manual_seed(0)
    module = RelationModule(channels=4).eval()
    classes, queries = torch.randn(2, 3, 4, 5, 5), torch.randn(2, 2, 4, 5, 5)
    scores = module(classes, queries)
    for e in range(2):
        for q in range(2):
            for n in range(3):
                pair = torch.cat([classes[e, n], queries[e, q]])[None]
                hidden = module.block(module.pair_rest(module.pair_conv(pair)))
                direct = torch.sigmoid(module.head(hidden.flatten(1)))[0, 0]
                torch.testing.assert_close(scores[e, q, n], direct, rtol=1e-5, atol=1e-6)


def test_relation_scores_a_k_shot_class_by_the_mean_of_its_support_maps(data):
    method = RelationNetwork(**dict(QUICK[RelationNetwork], steps=2)).fit(data.background, quiet_context())
    query, support = torch.randn(2, 3, 16 * 25), torch.randn(2, 4, 5, 16 * 25)
    torch.testing.assert_close(method.score(query, support), method.score(query, support.mean(2, keepdim=True)))


def test_relation_refuses_images_too_small_for_its_module(data):
    with pytest.raises(ConfigError, match="relation: image_size must be >= 22"):
        RelationNetwork(**dict(QUICK[RelationNetwork], image_size=20)).fit(data.background, quiet_context())


# ---- MAML

@pytest.mark.parametrize("vmap_max_supports", [64, 1], ids=["vmap", "one-episode-a-call"])
def test_maml_batched_adaptation_equals_one_episode_at_a_time(data, monkeypatch, vmap_max_supports):
    monkeypatch.setattr("methods.maml.VMAP_MAX_SUPPORTS", vmap_max_supports)
    method = MAML(**dict(QUICK[MAML], steps=3)).fit(data.background, quiet_context())
    batch, _ = batch_of(data.evaluation, n_way=4, k_shot=2, episodes=3)
    features = method.embed(data.evaluation.flat_images)
    query, support = features[torch.as_tensor(batch.query)], features[torch.as_tensor(batch.support)]
    with torch.enable_grad():
        batched = method.score(query, support)
        side = method.image_size
        for e in range(3):
            one = method.score(query[e:e + 1], support[e:e + 1])
            torch.testing.assert_close(batched[e:e + 1], one, rtol=1e-4, atol=1e-5)
            # and by hand: SGD steps on the episode's supports from the shared head row
            weights = method.network_.initial_weights(4)
            labels = torch.arange(4).repeat_interleave(2)
            direct = adapted_logits(weights, support[e].reshape(-1, 1, side, side), labels,
                                    query[e].reshape(-1, 1, side, side), method.test_inner_steps,
                                    method.inner_lr, second_order=False)
            torch.testing.assert_close(batched[e], direct.detach(), rtol=1e-4, atol=1e-5)


def test_maml_normalises_queries_with_the_supports_statistics_only():
    torch.manual_seed(0)
    weights = MamlNet(channels=4).initial_weights(3)
    support, query = torch.randn(6, 1, 28, 28), torch.randn(5, 1, 28, 28)
    together = logits(weights, torch.cat([support, query]), 6)[6:]
    alone = torch.cat([logits(weights, torch.cat([support, q[None]]), 6)[6:] for q in query])
    torch.testing.assert_close(together, alone, rtol=1e-5, atol=1e-6)


def test_maml_first_inner_step_from_the_shared_head_moves_only_the_head_towards_class_means():
    torch.manual_seed(0)
    net = MamlNet(channels=4)
    n_way, k_shot, lr = 3, 2, 0.9
    weights = net.initial_weights(n_way)
    support = torch.randn(n_way * k_shot, 1, 28, 28)
    labels = torch.arange(n_way).repeat_interleave(k_shot)
    grads = torch.func.grad(lambda w: F.cross_entropy(logits(w, support, len(support)), labels))(weights)
    for name, grad in grads.items():
        if not name.startswith("head."):
            assert grad.abs().max() < 1e-6, name
    # the head row of class c moves by lr / N * (mean feature of c - mean feature of all supports)
    identity_head = dict(weights, **{"head.weight": torch.eye(4), "head.bias": torch.zeros(4)})
    features = logits(identity_head, support, len(support))  # the pooled features
    class_means = features.reshape(n_way, k_shot, -1).mean(1)
    torch.testing.assert_close(-lr * grads["head.weight"], lr / n_way * (class_means - features.mean(0)),
                               rtol=1e-4, atol=1e-6)
    torch.testing.assert_close(grads["head.bias"], torch.zeros(n_way), rtol=0, atol=1e-6)


@pytest.mark.parametrize("steps", [1, 3])
def test_maml_adaptation_with_its_closed_form_first_step_equals_autograd_sgd(steps):
    torch.manual_seed(0)
    net = MamlNet(channels=4)
    support, query = torch.randn(6, 1, 28, 28), torch.randn(4, 1, 28, 28)
    labels = torch.arange(3).repeat_interleave(2)

    def by_autograd(weights):
        loss = lambda w: F.cross_entropy(logits(w, support, 6), labels)  # noqa: E731
        for _ in range(steps):
            grads = torch.func.grad(loss)(weights)
            weights = {name: w - 0.5 * grads[name] for name, w in weights.items()}
        return logits(weights, torch.cat([support, query]), 6)[6:]

    meta_grads = []
    for adapt in (by_autograd, lambda w: adapted_logits(w, support, labels, query, steps, 0.5, True)):
        net.zero_grad()
        out = adapt(net.initial_weights(3))
        F.cross_entropy(out, torch.tensor([0, 1, 2, 0])).backward()
        meta_grads.append((out.detach(), net.convs[0].weight.grad.clone(), net.head.weight.grad.clone()))
    for expected, actual in zip(*meta_grads):
        torch.testing.assert_close(actual, expected, rtol=1e-4, atol=1e-6)


def test_second_order_meta_gradients_differ_from_first_order():
    torch.manual_seed(0)
    net = MamlNet(channels=4)
    support, query = torch.randn(6, 1, 28, 28), torch.randn(3, 1, 28, 28)
    labels = torch.arange(3).repeat_interleave(2)
    grads = {}
    for second_order in (True, False):
        net.zero_grad()
        out = adapted_logits(net.initial_weights(3), support, labels, query, 2, 0.4, second_order)
        F.cross_entropy(out, torch.arange(3)).backward()
        grads[second_order] = net.convs[0].weight.grad.clone()
    assert grads[True].abs().sum() > 0 and grads[False].abs().sum() > 0
    assert not torch.allclose(grads[True], grads[False])

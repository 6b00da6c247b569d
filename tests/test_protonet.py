"""Prototypical networks on tiny synthetic data: the geometry, training, seeding and caching."""

import numpy as np
import pytest
import torch

from benchmark.api import EpisodeBatch, FitContext
from benchmark.checkpoints import CheckpointStore
from benchmark.data import Omniglot, make_split
from benchmark.errors import ConfigError
from benchmark.training import Validator, split_background
from methods.protonet import (EpisodeSampler, PrototypicalNetwork, negative_squared_distances,
                              prototypes, rotate_quarter_turns)
from tasks import episodes as episode_sets

# Small and quick: 20 training steps of 10-way episodes on 16-channel nets.
QUICK = dict(steps=20, train_ways=10, train_queries=2, channels=16, validation_alphabets=1,
             validate_every=10, validation_episodes=20, precision="fp32")


def quiet_context(seed=0, **kwargs):
    return FitContext(seed=seed, progress=False, log=lambda message: None, **kwargs)


def coarse_split(name: str, alphabets: dict[str, int], seed: int):
    """Characters a small conv net can tell apart at 28x28: 4x4 grids of 20-pixel ink cells,
    any two characters differing in at least 4 cells; drawings shifted by up to 3 pixels, with
    20 pixels flipped."""
    rng = np.random.default_rng(seed)
    count = sum(alphabets.values())
    patterns = []
    while len(patterns) < count:
        candidate = rng.random((4, 4)) < 0.5
        if all((candidate != p).sum() >= 4 for p in patterns):
            patterns.append(candidate)
    images = np.zeros((count, 20, 105, 105), np.uint8)
    for c, pattern in enumerate(patterns):
        ink = np.kron(pattern.astype(np.uint8), np.ones((20, 20), np.uint8))
        for d in range(20):
            dy, dx = rng.integers(0, 4, size=2)
            images[c, d, 10 + dy:90 + dy, 10 + dx:90 + dx] = ink
            flips = rng.integers(0, 105, size=(20, 2))
            images[c, d, flips[:, 0], flips[:, 1]] ^= 1
    names = [a for a, k in alphabets.items() for _ in range(k)]
    characters = [f"character{i + 1:02d}" for k in alphabets.values() for i in range(k)]
    return make_split(name, images, np.array(names), np.array(characters))


@pytest.fixture(scope="module")
def data():
    return Omniglot("synthetic", coarse_split("background", {"Alpha": 6, "Beta": 5, "Gamma": 5}, 1),
                    coarse_split("evaluation", {"Delta": 8, "Epsilon": 6, "Zeta": 4}, 2))


def batch_of(split, protocol, n_way, k_shot, episodes=20, seed=3):
    task = episode_sets.generate(split.alphabet, split.sha256, protocol, n_way, k_shot, 1, episodes, seed)
    return EpisodeBatch(split.flat_images, task.support, task.query, split.sha256), task


def test_prototypes_are_the_class_means():
    support = torch.randn(3, 4, 5, 7, generator=torch.Generator().manual_seed(0))
    centres = prototypes(support)
    assert centres.shape == (3, 4, 7)
    for e in range(3):
        for n in range(4):
            expected = sum(support[e, n, i] for i in range(5)) / 5
            assert torch.allclose(centres[e, n], expected, atol=1e-6)


def test_scores_are_negative_squared_distances_to_the_class_means():
    generator = torch.Generator().manual_seed(1)
    query, support = torch.randn(2, 6, 8, generator=generator), torch.randn(2, 3, 4, 8, generator=generator)
    scores = PrototypicalNetwork().score(query, support)
    direct = torch.empty(2, 6, 3)
    for e in range(2):
        for q in range(6):
            for n in range(3):
                direct[e, q, n] = -((query[e, q] - support[e, n].mean(0)) ** 2).sum()
    assert torch.allclose(scores, direct, atol=1e-4)
    assert torch.equal(negative_squared_distances(query[:, :1], query[:, :1]), torch.zeros(2, 1, 1))


def test_quarter_turns_rotate_each_image_by_its_own_count():
    images = torch.arange(4 * 9, dtype=torch.float32).reshape(4, 1, 3, 3)
    turns = torch.tensor([0, 1, 2, 3])
    rotated = rotate_quarter_turns(images, turns)
    for i in range(4):
        assert torch.equal(rotated[i], torch.rot90(images[i], i, dims=(1, 2)))


def test_sampler_draws_distinct_classes_and_drawings():
    # Each image holds its own (character, drawing) code, so the draw can be read back.
    characters, drawings = 6, 20
    codes = (torch.arange(characters)[:, None] * 100 + torch.arange(drawings)[None]).float()
    images = codes[:, :, None, None, None].expand(characters, drawings, 1, 4, 4).clone()
    sampler = EpisodeSampler(images, ways=30, shots=2, queries=3, rotations=True,
                             generator=torch.Generator().manual_seed(0))
    assert sampler.n_classes == 24 and sampler.ways == 24  # capped at the classes there are
    batch = sampler.sample()
    assert batch.shape == (24, 5, 1, 4, 4)
    per_class = batch[:, :, 0, 0, 0]
    for row in per_class:
        assert len(set((row // 100).tolist())) == 1 and len(set(row.tolist())) == 5
    # Each character appears once per rotation: 4 times among the 24 classes.
    assert sorted((per_class[:, 0] // 100).tolist()) == sorted(list(range(characters)) * 4)


def accuracy(method, split, protocol="cross", n_way=10):
    batch, task = batch_of(split, protocol, n_way, 1, episodes=40)
    return np.mean(method.predict(batch).argmax(-1) == task.query_label)


def test_a_few_steps_separate_the_synthetic_characters(data):
    # No validation alphabets and no rotations: 40 steps of 10-way episodes on all 16 characters.
    params = dict(QUICK, steps=40, learning_rate=3e-3, rotations=False, validation_alphabets=0)
    method = PrototypicalNetwork(**params).fit(data.background, quiet_context())
    untrained = PrototypicalNetwork(**dict(params, steps=1, learning_rate=1e-12))
    untrained.fit(data.background, quiet_context())
    assert accuracy(method, data.background) == 1.0
    # New characters are told apart too, better than by the untrained net.
    assert accuracy(method, data.evaluation) >= max(0.95, accuracy(untrained, data.evaluation))
    assert method.training_info_["final_loss"] < untrained.training_info_["final_loss"] / 2


def test_validation_keeps_the_best_of_the_evaluated_weights(data):
    method = PrototypicalNetwork(**QUICK).fit(data.background, quiet_context())
    info = method.training_info_
    assert info["steps"] == 20 and info["train_classes"] == 40  # 10 characters x 4 rotations
    assert info["validation_alphabets"] == ["Alpha"]
    history = {entry["step"]: entry["validation_accuracy"] for entry in info["history"]}
    assert sorted(history) == [10, 20]
    assert round(info["best_validation_accuracy"], 4) == max(history.values()) == history[info["best_step"]]
    validation = split_background(data.background, 1)[1]
    again = Validator(validation, episodes=QUICK["validation_episodes"]).accuracy(method)
    assert round(again, 4) == info["best_validation_accuracy"]  # the kept weights are the best ones


def test_k_shot_prediction_uses_the_mean_of_the_support_embeddings(data):
    method = PrototypicalNetwork(**dict(QUICK, steps=2)).fit(data.background, quiet_context())
    batch, _ = batch_of(data.evaluation, "within", 4, 3, episodes=5)
    features = method.embed(data.evaluation.flat_images)
    query, support = features[torch.as_tensor(batch.query)], features[torch.as_tensor(batch.support)]
    centres = support.mean(2)
    direct = -((query[:, :, None, :] - centres[:, None, :, :]) ** 2).sum(-1)
    assert np.allclose(method.predict(batch), direct.numpy(), rtol=1e-4, atol=1e-3)


def test_same_seed_same_predictions_other_seed_others(data):
    batch, _ = batch_of(data.evaluation, "cross", 5, 1, episodes=10)
    first = PrototypicalNetwork(**dict(QUICK, steps=5)).fit(data.background, quiet_context(seed=4))
    again = PrototypicalNetwork(**dict(QUICK, steps=5)).fit(data.background, quiet_context(seed=4))
    other = PrototypicalNetwork(**dict(QUICK, steps=5)).fit(data.background, quiet_context(seed=5))
    assert np.array_equal(first.predict(batch), again.predict(batch))
    assert not np.allclose(first.predict(batch), other.predict(batch))


def test_fit_leaves_torch_global_generator_alone(data):
    state = torch.random.get_rng_state()
    PrototypicalNetwork(**dict(QUICK, steps=2)).fit(data.background, quiet_context())
    assert torch.equal(torch.random.get_rng_state(), state)


def test_checkpoint_round_trip_gives_identical_predictions(data, tmp_path):
    batch, _ = batch_of(data.evaluation, "cross", 5, 1, episodes=10)
    store = CheckpointStore(tmp_path, log=lambda message: None)
    trained = PrototypicalNetwork(**dict(QUICK, steps=5)).fit(data.background, quiet_context(checkpoints=store))
    assert "from_checkpoint" not in trained.training_info_
    loaded = PrototypicalNetwork(**dict(QUICK, steps=5)).fit(data.background, quiet_context(checkpoints=store))
    assert "from_checkpoint" in loaded.training_info_
    assert loaded.training_info_["steps"] == trained.training_info_["steps"]
    assert np.array_equal(trained.predict(batch), loaded.predict(batch))
    # Other hyperparameters are another key: trained, not loaded.
    other = PrototypicalNetwork(**dict(QUICK, steps=6)).fit(data.background, quiet_context(checkpoints=store))
    assert "from_checkpoint" not in other.training_info_


def test_without_validation_alphabets_the_last_weights_are_kept(data):
    method = PrototypicalNetwork(**dict(QUICK, steps=3, validation_alphabets=0, rotations=False,
                                        affine_probability=0.5, lr_schedule="step"))
    method.fit(data.background, quiet_context())
    assert method.training_info_["steps"] == 3 and "best_step" not in method.training_info_
    assert method.training_info_["train_classes"] == 16


@pytest.mark.parametrize("params, word", [
    ({"steps": 0}, "steps"), ({"train_ways": 1}, "train_ways"),
    ({"train_shots": 10, "train_queries": 11}, "train_shots"), ({"lr_schedule": "linear"}, "lr_schedule"),
    ({"precision": "fp8"}, "precision"), ({"image_size": 8}, "image_size"),
    ({"affine_probability": 2.0}, "affine_probability")])
def test_bad_hyperparameters_are_one_clear_error(data, params, word):
    with pytest.raises(ConfigError, match=word):
        PrototypicalNetwork(**dict(QUICK, **params)).fit(data.background, quiet_context())

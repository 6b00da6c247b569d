"""Shared training utilities: validation hold-out, resizing, augmentation, best-keeping, caching."""

import numpy as np
import torch

from benchmark.api import FitContext
from benchmark.augment import random_affine
from benchmark.checkpoints import CheckpointStore
from benchmark.nets import ConvNet4
from benchmark.training import BestKeeper, load_or_train, resize_images, split_background
from tests.synthetic import synthetic_split


def test_validation_alphabets_are_held_out_whole_and_independent_of_seed():
    background = synthetic_split("background", {"A": 20, "B": 3, "C": 21, "D": 22}, seed=0)
    train, validation = split_background(background, 2)
    assert set(validation.alphabets()) <= {"A", "C", "D"}  # only alphabets with >= 20 characters
    assert not set(train.alphabets()) & set(validation.alphabets())
    assert train.n_characters + validation.n_characters == background.n_characters
    again = split_background(background, 2)[1]
    assert again.sha256 == validation.sha256


def test_resize_keeps_ink_mass_and_shape():
    images = np.zeros((3, 105, 105), np.uint8)
    images[:, 40:60, 30:80] = 1
    small = resize_images(images, 28)
    assert small.shape == (3, 1, 28, 28) and 0 <= small.min() and small.max() <= 1
    fraction = small.mean().item()
    assert abs(fraction - images.mean()) < 0.01


def test_affine_is_identity_when_switched_off_and_seeded_when_on():
    images = resize_images(np.random.default_rng(0).integers(0, 2, (4, 105, 105)).astype(np.uint8), 105)
    generator = torch.Generator().manual_seed(0)
    same = random_affine(images, generator, probability=0.0)
    assert torch.allclose(same, images, atol=1e-4)  # float error of the sampling grid
    a = random_affine(images, torch.Generator().manual_seed(1), probability=1.0)
    b = random_affine(images, torch.Generator().manual_seed(1), probability=1.0)
    assert torch.equal(a, b) and not torch.allclose(a, images)


def test_best_keeper_keeps_the_best_weights_and_stops_after_patience():
    model = torch.nn.Linear(2, 1)
    keeper = BestKeeper(patience=2)
    assert not keeper.update(0.5, 10, model)
    best = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model.weight.add_(1)
    assert not keeper.update(0.4, 20, model)
    assert keeper.update(0.3, 30, model)
    assert keeper.best_step == 10 and torch.equal(keeper.best_state["weight"], best["weight"])


class Named:
    name = "toy"


def test_load_or_train_caches_and_reloads(tmp_path):
    store = CheckpointStore(tmp_path, log=lambda m: None)
    context = FitContext(checkpoints=store, log=lambda m: None)
    model = ConvNet4(channels=4)
    calls = []

    def train():
        calls.append(1)
        with torch.no_grad():
            for p in model.parameters():
                p.fill_(0.5)
        return {"steps": 3}

    info = load_or_train(Named(), context, model, "k" * 64, train)
    assert info["steps"] == 3 and calls == [1]
    fresh = ConvNet4(channels=4)
    info = load_or_train(Named(), context, fresh, "k" * 64, train)
    assert calls == [1] and "from_checkpoint" in info
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), model.state_dict().values()))
    wrong_shape = ConvNet4(channels=8)
    load_or_train(Named(), context, wrong_shape, "k" * 64, train)
    assert calls == [1, 1]  # a checkpoint that does not fit the model is not used
    retrain = FitContext(checkpoints=store, retrain=True, log=lambda m: None)
    load_or_train(Named(), retrain, fresh, "k" * 64, train)
    assert calls == [1, 1, 1]

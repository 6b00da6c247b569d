"""The one training loop and what goes with it: validation hold-out, resizing, augmentation,
the learning-rate function, keeping the best weights, caching."""

import math

import numpy as np
import pytest
import torch

from benchmark.api import FitContext
from benchmark.augment import random_affine
from benchmark.checkpoints import CheckpointStore
from benchmark.errors import MethodError
from benchmark.nets import ConvNet4
from benchmark.training import (BestKeeper, Schedule, learning_rate_factor, load_or_train, resize_images,
                                split_background, train)
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


class Split:
    sha256 = "d" * 64


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

    info = load_or_train(Named(), context, model, {"width": 4}, Split(), 1, train)
    assert info["steps"] == 3 and calls == [1]
    fresh = ConvNet4(channels=4)
    info = load_or_train(Named(), context, fresh, {"width": 4}, Split(), 1, train)
    assert calls == [1] and "from_checkpoint" in info
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), model.state_dict().values()))
    wrong_shape = ConvNet4(channels=8)
    load_or_train(Named(), context, wrong_shape, {"width": 4}, Split(), 1, train)
    assert calls == [1, 1]  # a checkpoint that does not fit the model is not used
    retrain = FitContext(checkpoints=store, retrain=True, log=lambda m: None)
    load_or_train(Named(), retrain, fresh, {"width": 4}, Split(), 1, train)
    assert calls == [1, 1, 1]
    other_version = FitContext(checkpoints=store, log=lambda m: None)
    load_or_train(Named(), other_version, fresh, {"width": 4}, Split(), 2, train)
    assert calls == [1, 1, 1, 1]  # a new training version makes a new key


# ---- the learning rate ---------------------------------------------------------------------

def test_one_learning_rate_function_covers_every_schedule():
    # cosine over the whole budget, to a floor
    floor = Schedule(100, "cosine", final_factor=0.01)
    assert learning_rate_factor(0, floor) == 1.0 and learning_rate_factor(100, floor) == pytest.approx(0.01)
    assert learning_rate_factor(50, floor) == pytest.approx(0.01 + 0.99 * 0.5)
    # warm-up then cosine from the end of the warm-up
    after = Schedule(100, "cosine", warmup_steps=10, decay_start=10)
    assert [learning_rate_factor(s, after) for s in (0, 4, 9, 10)] == pytest.approx([0.1, 0.5, 1.0, 1.0])
    assert learning_rate_factor(55, after) == pytest.approx(0.5)
    # warm-up multiplying a cosine over the whole budget
    during = Schedule(100, "cosine", warmup_steps=10)
    assert learning_rate_factor(4, during) == pytest.approx(0.5 * 0.5 * (1 + math.cos(math.pi * 0.04)))
    assert learning_rate_factor(50, during) == pytest.approx(0.5)
    assert [learning_rate_factor(s, Schedule(100, "step")) for s in (0, 19, 20, 99)] == [1, 1, 0.5, 0.0625]
    assert learning_rate_factor(30, Schedule(100, "exponential", steps_per_epoch=10)) == pytest.approx(0.99 ** 3)
    assert learning_rate_factor(70, Schedule(100, "constant", warmup_steps=5)) == 1.0
    with pytest.raises(ValueError, match="schedule"):
        learning_rate_factor(0, Schedule(10, "linear"))


# ---- the loop --------------------------------------------------------------------------------

def toy_problem(seed=0):
    """A linear model fitting y = 2x: loss falls as it trains; its weight says how far it got."""
    torch.manual_seed(seed)
    model = torch.nn.Linear(1, 1, bias=False)
    inputs = torch.linspace(-1, 1, 32)[:, None]

    def step_loss(step):
        return ((model(inputs) - 2 * inputs) ** 2).mean()

    return model, torch.optim.SGD(model.parameters(), lr=0.5), step_loss


QUIET = FitContext(progress=False, log=lambda m: None)


def test_the_loop_sets_the_learning_rate_of_every_step_and_trains():
    model, optimizer, step_loss = toy_problem()
    first_loss = step_loss(0).item()
    rates = []
    recorded = lambda step: (rates.append(optimizer.param_groups[0]["lr"]), step_loss(step))[1]  # noqa: E731
    info = train("toy", model, optimizer, recorded, Schedule(20, "step"), QUIET)
    assert rates == pytest.approx([0.5 * learning_rate_factor(s, Schedule(20, "step")) for s in range(20)])
    assert info["steps"] == 20 and info["final_loss"] < first_loss / 10 and "best_step" not in info
    assert not model.training  # left in eval mode


def test_the_loop_keeps_the_best_weights_and_stops_after_patience():
    model, optimizer, step_loss = toy_problem()
    scores = iter([0.2, 0.9, 0.5, 0.4, 0.3, 0.1])
    weights, seen = {}, []

    def validate():
        accuracy = next(scores)
        weights[accuracy] = model.weight.item()
        return accuracy

    context = FitContext(progress=False, log=lambda m: None, on_validation=lambda s, a: seen.append((s, a)))
    info = train("toy", model, optimizer, step_loss, Schedule(60, "constant"), context, validate=validate,
                 validate_every=5, patience=3)
    assert seen == [(5, 0.2), (10, 0.9), (15, 0.5), (20, 0.4), (25, 0.3)]  # stopped: 3 without improvement
    assert info["steps"] == 25 and info["best_step"] == 10 and info["best_validation_accuracy"] == 0.9
    assert model.weight.item() == weights[0.9]
    assert [entry["step"] for entry in info["history"]] == [5, 10, 15, 20, 25]


def test_the_loop_validates_after_the_last_step_too():
    model, optimizer, step_loss = toy_problem()
    seen = []
    context = FitContext(progress=False, log=lambda m: None, on_validation=lambda s, a: seen.append(s))
    train("toy", model, optimizer, step_loss, Schedule(12, "constant"), context, validate=lambda: 0.5,
          validate_every=5)
    assert seen == [5, 10, 12]


def test_a_failing_step_is_one_line_naming_the_method_and_the_step():
    model, optimizer, step_loss = toy_problem()

    def broken(step):
        if step == 3:
            raise RuntimeError("shapes do not match")
        return step_loss(step)

    with pytest.raises(MethodError, match="^toy: training failed at step 4: RuntimeError: shapes do not match$"):
        train("toy", model, optimizer, broken, Schedule(10), QUIET)

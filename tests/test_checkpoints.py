"""Checkpoints: corrupt, foreign or hostile files are reported and retrained, never used."""

import os
import pickle

import pytest
import torch

from benchmark.api import FitContext
from benchmark.checkpoints import CheckpointStore, checkpoint_key, load_state_into, state_sha256
from benchmark.training import load_or_train

KEY = checkpoint_key("toy", {"width": 3}, seed=0, data_sha256="d" * 64)
OTHER_KEY = checkpoint_key("toy", {"width": 4}, seed=0, data_sha256="d" * 64)


class Named:
    name = "toy"


class Split:
    sha256 = "d" * 64


def make_model(width=3):
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, width), torch.nn.BatchNorm1d(width))


def weights_of(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.fixture
def store(tmp_path):
    messages = []
    store = CheckpointStore(tmp_path / "checkpoints", log=messages.append)
    store.messages = messages
    return store


def test_a_saved_checkpoint_loads_back_exactly(store):
    state = {"weights": weights_of(make_model()), "info": {"steps": 3, "note": "ünïcode"}}
    path = store.save("toy", KEY, state)
    assert path.exists() and not [p for p in path.parent.iterdir() if p != path]  # no temporary left
    loaded = store.load("toy", KEY)
    assert loaded["info"] == state["info"]
    assert all(torch.equal(loaded["weights"][k], v) for k, v in state["weights"].items())
    assert store.messages == []


def damage_truncate(path):
    content = path.read_bytes()
    path.write_bytes(content[:len(content) // 2])


def damage_random_bytes(path):
    path.write_bytes(os.urandom(path.stat().st_size))


def damage_flip_a_weight(path):
    """Change one stored number but keep the file a valid checkpoint: only the hash can tell."""
    payload = torch.load(path, weights_only=True)
    payload["state"]["weights"]["0.weight"][0, 0] += 1.0
    torch.save(payload, path)


def damage_other_key(path):
    payload = torch.load(path, weights_only=True)
    payload["key"] = OTHER_KEY
    torch.save(payload, path)


def damage_no_hash(path):
    payload = torch.load(path, weights_only=True)
    del payload["sha256"]
    torch.save(payload, path)


@pytest.mark.parametrize("damage,reason", [(damage_truncate, "unreadable"),
                                           (damage_random_bytes, "unreadable"),
                                           (damage_flip_a_weight, "corrupt"),
                                           (damage_other_key, "another configuration"),
                                           (damage_no_hash, "corrupt")])
def test_a_damaged_or_foreign_checkpoint_is_reported_and_not_used(store, damage, reason):
    path = store.save("toy", KEY, {"weights": weights_of(make_model())})
    damage(path)
    assert store.load("toy", KEY) is None
    assert len(store.messages) == 1 and reason in store.messages[0] and str(path) in store.messages[0]


class Exploit:
    """Unpickling this would create a file: proof that code ran."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


@pytest.mark.parametrize("how", ["torch.save", "raw pickle"])
def test_loading_never_runs_pickled_code(store, tmp_path, how):
    marker = tmp_path / "pwned"
    path = store.path("toy", KEY)
    path.parent.mkdir(parents=True)
    payload = {"key": KEY, "state": {"weights": Exploit(marker)}, "sha256": "x"}
    if how == "torch.save":
        torch.save(payload, path)
    else:
        path.write_bytes(pickle.dumps(payload, protocol=2))
    assert not marker.exists()  # saving only recorded the call
    assert store.load("toy", KEY) is None
    assert not marker.exists()
    assert "unreadable" in store.messages[0]


def test_the_hash_covers_names_shapes_and_contents():
    state = weights_of(make_model())
    assert state_sha256(state) == state_sha256({k: v.clone() for k, v in reversed(state.items())})
    renamed = dict(state)
    renamed["renamed"] = renamed.pop("0.bias")
    reshaped = dict(state, **{"0.bias": state["0.bias"].reshape(1, -1)})
    retyped = dict(state, **{"0.bias": state["0.bias"].double()})
    changed = dict(state, **{"0.bias": state["0.bias"] + 1e-6})
    digests = {state_sha256(s) for s in (state, renamed, reshaped, retyped, changed)}
    assert len(digests) == 5


def test_load_state_into_loads_only_a_state_that_fits():
    messages = []
    source, target = make_model(), make_model()
    with torch.no_grad():
        source[0].weight.fill_(0.25)
    assert load_state_into(target, weights_of(source), log=messages.append)
    assert torch.equal(target[0].weight, source[0].weight) and messages == []

    before = weights_of(target)
    wider = weights_of(make_model(width=5))
    missing = {k: v for k, v in before.items() if k != "1.running_mean"}
    extra = dict(before, surplus=torch.zeros(1))
    retyped = dict(before, **{"0.weight": before["0.weight"].double()})
    not_tensor = dict(before, **{"0.bias": [0.0, 0.0, 0.0]})
    for state, fragment in [(wider, "0.weight is torch.float32 (5, 4)"), (missing, "missing 1.running_mean"),
                            (extra, "unexpected 'surplus'"), (retyped, "torch.float64"),
                            (not_tensor, "0.bias is a list"), ([1, 2], "holds a list")]:
        assert not load_state_into(target, state, log=messages.append)
        assert fragment in messages[-1] and "training again" in messages[-1]
        assert all(torch.equal(target.state_dict()[k], v) for k, v in before.items())  # untouched


def test_a_corrupt_or_foreign_checkpoint_is_retrained_by_load_or_train(store):
    context = FitContext(checkpoints=store, log=store.messages.append)
    calls = []

    def train_into(model):
        def train():
            calls.append(1)
            with torch.no_grad():
                model[0].weight.fill_(0.5)
            return {"steps": 1}
        return train

    model = make_model()
    load_or_train(Named(), context, model, {"width": 3}, Split(), 1, train_into(model))
    reloaded = make_model()
    load_or_train(Named(), context, reloaded, {"width": 3}, Split(), 1, train_into(reloaded))
    assert calls == [1] and torch.equal(reloaded[0].weight, model[0].weight)

    damage_flip_a_weight(store.path("toy", KEY))
    again = make_model()
    load_or_train(Named(), context, again, {"width": 3}, Split(), 1, train_into(again))
    assert calls == [1, 1] and any("corrupt" in m for m in store.messages)
    assert torch.equal(again[0].weight, torch.full_like(again[0].weight, 0.5))  # trained, not the flip

    wider = make_model(width=5)  # a checkpoint made for another architecture under this key
    load_or_train(Named(), context, wider, {"width": 3}, Split(), 1, train_into(wider))
    assert calls == [1, 1, 1]

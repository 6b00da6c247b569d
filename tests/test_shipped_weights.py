"""Shipped weights (weights/): current with today's training code, verified by hash, refused
when tampered with or stale; and the checkpoint cache's own staleness rule."""

import json
import sys

import numpy as np
import pytest

from benchmark import shipped_weights, training
from benchmark.api import FitContext
from benchmark.checkpoints import CheckpointStore
from benchmark.config import load_config
from benchmark.paths import DEFAULT_CONFIG
from benchmark.registry import create_method
from benchmark.shipped_weights import REGENERATE, ShippedWeights
from methods.protonet import PrototypicalNetwork
from tests.synthetic import synthetic_omniglot

DATA = synthetic_omniglot()
TINY = dict(steps=3, train_ways=5, train_queries=1, channels=8, validation_alphabets=0, precision="fp32")


def fit(store=None, shipped=None, logs=None):
    context = FitContext(progress=False, checkpoints=store, shipped_weights=shipped,
                         log=(logs.append if logs is not None else lambda message: None))
    return PrototypicalNetwork(**TINY).fit(DATA.background, context)


@pytest.fixture
def shipped(tmp_path):
    """A weights/ folder holding one tiny protonet, shipped the way ship-weights does it."""
    cache = CheckpointStore(tmp_path / "cache", log=lambda message: None)
    trained = fit(cache)
    key = trained.training_info_["checkpoint_key"]
    store = ShippedWeights(tmp_path / "weights", log=lambda message: None)
    store.add("protonet", key, cache.path("protonet", key), "tiny", {"date": "today"})
    return store, trained


def test_shipped_weights_are_used_when_nothing_is_cached(shipped):
    store, trained = shipped
    loaded = fit(shipped=store)
    assert loaded.training_info_["weights"] == "shipped"
    state = loaded.network_.state_dict()
    assert all(np.array_equal(state[k].numpy(), v.numpy()) for k, v in trained.network_.state_dict().items())


def test_tampered_shipped_weights_are_refused_and_the_method_trains(shipped):
    store, _ = shipped
    entry = store.manifest()["weights"][0]
    path = store.root / entry["file"]
    data = bytearray(path.read_bytes())
    data[-10] ^= 0xFF
    path.write_bytes(bytes(data))
    logs = []
    method = fit(shipped=ShippedWeights(store.root, log=logs.append), logs=logs)
    assert method.training_info_["weights"] == "trained"
    assert any("tampered with" in line for line in logs), logs


def test_stale_shipped_weights_are_refused_with_the_command_that_regenerates_them(shipped):
    store, _ = shipped
    manifest = store.manifest()
    manifest["weights"][0]["training_code"] = "0" * 64
    manifest["weights"][0]["code_files"]["methods/protonet.py"] = "0" * 64
    (store.root / "MANIFEST.json").write_text(json.dumps(manifest))
    logs = []
    method = fit(shipped=ShippedWeights(store.root, log=logs.append), logs=logs)
    assert method.training_info_["weights"] == "trained"
    stale = [line for line in logs if "stale" in line]
    assert stale and "methods/protonet.py" in stale[0] and REGENERATE in stale[0]


def test_retrain_ignores_shipped_weights(shipped):
    store, _ = shipped
    context = FitContext(progress=False, shipped_weights=store, retrain=True, log=lambda message: None)
    assert PrototypicalNetwork(**TINY).fit(DATA.background, context).training_info_["weights"] == "trained"


def test_cached_weights_of_other_training_code_are_not_used(tmp_path, monkeypatch):
    cache = CheckpointStore(tmp_path, log=lambda message: None)
    assert fit(cache).training_info_["weights"] == "trained"
    assert fit(cache).training_info_["weights"] == "cached"
    monkeypatch.setattr("benchmark.training.code_fingerprint", lambda module: "edited")
    logs = []
    assert fit(cache, logs=logs).training_info_["weights"] == "trained"
    assert any("other training code" in line for line in logs)


def test_training_code_ignores_comments_and_docstrings_but_not_code(tmp_path, monkeypatch):
    package = tmp_path / "pkg"
    package.mkdir()
    (package / "__init__.py").write_text("")
    (package / "helper.py").write_text('"""Doc."""\nSTEP = 1  # a comment\n')
    (package / "method.py").write_text("from pkg import helper\n\ndef f():\n    return helper.STEP\n")
    monkeypatch.setattr(shipped_weights, "PROJECT_ROOT", tmp_path)
    before = shipped_weights.training_code("pkg.method")
    assert set(before) == {"pkg/__init__.py", "pkg/helper.py", "pkg/method.py"}
    (package / "helper.py").write_text('"""Another doc."""\nSTEP = 1  # another comment\n\n')
    assert shipped_weights.training_code("pkg.method") == before
    (package / "helper.py").write_text('"""Doc."""\nSTEP = 2\n')
    after = shipped_weights.training_code("pkg.method")
    assert after["pkg/helper.py"] != before["pkg/helper.py"] and after["pkg/method.py"] == before["pkg/method.py"]


def test_every_shipped_file_is_intact_and_current():
    """The CI check: fails when a change to training code made weights/ stale."""
    store = ShippedWeights()
    entries = store.manifest()["weights"]
    assert entries, "weights/MANIFEST.json lists no shipped weights"
    problems = [store.problem(entry) for entry in entries]
    assert not any(problems), "\n".join(filter(None, problems))


def test_the_default_config_fits_every_trained_method_from_shipped_weights(omniglot, monkeypatch):
    """A new user's first run trains nothing: each trained method of the default config finds
    its weights in weights/ (same key: hyperparameters, seed, data, version)."""
    config = load_config(DEFAULT_CONFIG)
    sources = {}
    for name, params in config.methods.items():
        method = create_method(name, params)
        if not method.capabilities.needs_training:
            continue
        module = sys.modules[type(method).fit.__module__]  # where the fit that calls it is written
        monkeypatch.setattr(module, "load_or_train", without_training(training.load_or_train))
        # No checkpoint cache: only weights/ can serve.
        context = FitContext(seed=config.seed, progress=False, shipped_weights=ShippedWeights(log=lambda m: None),
                             log=lambda message: None)
        sources[name] = method.fit(omniglot.background, context).training_info_["weights"]
    assert sources and set(sources.values()) == {"shipped"}, sources


def without_training(load_or_train):
    """load_or_train whose training step fails the test instead of training for minutes."""
    def load_only(method, context, module, params, split, version, train_fn):
        return load_or_train(method, context, module, params, split, version,
                             lambda: pytest.fail(f"{method.name} would train: weights/ has nothing for its key; "
                                                 f"run `{REGENERATE}`"))
    return load_only

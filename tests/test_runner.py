"""The runner on synthetic data: records, manifest, failures isolated, resume."""

import json
import time

import numpy as np
import pandas as pd
import pytest

from benchmark import registry
from benchmark.api import Capabilities, Method
from benchmark.config import config_from_dict
from benchmark.report import write_report
from benchmark.run_folder import RECORD_COLUMNS, RunFolder
from benchmark.runner import RunOptions, run_benchmark
from tasks.sets import resolve_task_sets
from tests.synthetic import synthetic_omniglot

DATA = synthetic_omniglot()


def make_config(methods=("random", "nearest_neighbor")):
    return config_from_dict({
        "name": "tiny",
        "task_sets": {
            "cross": {"protocol": "cross", "n_way": [2, 5], "episodes": 30, "seed": 1},
            "within": {"protocol": "within", "n_way": [3], "n_query": 2, "episodes": 20, "seed": 2},
        },
        "methods": {name: {} for name in methods},
    })


def run(tmp_path, methods=("random", "nearest_neighbor"), out="run", **kwargs):
    config = make_config(methods)
    task_sets = resolve_task_sets(config, DATA)
    options = RunOptions(progress=False, checkpoint_dir=tmp_path / "checkpoints", log=lambda m: None, **kwargs)
    return run_benchmark(config, list(methods), DATA, task_sets, tmp_path / out, options)


def test_records_have_one_row_per_query(tmp_path):
    outcome = run(tmp_path)
    assert outcome.exit_code == 0
    records = RunFolder(tmp_path / "run").read_records()
    assert list(records.columns) == RECORD_COLUMNS
    per_method = 30 * 2 + 30 * 5 + 20 * 3 * 2
    assert len(records) == 2 * per_method
    assert not records.duplicated(["method", "task_set", "n_way", "episode", "query"]).any()
    manifest = json.loads((tmp_path / "run" / "run.json").read_text())
    assert len(manifest["chunks"]) == 6
    assert manifest["data"]["evaluation_sha256"] == DATA.evaluation.sha256
    assert set(manifest["methods"]) == {"random", "nearest_neighbor"}
    assert manifest["methods"]["random"]["source"] == "built-in"
    summary = write_report(tmp_path / "run").summary
    nn = summary[summary.method == "nearest_neighbor"]
    assert (nn.accuracy > 0.9).all()  # synthetic characters are easy for pixels
    for name in ("summary.csv", "summary.md", "accuracy_vs_n.png", "accuracy_vs_n.svg"):
        assert (tmp_path / "run" / name).stat().st_size > 0


def test_same_config_same_records(tmp_path):
    run(tmp_path, out="a")
    run(tmp_path, out="b")
    a = RunFolder(tmp_path / "a").read_records().drop(columns="run_id")
    b = RunFolder(tmp_path / "b").read_records().drop(columns="run_id")
    pd.testing.assert_frame_equal(a, b)


class Faulty(Method):
    """A plugin that misbehaves in the way named by its class attribute."""

    fault = "raise"

    def fit(self, background, context):
        if self.fault == "fit":
            raise RuntimeError("fit exploded")
        self.fitted_ = True
        return self

    def predict(self, batch):
        if self.fault == "raise":
            raise RuntimeError("boom")
        if self.fault == "shape":
            return np.zeros((batch.n_episodes, batch.n_way))
        if self.fault == "transposed":  # (E, N, Q): passes the shape check whenever Q == N
            return np.random.default_rng(0).random((batch.n_episodes, batch.n_way, batch.n_queries))
        scores = np.zeros(batch.score_shape)
        scores[0, 0, 0] = np.nan
        return scores


@pytest.mark.parametrize("fault,reason", [("fit", "fit raised RuntimeError: fit exploded"),
                                          ("raise", "predict raised RuntimeError: boom"),
                                          ("shape", "predict returned shape"),
                                          # Every task set's first N has Q == N (one query per class):
                                          # only the probe after fit, Q != N, sees it, before any record.
                                          ("transposed", "probe episode of 3 queries and 2 ways: transposed"),
                                          ("nan", "NaN")])
def test_a_faulty_method_fails_alone(tmp_path, fault, reason):
    name = f"faulty_{fault}"
    if name not in registry.available_names():
        registry.register_method(name)(type(name, (Faulty,), {"fault": fault}))
    outcome = run(tmp_path, methods=(name, "nearest_neighbor"))
    assert outcome.exit_code == 1
    assert reason in outcome.failures[name]
    records = RunFolder(tmp_path / "run").read_records()
    assert set(records.method) == {"nearest_neighbor"}
    assert len(records) == 30 * 2 + 30 * 5 + 20 * 3 * 2
    manifest = json.loads((tmp_path / "run" / "run.json").read_text())
    assert reason in manifest["failures"][name]
    # Where the failed method came from is recorded as for the one that worked.
    for method in (name, "nearest_neighbor"):
        entry = manifest["methods"][method]
        assert entry["source"] == registry.source_of(method)
        assert entry["params"] == {}
        assert entry["capabilities"] == vars(registry.get_method(method).capabilities)
    assert not manifest["methods"][name]["timing"]  # it has no times: it did not finish


class FailsUnlessFixed(Method):
    """Fails (in fit, or in predict on 5-way episodes only) until its hyperparameter is set right."""

    def __init__(self, fixed: bool = False, fails_in: str = "fit"):
        self.fixed = fixed
        self.fails_in = fails_in

    def fit(self, background, context):
        if not self.fixed and self.fails_in == "fit":
            raise RuntimeError("not fixed")
        self.fitted_ = True
        return self

    def predict(self, batch):
        if not self.fixed and batch.n_way == 5:
            raise RuntimeError("not fixed")
        return np.zeros(batch.score_shape)


@pytest.mark.parametrize("fails_in", ["fit", "predict"])
def test_rerunning_a_failed_method_with_other_hyperparameters_is_refused_only_if_it_has_results(
        tmp_path, fails_in):
    if "fails_unless_fixed" not in registry.available_names():
        registry.register_method("fails_unless_fixed")(FailsUnlessFixed)
    options = RunOptions(progress=False, checkpoint_dir=tmp_path / "checkpoints", log=lambda m: None)

    def config(fixed):
        return config_from_dict({**make_config(()).to_dict(),
                                 "methods": {"fails_unless_fixed": {"fixed": fixed, "fails_in": fails_in}}})

    task_sets = resolve_task_sets(config(False), DATA)
    outcome = run_benchmark(config(False), ["fails_unless_fixed"], DATA, task_sets, tmp_path / "run", options)
    assert "not fixed" in outcome.failures["fails_unless_fixed"]
    manifest = json.loads((tmp_path / "run" / "run.json").read_text())
    assert manifest["methods"]["fails_unless_fixed"]["params"] == {"fixed": False, "fails_in": fails_in}
    # Failing in predict on 5-way episodes, it finished the 2-way chunk first.
    assert len(manifest["chunks"]) == (0 if fails_in == "fit" else 1)

    outcome = run_benchmark(config(True), ["fails_unless_fixed"], DATA, task_sets, tmp_path / "run", options)
    manifest = json.loads((tmp_path / "run" / "run.json").read_text())
    if fails_in == "fit":  # no results yet: fixing the hyperparameter is a resume
        assert outcome.exit_code == 0, outcome.failures
        assert manifest["methods"]["fails_unless_fixed"]["params"] == {"fixed": True, "fails_in": "fit"}
        assert manifest["failures"] == {} and len(manifest["chunks"]) == 3
    else:  # records of the old hyperparameters must not be mixed with new ones
        assert "other hyperparameters" in outcome.failures["fails_unless_fixed"]
        assert manifest["methods"]["fails_unless_fixed"]["params"] == {"fixed": False, "fails_in": "predict"}
        assert len(manifest["chunks"]) == 1


def test_rerun_into_the_same_folder_resumes_without_redoing_work(tmp_path):
    run(tmp_path, methods=("random",))
    records = tmp_path / "run" / "records"
    first = {path.name: path.read_bytes() for path in records.iterdir()}
    # A chunk file written but not listed, as after a crash, is dropped on resume.
    (records / "random-s0-cross-9way-1shot.parquet").write_bytes(b"PAR1")
    run(tmp_path, methods=("random",))
    assert {path.name: path.read_bytes() for path in records.iterdir()} == first
    run(tmp_path, methods=("random", "nearest_neighbor"))
    records = RunFolder(tmp_path / "run").read_records()
    assert (records.method == "random").sum() == (records.method == "nearest_neighbor").sum()
    assert not records.duplicated(["method", "task_set", "n_way", "episode", "query"]).any()


def test_a_method_that_no_task_set_applies_to_is_said_so_not_called_done(tmp_path):
    config = config_from_dict({
        "name": "tiny",
        "task_sets": {"cross_background": {"protocol": "cross", "split": "background", "only_trained": True,
                                           "n_way": [2], "episodes": 5, "seed": 3}},
        "methods": {"random": {}},
    })
    messages = []
    options = RunOptions(progress=False, checkpoint_dir=tmp_path / "checkpoints", log=messages.append)
    outcome = run_benchmark(config, ["random"], DATA, resolve_task_sets(config, DATA), tmp_path / "run", options)
    assert outcome.exit_code == 0
    assert any("random: no task set of this config applies to it" in m for m in messages), messages
    assert not any("already done" in m for m in messages), messages


class SharesABackbone(Method):
    """A stand-in for methods that share one trained part: 0.3 s to build, built once."""

    capabilities = Capabilities(needs_training=True)
    builds = []

    def __init__(self):
        pass

    def fit(self, training_split, context):
        def build():
            SharesABackbone.builds.append(context.seed)
            time.sleep(0.3)
            return np.ones(3)

        self.backbone_ = context.shared("slow_backbone", build)
        return self

    def predict(self, batch):
        self.check_is_fitted("backbone_")
        return np.random.default_rng(batch.fingerprint()).random(batch.score_shape)


def test_methods_share_a_part_built_once_and_timed_apart(tmp_path):
    SharesABackbone.builds.clear()
    for name in ("head_a", "head_b"):
        registry.register_method(name)(type(name, (SharesABackbone,), {}))
    outcome = run(tmp_path, methods=("head_a", "head_b"), seeds=(0, 1))
    assert outcome.exit_code == 0
    assert SharesABackbone.builds == [0, 1]  # once per training seed, by the first method to ask
    manifest = json.loads((tmp_path / "run" / "run.json").read_text())
    assert set(manifest["components"]) == {"slow_backbone (seed 0)", "slow_backbone (seed 1)"}
    assert manifest["components"]["slow_backbone (seed 1)"]["built_during"] == "head_a (seed 1)"
    assert all(part["seconds"] >= 0.3 for part in manifest["components"].values())
    fits = [t["fit_seconds"] for m in ("head_a", "head_b") for t in manifest["methods"][m]["timing"].values()]
    assert len(fits) == 4 and max(fits) < 0.2  # the shared part's time is not in any method's fit


def test_a_method_that_does_not_use_a_gpu_runs_on_the_cpu_whatever_the_run_device(tmp_path, monkeypatch):
    # No GPU is needed: random and 1-NN declare uses_gpu=False, so they never see "cuda"
    # (only run.json's description of the machine asks for the GPU's name).
    monkeypatch.setattr("torch.cuda.get_device_name", lambda *args: "a GPU of the test")
    assert run(tmp_path, device="cuda").exit_code == 0
    manifest = json.loads((tmp_path / "run" / "run.json").read_text())
    assert {entry["device"] for entry in manifest["methods"].values()} == {"cpu"}
    assert manifest["environment"]["device"] == "cuda"

"""run.json as typed data: it round-trips, refuses what this project did not write (and says so
for a run of the earlier format), and says which field stops a resume."""

import copy
import json
from pathlib import Path

import pytest

from benchmark.config import config_from_dict
from benchmark.errors import RunFolderError
from benchmark.run_folder import RunFolder
from benchmark.run_manifest import RUN_FORMAT, RunManifest
from benchmark.runner import RunOptions, run_benchmark
from tasks.sets import resolve_task_sets
from tests.synthetic import synthetic_omniglot

ROOT = Path(__file__).resolve().parent.parent
DATA = synthetic_omniglot()


@pytest.fixture(scope="module")
def run_json(tmp_path_factory) -> dict:
    """The run.json of a small run of random and 1-NN on synthetic data."""
    config = config_from_dict({"name": "tiny", "task_sets": {
        "cross": {"protocol": "cross", "n_way": [2, 5], "episodes": 10, "seed": 1},
        "within": {"protocol": "within", "n_way": [3], "episodes": 10, "seed": 2}},
        "methods": {"random": {}, "nearest_neighbor": {}}})
    out = tmp_path_factory.mktemp("manifest") / "run"
    options = RunOptions(progress=False, checkpoint_dir=out.parent / "checkpoints", log=lambda m: None)
    run_benchmark(config, ["random", "nearest_neighbor"], DATA, resolve_task_sets(config, DATA), out, options)
    return json.loads((out / "run.json").read_text())


def test_a_run_json_reads_as_typed_data_and_writes_back_the_same(run_json):
    manifest = RunManifest.from_json(copy.deepcopy(run_json), "run.json")
    assert manifest.format == RUN_FORMAT and manifest.environment.device == "cpu"
    assert not manifest.methods["random"].needs_training and manifest.methods["random"].device == "cpu"
    assert manifest.chunks[0].key == ("random", 0, "cross", 2, 1)
    assert manifest.chunks[0].file == "records/random-s0-cross-2way-1shot.parquet"
    assert manifest.run_config().stats.resamples == 2000
    assert manifest.to_json() == run_json


def test_a_run_of_the_earlier_format_is_refused_saying_so(run_json):
    # As the v1 reference run of 2026-11-29 began: its records were one records.csv.
    earlier = dict(copy.deepcopy(run_json), format="oneshot-benchmark/run/v1", records_bytes=195_000_000)
    with pytest.raises(RunFolderError, match="an earlier version of this harness .run format v1"):
        RunManifest.from_json(earlier, "results/reference/run.json")


@pytest.mark.parametrize("damage, fragment", [
    (lambda raw: raw.update(format="oneshot-benchmark/run/v0"), "not a run manifest"),
    (lambda raw: raw.pop("chunks"), "malformed"),
    (lambda raw: raw.update(run_id=12), "run_id must be of type str"),
    (lambda raw: raw["chunks"][0].pop("sha256"), "malformed"),
    (lambda raw: raw["data"].update(extra=1), "malformed"),
    (lambda raw: raw.update(config=[]), "config must be of type dict"),
])
def test_a_manifest_this_project_did_not_write_is_refused_in_one_line(run_json, damage, fragment):
    raw = copy.deepcopy(run_json)
    damage(raw)
    with pytest.raises(RunFolderError, match=fragment) as error:
        RunManifest.from_json(raw, "somewhere/run.json")
    assert "somewhere/run.json" in str(error.value) and "\n" not in str(error.value)


def test_a_resume_names_the_field_that_differs(run_json):
    manifest = RunManifest.from_json(copy.deepcopy(run_json), "run.json")
    assert manifest.resume_problem(copy.deepcopy(manifest)) is None
    other = copy.deepcopy(manifest)
    other.config["task_sets"]["cross"]["episodes"] = 99
    assert manifest.resume_problem(other) == "another config (config.task_sets.cross.episodes is 10 there, 99 now)"
    other = copy.deepcopy(manifest)
    other.config["methods"]["random"] = {"seed": 5}  # hyperparameters are checked per method
    assert manifest.resume_problem(other) is None
    other = copy.deepcopy(manifest)
    other.task_sets["within/3way/1shot"] = "0" * 64
    assert "other episodes for task set within/3way/1shot" in manifest.resume_problem(other)
    other = copy.deepcopy(manifest)
    other.data = type(other.data)(other.data.root, other.data.background_sha256, "f" * 64)
    assert "other Omniglot data" in manifest.resume_problem(other)


def test_an_unreadable_run_json_is_refused(tmp_path):
    (tmp_path / "run.json").write_text("{not json")
    with pytest.raises(RunFolderError, match="unreadable"):
        RunFolder(tmp_path).read_manifest()

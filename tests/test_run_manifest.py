"""run.json as typed data: it round-trips, refuses what this project did not write, reads the
committed reference run, and says which field stops a resume."""

import copy
import json
from pathlib import Path

import pytest

from benchmark.errors import RunFolderError
from benchmark.run_folder import RunFolder
from benchmark.run_manifest import RUN_FORMAT, RunManifest

ROOT = Path(__file__).resolve().parent.parent
REFERENCE = ROOT / "results" / "reference"


def reference_json() -> dict:
    return json.loads((REFERENCE / "run.json").read_text())


def test_the_committed_reference_run_reads_as_typed_data_and_writes_back_the_same():
    raw = reference_json()
    manifest = RunManifest.from_json(raw, "run.json")
    assert manifest.format == RUN_FORMAT and manifest.environment.cpu_count == 2
    assert manifest.methods["protonet"].needs_training and not manifest.methods["random"].needs_training
    assert manifest.chunks[0].key == ("random", 0, "cross", 2, 1)
    assert manifest.run_config().stats.resamples == 2000
    written = manifest.to_json()
    written["methods"] = {name: {k: v for k, v in entry.items() if k != "device"}  # fields added since
                          for name, entry in written["methods"].items()}
    assert written.pop("components") == {}
    assert written == raw


@pytest.mark.parametrize("damage, fragment", [
    (lambda raw: raw.update(format="oneshot-benchmark/run/v0"), "not a run manifest"),
    (lambda raw: raw.pop("chunks"), "malformed"),
    (lambda raw: raw.update(records_bytes="12"), "records_bytes must be of type int"),
    (lambda raw: raw["chunks"][0].pop("sha256"), "malformed"),
    (lambda raw: raw["data"].update(extra=1), "malformed"),
    (lambda raw: raw.update(config=[]), "config must be of type dict"),
])
def test_a_manifest_this_project_did_not_write_is_refused_in_one_line(damage, fragment):
    raw = reference_json()
    damage(raw)
    with pytest.raises(RunFolderError, match=fragment) as error:
        RunManifest.from_json(raw, "somewhere/run.json")
    assert "somewhere/run.json" in str(error.value) and "\n" not in str(error.value)


def test_a_resume_names_the_field_that_differs():
    manifest = RunManifest.from_json(reference_json(), "run.json")
    assert manifest.resume_problem(copy.deepcopy(manifest)) is None
    other = copy.deepcopy(manifest)
    other.config["task_sets"]["cross"]["episodes"] = 99
    assert manifest.resume_problem(other) == ("another config (config.task_sets.cross.episodes is 1000 there, "
                                              "99 now)")
    other = copy.deepcopy(manifest)
    other.config["methods"]["protonet"] = {"steps": 5}  # hyperparameters are checked per method
    assert manifest.resume_problem(other) is None
    other = copy.deepcopy(manifest)
    other.task_sets["within/5way/1shot"] = "0" * 64
    assert "other episodes for task set within/5way/1shot" in manifest.resume_problem(other)
    other = copy.deepcopy(manifest)
    other.data = type(other.data)(other.data.root, other.data.background_sha256, "f" * 64)
    assert "other Omniglot data" in manifest.resume_problem(other)


def test_the_run_folder_reads_the_reference_manifest(tmp_path):
    (tmp_path / "run.json").write_text((REFERENCE / "run.json").read_text())
    folder = RunFolder(tmp_path)
    assert folder.has_manifest() and not folder.has_records()
    assert folder.read_manifest().run_id == reference_json()["run_id"]
    (tmp_path / "run.json").write_text("{not json")
    with pytest.raises(RunFolderError, match="unreadable"):
        folder.read_manifest()

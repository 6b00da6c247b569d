"""Frozen task sets: `freeze` writes them, a `frozen:` config loads and checks them.

Synthetic data for the loading rules; the real data for the byte-for-byte check of the
committed files in tasks/frozen/smoke.
"""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from benchmark.cli import main
from benchmark.config import config_from_dict, load_config
from benchmark.errors import EpisodeError
from tasks import episodes as ep
from tasks.sets import PROJECT_ROOT, freeze, frozen_directory, resolve_task_sets, stale_frozen_files
from benchmark.data import Omniglot
from tests.synthetic import synthetic_omniglot, synthetic_split

ROOT = Path(__file__).resolve().parent.parent
# 24 evaluation characters: enough for the 20-way official-runs stand-in.
EVALUATION_ALPHABETS = {"Delta": 10, "Epsilon": 8, "Zeta": 6}
DATA = Omniglot(Path("synthetic"), synthetic_omniglot().background,
                synthetic_split("evaluation", EVALUATION_ALPHABETS, seed=2))


def official_runs():
    """A stand-in for Lake's runs on the synthetic data: fixed ids, protocol "official"."""
    rng = np.random.default_rng(0)
    characters = np.stack([rng.choice(DATA.evaluation.n_characters, 20, replace=False) for _ in range(20)])
    support = characters[:, :, None] * 20
    labels = np.stack([rng.permutation(20) for _ in range(20)])
    query = np.take_along_axis(characters, labels, axis=1) * 20 + 1
    return ep.EpisodeSet("official", 20, 1, 1, None, DATA.evaluation.sha256, support, query, labels)


def synthetic_config(frozen=None, **cross):
    raw = {"name": "tiny", "task_sets": {
        "cross": {"protocol": "cross", "n_way": [2, 5], "episodes": 12, "seed": 4, **cross},
        "within": {"protocol": "within", "n_way": [3], "episodes": 7, "seed": 5},
        "train": {"protocol": "cross", "n_way": [4], "episodes": 5, "split": "background"},
        "official": {"protocol": "official"}}}
    if frozen is not None:
        raw["frozen"] = str(frozen)
    return config_from_dict(raw)


def frozen_copy(tmp_path) -> Path:
    """Freeze the synthetic config into tmp_path/frozen and return the directory."""
    config = synthetic_config()
    freeze(resolve_task_sets(config, DATA, official_runs), tmp_path / "frozen")
    return tmp_path / "frozen"


def test_a_frozen_config_loads_exactly_the_episodes_it_would_generate(tmp_path):
    directory = frozen_copy(tmp_path)
    generated = resolve_task_sets(synthetic_config(), DATA, official_runs)
    loaded = resolve_task_sets(synthetic_config(frozen=directory), DATA, official_runs=None)
    assert [(t.name, t.split) for t in loaded] == [(t.name, t.split) for t in generated]
    assert all(a.episodes.same_as(b.episodes) for a, b in zip(loaded, generated))
    assert sorted(p.name for p in directory.iterdir()) == sorted([
        "cross-2way-1shot.json", "cross-5way-1shot.json", "within-3way-1shot.json",
        "train-4way-1shot.json", "official-20way-1shot.json"])


def test_use_frozen_false_generates_even_when_the_files_are_missing(tmp_path):
    config = synthetic_config(frozen=tmp_path / "nothing-here")
    with pytest.raises(EpisodeError, match="not found.*freeze"):
        resolve_task_sets(config, DATA, official_runs)
    assert len(resolve_task_sets(config, DATA, official_runs, use_frozen=False)) == 5


@pytest.mark.parametrize("change,key", [({"episodes": 13}, "episodes"), ({"seed": 9}, "seed"),
                                        ({"n_query": 2}, "n_query")])
def test_a_config_edited_after_freezing_is_refused(tmp_path, change, key):
    directory = frozen_copy(tmp_path)
    with pytest.raises(EpisodeError, match=f"has {key}=.*asks for {key}=.*freeze") as error:
        resolve_task_sets(synthetic_config(frozen=directory, **change), DATA, official_runs)
    assert "cross-2way-1shot.json" in str(error.value)


def edit_json(path: Path, edit) -> None:
    raw = json.loads(path.read_text())
    edit(raw)
    path.write_text(json.dumps(raw))


@pytest.mark.parametrize("edit,message", [
    (lambda raw: raw["query"][3].__setitem__(0, raw["query"][3][0] + 1), "was modified"),
    (lambda raw: raw.__setitem__("split_sha256", "0" * 64), "made for other data"),
    (lambda raw: raw.__setitem__("n_way", 3), "malformed"),
], ids=["an id changed", "the data's sha256 changed", "n_way changed"])
def test_a_tampered_frozen_file_is_refused(tmp_path, edit, message):
    directory = frozen_copy(tmp_path)
    edit_json(directory / "cross-5way-1shot.json", edit)
    with pytest.raises(EpisodeError, match=message):
        resolve_task_sets(synthetic_config(frozen=directory), DATA, official_runs)


def test_frozen_files_of_other_data_are_refused(tmp_path):
    directory = frozen_copy(tmp_path)
    # Same alphabets and sizes, other drawings: another sha256.
    other = Omniglot(DATA.root, DATA.background,
                     synthetic_split("evaluation", EVALUATION_ALPHABETS, seed=3))
    with pytest.raises(EpisodeError, match="made for other data"):
        resolve_task_sets(synthetic_config(frozen=directory), other, official_runs)


def test_freeze_says_which_files_are_new_unchanged_or_changed_and_which_are_stale(tmp_path):
    config = synthetic_config()
    task_sets = resolve_task_sets(config, DATA, official_runs)
    directory = tmp_path / "frozen"
    assert {f.status for f in freeze(task_sets, directory)} == {"new"}
    (directory / "old-9way-1shot.json").write_text("{}")
    edit_json(directory / "within-3way-1shot.json", lambda raw: raw.__setitem__("seed", 0))
    written = freeze(task_sets, directory)
    assert {f.path.name: f.status for f in written if f.status != "unchanged"} == {
        "within-3way-1shot.json": "changed"}
    assert [p.name for p in stale_frozen_files(directory, written)] == ["old-9way-1shot.json"]
    assert all(f.ids_sha256 == t.episodes.ids_sha256 for f, t in zip(written, task_sets))


def test_frozen_config_key_paths_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("name: c\nfrozen: tasks/frozen/c\ntask_sets: {a: {protocol: cross}}\n")
    config = load_config(path)
    assert frozen_directory(config) == PROJECT_ROOT / "tasks" / "frozen" / "c"
    assert config.to_dict()["frozen"] == "tasks/frozen/c"
    unfrozen = load_config(path, ["frozen=null"])
    assert frozen_directory(unfrozen) is None and "frozen" not in unfrozen.to_dict()
    assert frozen_directory(load_config(path, [f"frozen={tmp_path}"])) == tmp_path


def test_freeze_without_a_frozen_directory_is_one_clean_line(capsys):
    assert main(["freeze", "--config", str(ROOT / "configs" / "default.yaml")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "--out DIR" in lines[0]


def test_refreezing_the_smoke_config_reproduces_the_committed_files_byte_for_byte(
        omniglot_dir, tmp_path, capsys):
    committed = ROOT / "tasks" / "frozen" / "smoke"
    assert main(["freeze", "--config", str(ROOT / "configs" / "smoke.yaml"), "--out", str(tmp_path),
                 "--data-dir", str(omniglot_dir), "--no-download"]) == 0
    printed = capsys.readouterr().out
    names = sorted(p.name for p in committed.glob("*.json"))
    assert names == sorted(p.name for p in tmp_path.glob("*.json"))
    assert len(names) == 7 and "official-20way-1shot.json" in names
    for name in names:
        assert (tmp_path / name).read_bytes() == (committed / name).read_bytes(), name
        assert name in printed
    # Freezing over identical files reports them unchanged (what a reviewer wants to see).
    shutil.copytree(committed, tmp_path / "again")
    assert main(["freeze", "--config", str(ROOT / "configs" / "smoke.yaml"), "--out",
                 str(tmp_path / "again"), "--data-dir", str(omniglot_dir), "--no-download"]) == 0
    assert capsys.readouterr().out.count("unchanged") == 7

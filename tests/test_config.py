"""Config loading: defaults, overrides, type checks, and one-line errors for bad input."""

from pathlib import Path

import pytest

from benchmark.config import load_config
from benchmark.errors import ConfigError

ROOT = Path(__file__).resolve().parent.parent


def write(tmp_path, text):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_default_config_has_the_documented_sweeps():
    config = load_config(ROOT / "configs" / "default.yaml")
    cross, within = config.task_sets["cross"], config.task_sets["within"]
    assert cross.n_way == (2, 5, 10, 15, 20, 25, 30, 40, 50, 60)
    assert within.n_way == (2, 5, 10, 15, 20, 25, 30, 40)  # the largest evaluation alphabet has 47
    assert (cross.k_shot, cross.n_query, cross.episodes) == ((1, 5), 1, 1000)
    assert within.k_shot == (1, 5) and config.task_sets["cross_background"].k_shot == (1,)
    assert config.task_sets["official"].protocol == "official"
    assert {"random", "nearest_neighbor"} <= set(config.methods)


def test_overrides_are_typed(tmp_path):
    config = load_config(ROOT / "configs" / "default.yaml", [
        "task_sets.cross.episodes=50", "task_sets.cross.n_way=[3, 4]", "task_sets.within.n_way=7",
        "stats.confidence=0.9", "seed=5", "methods.random.seed=2", "name=quick"])
    assert config.task_sets["cross"].episodes == 50
    assert config.task_sets["cross"].n_way == (3, 4)
    assert config.task_sets["within"].n_way == (7,)
    assert config.stats.confidence == 0.9 and config.seed == 5 and config.name == "quick"
    assert config.methods["random"]["seed"] == 2


def test_override_can_add_a_task_set(tmp_path):
    config = load_config(write(tmp_path, "task_sets: {}\n"), [
        "task_sets.extra.protocol=within", "task_sets.extra.n_way=[5]"])
    assert config.task_sets["extra"].protocol == "within"


def test_float_written_like_1e_minus_3_is_a_number(tmp_path):
    config = load_config(write(tmp_path, "stats: {confidence: 9e-1}\n"))
    assert config.stats.confidence == 0.9


@pytest.mark.parametrize("text,overrides,message", [
    ("task_sets: {cross: {protocol: cross, episode: 10}}", [], "did you mean 'episodes'"),
    ("seeed: 1", [], "did you mean 'seed'"),
    ("task_sets: {cross: {protocol: cross, episodes: ten}}", [], "episodes must be an integer"),
    ("task_sets: {cross: {protocol: cross, n_way: [2, x]}}", [], r"n_way\[1\] must be an integer"),
    ("task_sets: {cross: {protocol: cross, episodes: true}}", [], "episodes must be an integer"),
    ("task_sets: {cross: {protocol: zigzag}}", [], "protocol 'zigzag' is unknown"),
    ("task_sets: {cross: {n_way: [2]}}", [], "protocol is missing"),
    ("task_sets: {cross: {protocol: cross, n_way: []}}", [], "n_way is empty"),
    ("task_sets: [1, 2]", [], "task_sets must be a mapping"),
    ("device: tpu", [], "device 'tpu' is unknown"),
    ("stats: {confidence: 1.5}", [], "between 0 and 1"),
    ("a: [unclosed", [], "not valid YAML at line 1"),
    ("- just\n- a list", [], "must be a mapping"),
    ("seed: 1", ["seed"], "malformed"),
    ("seed: 1", ["seed.x=1"], "is a value, not a section"),
    ("seed: 1", ["task_sets.cross.protocol=cross", "task_sets.cross.seeds=1"], "did you mean 'seed'"),
])
def test_bad_configs_fail_in_one_line(tmp_path, text, overrides, message):
    with pytest.raises(ConfigError, match=message) as info:
        load_config(write(tmp_path, text), overrides)
    assert "\n" not in str(info.value)


def test_missing_config_file(tmp_path):
    with pytest.raises(ConfigError, match="not found"):
        load_config(tmp_path / "nope.yaml")

"""Hostile input, tried systematically: every example must end in a BenchmarkError or a valid result.

Hypothesis feeds the config loader, the `--set` parser, the episode generator, the frozen
episode files with random and hostile values (negative, huge, wrong types, unicode, empty,
nested junk); tests/test_hostile_data.py does the same for the data readers (truncated or
bit-flipped files). Any other exception, or
a result that breaks the contract, fails the test. `derandomize=True` makes CI reproducible;
run with `--hypothesis-show-statistics` to see how many inputs each test tried.
"""

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st

from benchmark.config import RunConfig, apply_override, config_from_dict, load_config
from benchmark.errors import BenchmarkError, EpisodeError
from tasks import episodes as ep
from tasks.sets import resolve_task_sets
from tests.synthetic import synthetic_omniglot

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RAW = yaml.safe_load((ROOT / "configs" / "default.yaml").read_text())
DATA = synthetic_omniglot()


def hostile(examples: int):
    return settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                           HealthCheck.data_too_large])


# ---------------------------------------------------------------- strategies

huge_ints = st.one_of(st.integers(min_value=-2 ** 70, max_value=-1), st.integers(min_value=2 ** 31, max_value=2 ** 80))
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 70), huge_ints,
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from(["", "cross", "within", "official", "evaluation", "cpu", "ünïcødé ☃", "1e-3", "\0", "../x",
                     "0.95", "[2, 5]", "{}", "-1", "nan"]),
)
junk = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.one_of(st.text(max_size=8), st.integers(-2, 2)), inner,
                                                 max_size=4)), max_leaves=10)
PATHS = ["name", "seed", "device", "task_sets", "task_sets.cross", "task_sets.cross.protocol",
         "task_sets.cross.n_way", "task_sets.cross.k_shot", "task_sets.cross.n_query",
         "task_sets.cross.episodes", "task_sets.cross.seed", "task_sets.cross.split",
         "task_sets.within.n_way", "task_sets.official", "methods", "methods.random",
         "methods.random.seed", "stats", "stats.resamples", "stats.confidence", "stats.seed",
         "unknown", "task_sets.cross.unknown", "task_sets.new_set"]


def set_path(raw: dict, dotted: str, value) -> dict:
    raw = copy.deepcopy(raw)
    node = raw
    *parents, last = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return raw


def check_valid_config(config: RunConfig) -> None:
    """What the rest of the harness relies on a config that loaded."""
    plain = config.to_dict()
    text = json.dumps(plain)  # run.json must be able to hold it
    # --resume rebuilds the config from run.json: it must come back the same.
    assert config_from_dict(json.loads(text)).to_dict() == json.loads(text)
    assert isinstance(config.name, str) and "/" not in config.name and "\0" not in config.name
    assert isinstance(config.seed, int) and 0 <= config.seed
    assert 1 <= config.stats.resamples <= 1_000_000 and 0 < config.stats.confidence < 1
    for task_set in config.task_sets.values():
        assert all(isinstance(n, int) for n in task_set.n_way) and task_set.n_way
        assert isinstance(task_set.episodes, int) and isinstance(task_set.seed, int)


def resolve_if_small(config: RunConfig) -> None:
    """Episodes for a valid config: a BenchmarkError or episode sets (sizes are capped)."""
    small = all(ts.episodes * max(ts.n_way, default=0) <= 20_000 for ts in config.task_sets.values()
                if ts.protocol != "official")
    if not small:
        return
    try:
        resolve_task_sets(config, DATA, official_runs=lambda: ep.generate(
            DATA.evaluation.alphabet, DATA.evaluation.sha256, "within", 3, 1, 1, 5, 0))
    except BenchmarkError:
        pass


# ---------------------------------------------------------------- the config loader

@hostile(200)
@given(raw=st.dictionaries(st.one_of(st.sampled_from(PATHS[:3] + ["task_sets", "methods", "stats"]),
                                     st.text(max_size=6)), junk, max_size=5))
def test_config_from_junk_is_an_error_or_a_valid_config(raw):
    try:
        config = config_from_dict(raw)
    except BenchmarkError:
        event("refused")
        return
    event("valid config")
    check_valid_config(config)


@hostile(300)
@given(path=st.sampled_from(PATHS), value=junk)
@example(path="task_sets.cross.episodes", value=10 ** 12)
@example(path="task_sets.cross.n_way", value=[2, -5, 10 ** 9])
@example(path="stats.resamples", value=10 ** 15)
@example(path="seed", value=-1)
@example(path="name", value="../../outside")
@example(path="methods.random", value={"seed": {"a": [1, {"b": None}]}})
def test_one_hostile_field_in_the_default_config(path, value):
    try:
        config = config_from_dict(set_path(DEFAULT_RAW, path, value))
    except BenchmarkError:
        event("refused")
        return
    event("valid config")
    check_valid_config(config)
    resolve_if_small(config)


@hostile(200)
@given(override=st.one_of(
    st.text(max_size=40),
    st.builds("{}={}".format, st.sampled_from(PATHS + ["a..b", ".", "", "task_sets.cross.n_way.x"]),
              st.one_of(st.text(max_size=20), st.sampled_from(
                  ["[2, 5]", "-1", "1e99", "{a: [", "&a [*a]", "!!python/object:os.system x", "2001-12-14",
                   "!!binary aGk=", "null", "~", "[[[]]]", "10000000000000000000000", ".inf", "'\\0'"])))))
@example(override="methods.random.seed=&a [*a]")
@example(override="task_sets.cross=!!set {a, b}")
@example(override="task_sets.cross.episodes=99999999999")
def test_hostile_set_overrides(override):
    raw = copy.deepcopy(DEFAULT_RAW)
    try:
        apply_override(raw, override)
        config = config_from_dict(raw)
    except BenchmarkError:
        event("refused")
        return
    event("valid config")
    check_valid_config(config)


@hostile(100)
@given(text=st.one_of(st.text(max_size=200), st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
                      st.builds(yaml.safe_dump, junk)))
@example(text="[" * 10_000)
@example(text="a: &a [*a]\nmethods: {random: {seed: *a}}")
@example(text="\ufeffname: x")
def test_hostile_config_files(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("config") / "hostile.yaml"
    path.write_bytes(text.encode("utf-8", errors="surrogatepass"))
    try:
        config = load_config(path)
    except BenchmarkError:
        event("refused")
        return
    event("valid config")
    check_valid_config(config)


# ---------------------------------------------------------------- the episode generator

alphabets = st.one_of(
    st.lists(st.sampled_from(["A", "B", "Ω", "ü", "", "C"]), max_size=60),
    st.lists(st.text(max_size=3), max_size=30),
).map(np.array)
hostile_numbers = st.one_of(st.integers(-3, 25), huge_ints, st.none(), st.booleans(), st.floats(),
                            st.text(max_size=3), st.just(np.int64(3)), st.just([2]))
HOSTILE_VALUES = {
    "protocol": st.one_of(st.sampled_from(["official", "", "CROSS", "within "]), st.text(max_size=5), st.none(),
                          st.integers()),
    "n_way": hostile_numbers, "k_shot": hostile_numbers, "n_query": hostile_numbers,
    "episodes": st.one_of(hostile_numbers, st.integers(1_000_001, 10 ** 30)),
    "seed": st.one_of(hostile_numbers, st.integers(2 ** 63, 2 ** 90)),
}


@st.composite
def episode_requests(draw):
    """A plausible request, then (mostly) one or more fields replaced by hostile values."""
    request = {"alphabet": draw(alphabets), "protocol": draw(st.sampled_from(["cross", "within"])),
               "n_way": draw(st.integers(2, 12)), "k_shot": draw(st.integers(1, 6)),
               "n_query": draw(st.integers(1, 6)), "episodes": draw(st.integers(1, 30)),
               "seed": draw(st.integers(0, 2 ** 63 - 1))}
    for field in draw(st.lists(st.sampled_from(sorted(HOSTILE_VALUES)), max_size=3, unique=True)):
        request[field] = draw(HOSTILE_VALUES[field])
    return request


@hostile(300)
@given(request=episode_requests())
@example(request=dict(alphabet=np.array(["A"] * 30), protocol="cross", n_way=30, k_shot=1, n_query=1,
                      episodes=10 ** 9, seed=0))
@example(request=dict(alphabet=np.array(["A"] * 30), protocol="cross", n_way=2, k_shot=1, n_query=1,
                      episodes=3, seed=-1))
@example(request=dict(alphabet=np.array([], dtype=str), protocol="within", n_way=2, k_shot=1, n_query=1,
                      episodes=3, seed=0))
def test_generate_gives_valid_episodes_or_an_episode_error(request):
    try:
        result = ep.generate(split_sha256="sha", **request)
    except EpisodeError:
        event("refused")
        return
    event("valid episodes")
    alphabet, protocol = request["alphabet"], request["protocol"]
    e, n, k, q = result.n_episodes, result.n_way, result.k_shot, result.n_query
    assert (e, n, k, q) == tuple(request[key] for key in ("episodes", "n_way", "k_shot", "n_query"))
    assert result.support.shape == (e, n, k) and result.query.shape == (e, n * q)
    characters = result.support[:, :, 0] // 20
    assert (result.support // 20 == characters[:, :, None]).all()
    assert all(len(set(row)) == n for row in characters)  # N distinct characters
    assert (result.query // 20 == np.take_along_axis(characters, result.query_label, axis=1)).all()
    assert ((0 <= result.support) & (result.support < 20 * len(alphabet))).all()
    if protocol == "within":
        assert all(len(set(alphabet[row])) == 1 for row in characters)


def test_absurd_sizes_are_refused_before_any_work():
    alphabet = np.array(["A"] * 600)
    with pytest.raises(EpisodeError, match="episodes"):
        ep.generate(alphabet, "sha", "cross", 5, 1, 1, 10 ** 12, 0)
    with pytest.raises(EpisodeError, match="too large"):
        ep.generate(alphabet, "sha", "cross", 500, 10, 10, 50_000, 0)


# ---------------------------------------------------------------- frozen episode files

FROZEN = ep.to_json(ep.generate(np.array(["A"] * 6 + ["B"] * 4), "s" * 64, "cross", 3, 2, 1, 4, 7))
FROZEN_RAW = json.loads(FROZEN)
FIELDS = list(FROZEN_RAW)


@hostile(200)
@given(change=st.one_of(
    st.tuples(st.just("truncate"), st.integers(0, len(FROZEN))),
    st.tuples(st.just("field"), st.sampled_from(FIELDS + ["extra"]), junk),
    st.tuples(st.just("drop"), st.sampled_from(FIELDS)),
    st.tuples(st.just("text"), st.text(max_size=100)),
    st.tuples(st.just("ids"), st.sampled_from(ep.ARRAY_NAMES), st.integers(0, 11), st.one_of(huge_ints, st.integers(-5, 300))),
))
@example(change=("text", "[" * 100_000))
@example(change=("field", "n_way", 1e400))
@example(change=("field", "support", [[[2 ** 70]]]))
def test_hostile_frozen_files(tmp_path_factory, change):
    raw = copy.deepcopy(FROZEN_RAW)
    if change[0] == "truncate":
        text = FROZEN[:change[1]]
    elif change[0] == "text":
        text = change[1]
    else:
        if change[0] == "field":
            raw[change[1]] = change[2]
        elif change[0] == "drop":
            del raw[change[1]]
        else:  # one id changed, and the file's hash recomputed to match, as a forger would
            shape = np.shape(raw[change[1]])
            ids = np.array(raw[change[1]], dtype=object).reshape(-1)
            ids[change[2] % ids.size] = change[3]
            raw[change[1]] = ids.reshape(shape).tolist()
            try:
                arrays = [np.asarray(raw[name], dtype=np.int64) for name in ep.ARRAY_NAMES]
                raw["ids_sha256"] = ep.ids_sha256(*arrays)
            except OverflowError:
                pass
        text = json.dumps(raw)
    path = tmp_path_factory.mktemp("frozen") / "set.json"
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    try:
        loaded = ep.load(path)
    except EpisodeError:
        event("refused")
        return
    event("loaded")
    n, k, q = loaded.n_way, loaded.k_shot, loaded.n_query
    assert loaded.n_episodes >= 1 and n >= 2 and k >= 1 and q >= 1
    assert loaded.support.shape == (loaded.n_episodes, n, k)
    assert loaded.query.shape == loaded.query_label.shape == (loaded.n_episodes, n * q)
    assert (loaded.support >= 0).all() and (loaded.query >= 0).all()
    assert ((0 <= loaded.query_label) & (loaded.query_label < n)).all()

"""Hostile input, tried systematically: every input has an expected outcome, and must get it.

Hypothesis feeds the config loader, the `--set` parser, the episode generator and the frozen
episode files with random and hostile values (negative, huge, wrong types, unicode, empty,
nested junk, NaN, YAML tricks); tests/test_hostile_data.py does the same for the data
readers (truncated or bit-flipped files, hostile zip members). For each input an oracle,
written from the rules (configs/default.yaml, the docstrings, benchmark/limits.py) and not
by calling the code under test, says what must happen:

- "refused": a BenchmarkError of the expected kind (ConfigError, EpisodeError, DataError)
  whose message is one line and names the offending field (one of them, when several are
  wrong: which is checked first is the code's business);
- "accepted": the result is then checked against what was asked for, field by field.

Anything else fails: another exception, a refusal of a valid input, an acceptance of an
invalid one, a wrong result. Hand-labelled nasty cases run as `@example`s and also check the
oracles themselves (test_oracles_agree_with_hand_labelled_cases).

tests/hostile_counts.py counts the refused and accepted inputs of each property and prints
them at the end of the run; a property marked `both_outcomes` fails when it saw only one
kind. The bugs these tests found (crashes and two-line messages on some inputs) are fixed and
pinned by the tests at the end of each file.
`derandomize=True` and no database make runs reproducible; `--hypothesis-show-statistics`
shows the same counts as events.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import json
import string
import unicodedata
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pytest
import yaml
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from benchmark.config import RunConfig, apply_override, config_from_dict, load_config
from benchmark.errors import BenchmarkError, ConfigError, EpisodeError
from tasks import episodes as ep
from tasks.sets import resolve_task_sets
from tests.hostile_counts import record
from tests.synthetic import synthetic_omniglot

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_RAW = yaml.safe_load((ROOT / "configs" / "default.yaml").read_text())
DATA = synthetic_omniglot()


def hostile(examples: int):
    return settings(max_examples=examples, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                           HealthCheck.data_too_large])


# ---------------------------------------------------------------- expected outcomes

@dataclass(frozen=True)
class Refused:
    """The input must be refused with `error`. Each reason is the fragments of a message
    that names one thing wrong with the input; the message must match one of the reasons."""

    error: type[BenchmarkError]
    reasons: tuple[tuple[str, ...], ...] = ()


@dataclass(frozen=True)
class Accepted:
    """The input must be accepted; `value` is what the oracle knows the result must be."""

    value: Any = None


@dataclass(frozen=True)
class RefusedOrAccepted:
    """Either outcome is right, as the oracle cannot tell which (a flipped byte the zip format
    does not protect): a refusal must still be of the expected kind, an acceptance still correct."""

    error: type[BenchmarkError]
    reasons: tuple[tuple[str, ...], ...] = ()


def outcome_name(expected: Refused | Accepted | RefusedOrAccepted) -> str:
    """The hand label of an oracle's answer."""
    return {Refused: "refused", Accepted: "accepted", RefusedOrAccepted: "either"}[type(expected)]


def check_outcome(expected: Refused | Accepted | RefusedOrAccepted, attempt: Callable[[], Any]) -> tuple[str, Any]:
    """Run `attempt`; it must end as `expected` says. Returns ("refused", None) or ("accepted", result).

    Only a BenchmarkError counts as a refusal: any other exception propagates and fails the test.
    """
    try:
        result = attempt()
    except BenchmarkError as error:
        message = str(error)
        assert not isinstance(expected, Accepted), f"a valid input was refused: {type(error).__name__}: {message}"
        assert isinstance(error, expected.error), \
            f"refused with {type(error).__name__}, expected {expected.error.__name__}: {message}"
        assert "\n" not in message and "\r" not in message, f"the message is not one line: {message!r}"
        if expected.reasons:
            assert any(all(fragment in message for fragment in reason) for reason in expected.reasons), \
                f"the message names none of {list(expected.reasons)}: {message!r}"
        return "refused", None
    assert not isinstance(expected, Refused), f"an invalid input was accepted; expected a refusal: {expected}"
    return "accepted", result


def case_id(kwargs: dict) -> str:
    """A short test id for a hand-labelled case's arguments."""
    fields = kwargs.get("request", kwargs)
    return " ".join(f"{key}={value!r}"[:40] for key, value in fields.items() if key != "alphabet")


def labelled_examples(cases: list[tuple[dict, str]]):
    """An @example for each hand-labelled case (the test's keyword arguments, the expected outcome)."""
    def decorate(test):
        for kwargs, _ in cases:
            test = example(**kwargs)(test)
        return test
    return decorate


# ---------------------------------------------------------------- strategies

# Keys with a line break are pinned apart (test_bugs_these_tests_found_stay_fixed): none here.
LINE_BREAKS = "\n\r"
one_line_text = functools.partial(st.text, st.characters(codec="utf-8", exclude_characters=LINE_BREAKS))

huge_ints = st.one_of(st.integers(min_value=-2 ** 70, max_value=-1), st.integers(min_value=2 ** 31, max_value=2 ** 80))
scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-3, 70), huge_ints,
    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12),
    st.sampled_from(["", "cross", "within", "official", "evaluation", "cpu", "ünïcødé ☃", "1e-3", "\0", "../x",
                     "0.95", "[2, 5]", "{}", "-1", "nan"]),
)
junk = st.recursive(scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.one_of(one_line_text(max_size=8), st.integers(-2, 2)), inner,
                                                 max_size=4)), max_leaves=10)
PATHS = ["name", "seed", "device", "task_sets", "task_sets.cross", "task_sets.cross.protocol",
         "task_sets.cross.n_way", "task_sets.cross.k_shot", "task_sets.cross.n_query",
         "task_sets.cross.episodes", "task_sets.cross.seed", "task_sets.cross.split",
         "task_sets.within.n_way", "task_sets.official", "methods", "methods.random",
         "methods.random.seed", "stats", "stats.resamples", "stats.confidence", "stats.seed",
         "unknown", "task_sets.cross.unknown", "task_sets.new_set"]

# Values valid by construction (the oracle must accept them: checked in the properties), so
# that every property also sees accepted inputs and checks what they load as.
seeds = st.integers(0, 2 ** 63 - 1)
counts = st.integers(1, 5)
n_ways = st.one_of(st.integers(2, 18), st.lists(st.integers(2, 18), min_size=1, max_size=4))
probabilities = st.floats(0, 1, exclude_min=True, exclude_max=True)
task_set_names = st.text(st.one_of(st.characters(categories=["L", "N"]), st.sampled_from("_-")),
                         min_size=1, max_size=8).filter(lambda name: name.strip("_-"))
task_set_entries = st.fixed_dictionaries({"protocol": st.sampled_from(["cross", "within", "official"])}, optional={
    "n_way": n_ways, "k_shot": counts, "n_query": counts, "episodes": st.integers(1, 20), "seed": seeds,
    "split": st.sampled_from(["background", "evaluation"]), "only_trained": st.booleans()})
plain_data = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(), one_line_text(max_size=8)),
                          lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                  st.dictionaries(one_line_text(max_size=6), inner, max_size=3)),
                          max_leaves=6)
hyperparameters = st.one_of(st.none(), st.dictionaries(one_line_text(max_size=8), plain_data, max_size=3))
VALID_AT = {
    "name": st.from_regex(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}", fullmatch=True),
    "seed": seeds,
    "device": st.sampled_from(["auto", "cpu", "cuda"]),
    "frozen": st.one_of(st.none(), one_line_text(max_size=10)),
    "task_sets": st.dictionaries(task_set_names, task_set_entries, max_size=3),
    "task_sets.cross": task_set_entries, "task_sets.official": task_set_entries, "task_sets.new_set": task_set_entries,
    "task_sets.cross.protocol": st.sampled_from(["cross", "within", "official"]),
    "task_sets.cross.n_way": n_ways, "task_sets.within.n_way": n_ways,
    "task_sets.cross.k_shot": st.integers(), "task_sets.cross.n_query": st.integers(),
    "task_sets.cross.episodes": st.integers(), "task_sets.cross.seed": seeds,
    "task_sets.cross.split": st.sampled_from(["background", "evaluation"]),
    "methods": st.dictionaries(one_line_text(max_size=10), hyperparameters, max_size=3),
    "methods.random": hyperparameters, "methods.random.seed": plain_data,
    "stats": st.fixed_dictionaries({}, optional={"resamples": st.integers(1, 100_000),
                                                 "confidence": st.one_of(probabilities, probabilities.map(repr)),
                                                 "seed": seeds}),
    "stats.resamples": st.integers(1, 100_000), "stats.seed": seeds,
    # YAML 1.1 reads 1e-3 as a string: a number field takes numeric strings too.
    "stats.confidence": st.one_of(probabilities, probabilities.map(repr)),
}


@st.composite
def valid_or_junk(draw, path: str) -> tuple[Any, bool]:
    """A value for `path`: (value, True) when built to be valid there, else (junk, False)."""
    if path in VALID_AT and draw(st.booleans()):
        return draw(VALID_AT[path]), True
    return draw(junk), False


def set_path(raw: dict, dotted: str, value) -> dict:
    raw = copy.deepcopy(raw)
    node = raw
    *parents, last = dotted.split(".")
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value
    return raw


# ---------------------------------------------------------------- the config oracle
# The rules of a run config, written down again (configs/default.yaml, benchmark/config.py's
# docstrings, benchmark/limits.py) rather than asked of the loader. A checker returns the
# value as the config holds it, or INVALID.

MAX_SEED = 2 ** 63 - 1  # torch.manual_seed's limit
MAX_RESAMPLES = 100_000
MAX_NESTING = 20  # hyperparameters nested deeper (or an alias that contains itself) are refused
ASCII_ALNUM = string.ascii_letters + string.digits
INVALID = object()


def is_integer(value) -> bool:
    """An integer that is not a bool (YAML's `true` is not 1 here)."""
    return isinstance(value, int) and not isinstance(value, bool)


def as_integer(value):
    return value if is_integer(value) else INVALID


def as_seed(value):
    return value if is_integer(value) and 0 <= value <= MAX_SEED else INVALID


def as_bool(value):
    return value if isinstance(value, bool) else INVALID


def as_one_of(*choices: str):
    return lambda value: value if isinstance(value, str) and value in choices else INVALID


def as_text_or_none(value):
    return value if value is None or isinstance(value, str) else INVALID


def as_run_name(value):
    """It names the run folder: 1-100 ASCII letters, digits, '_', '-', '.', starting with a letter or digit."""
    ok = (isinstance(value, str) and 1 <= len(value) <= 100 and value[0] in ASCII_ALNUM
          and all(c in ASCII_ALNUM + "_-." for c in value))
    return value if ok else INVALID


def as_resamples(value):
    return value if is_integer(value) and 1 <= value <= MAX_RESAMPLES else INVALID


def as_probability(value):
    """A number strictly between 0 and 1: an int, a float or a numeric string (YAML 1.1 reads 1e-3 as one)."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return INVALID
    try:
        number = float(value)
    except (ValueError, OverflowError):
        return INVALID
    return number if 0 < number < 1 else INVALID


def as_n_ways(value):
    """One number of ways, or a non-empty list of them (any integers: the generator judges their size)."""
    values = list(value) if isinstance(value, (list, tuple)) else [value]
    return values if values and all(map(is_integer, values)) else INVALID


def is_task_set_name(name) -> bool:
    """Unicode letters and digits, with '_' and '-' between them."""
    if not isinstance(name, str):
        return False
    core = [c for c in name if c not in "_-"]
    return bool(core) and all(unicodedata.category(c)[0] in "LN" for c in core)


def is_plain(value, depth: int = 0) -> bool:
    """Hyperparameters go into run.json: None, bool, number, string, list, or mapping with string keys."""
    if depth > MAX_NESTING:
        return False
    if isinstance(value, dict):
        return all(isinstance(key, str) and is_plain(item, depth + 1) for key, item in value.items())
    if isinstance(value, (list, tuple)):
        return all(is_plain(item, depth + 1) for item in value)
    return value is None or isinstance(value, (bool, int, float, str))


def as_mapping(value):
    """A section may be empty (null) but not a scalar or a list."""
    if value is None:
        return {}
    return value if isinstance(value, dict) else INVALID


RUN_FIELDS = {"name": as_run_name, "seed": as_seed, "device": as_one_of("auto", "cpu", "cuda"),
              "frozen": as_text_or_none}
RUN_DEFAULTS = {"name": "default", "seed": 0, "device": "auto", "frozen": None}
TASK_SET_FIELDS = {"protocol": as_one_of("within", "cross", "official"), "n_way": as_n_ways, "k_shot": as_integer,
                   "n_query": as_integer, "episodes": as_integer, "seed": as_seed,
                   "split": as_one_of("background", "evaluation"), "only_trained": as_bool}
TASK_SET_DEFAULTS = {"n_way": [20], "k_shot": 1, "n_query": 1, "episodes": 1000, "seed": 0,
                     "split": "evaluation", "only_trained": False}
STATS_FIELDS = {"resamples": as_resamples, "confidence": as_probability, "seed": as_seed}
STATS_DEFAULTS = {"resamples": 2000, "confidence": 0.95, "seed": 0}


def checked_fields(raw: dict, rules: dict, defaults: dict, section: str, problems: list) -> dict:
    """The section's values over its defaults; each unknown key or invalid value is a problem."""
    values = dict(defaults)
    for key, value in raw.items():
        if key not in rules:
            problems.append(("unknown config key", f"{section}.{key}" if section else str(key)))
        elif (checked := rules[key](value)) is INVALID:
            problems.append((section, key) if section else (key,))
        else:
            values[key] = checked
    return values


def expected_task_sets(value, problems: list) -> dict:
    task_sets = as_mapping(value)
    if task_sets is INVALID:
        problems.append(("task_sets",))
        return {}
    expected = {}
    for name, entry in task_sets.items():
        if not is_task_set_name(name):
            problems.append(("task set name",))
            continue
        section = f"task_sets.{name}"
        entry = as_mapping(entry)
        if entry is INVALID:
            problems.append((section,))
            continue
        if "protocol" not in entry:
            problems.append((section, "protocol"))
        expected[name] = checked_fields(entry, TASK_SET_FIELDS, TASK_SET_DEFAULTS, section, problems)
    return expected


def expected_methods(value, problems: list) -> dict:
    methods = as_mapping(value)
    if methods is INVALID:
        problems.append(("methods",))
        return {}
    expected = {}
    for name, params in methods.items():
        section = f"methods.{name}"  # a YAML name that is a number is taken as its text
        params = as_mapping(params)
        if params is INVALID or not is_plain(params):
            problems.append((section,))
        elif str(name) in expected:
            problems.append(("methods", str(name)))  # `1` and `"1"`: one would silently vanish
        else:
            expected[str(name)] = params
    return expected


def expected_config(raw: dict) -> Refused | Accepted:
    """What config_from_dict(raw) must do; accepted: the config's to_dict()."""
    problems: list[tuple[str, ...]] = []
    sections = {"task_sets": {}, "methods": {}, "stats": dict(STATS_DEFAULTS)}
    top = {}
    for key, value in raw.items():
        if key == "task_sets":
            sections["task_sets"] = expected_task_sets(value, problems)
        elif key == "methods":
            sections["methods"] = expected_methods(value, problems)
        elif key == "stats":
            stats = as_mapping(value)
            if stats is INVALID:
                problems.append(("stats",))
            else:
                sections["stats"] = checked_fields(stats, STATS_FIELDS, STATS_DEFAULTS, "stats", problems)
        else:
            top[key] = value
    plain = checked_fields(top, RUN_FIELDS, RUN_DEFAULTS, "", problems)
    if problems:
        return Refused(ConfigError, tuple(problems))
    if plain["frozen"] is None:
        del plain["frozen"]  # written only when set, so that old run folders still resume
    return Accepted({**plain, **sections})


def expected_override(raw: dict, override: str) -> Refused | Accepted:
    """`--set a.b.c=VALUE` (README): VALUE is read as YAML, or kept as text when it is not
    YAML; missing sections are created; a value cannot be made a section."""
    key, sep, text = override.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(parts):
        return Refused(ConfigError, (("--set",),))
    try:
        value = yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError, ValueError):
        value = text
    raw = copy.deepcopy(raw)
    node = raw
    for depth, part in enumerate(parts[:-1]):
        if node.get(part) is None:
            node[part] = {}
        if not isinstance(node[part], dict):
            return Refused(ConfigError, (("--set", ".".join(parts[:depth + 1])),))
        node = node[part]
    node[parts[-1]] = value
    return expected_config(raw)


def expected_config_file(path: Path, text: str) -> Refused | Accepted:
    """A config file must be UTF-8 YAML holding a mapping (or nothing); then its fields are judged."""
    try:
        # The loader reads in text mode, which turns \r\n and \r into \n.
        raw = yaml.safe_load(text.replace("\r\n", "\n").replace("\r", "\n"))
    except (yaml.YAMLError, RecursionError, ValueError):
        return Refused(ConfigError, ((path.name,),))
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        return Refused(ConfigError, ((path.name,),))
    return expected_config(raw)


def canonical(value) -> str:
    """Exact comparison of plain data: 1, 1.0 and true differ, NaN equals NaN, key order is free."""
    return json.dumps(value, sort_keys=True)


def check_config_is(config: RunConfig, expected: dict) -> None:
    """The loaded config equals what was asked for, field by field, and survives run.json."""
    actual = config.to_dict()
    assert sorted(actual) == sorted(expected)
    for key in expected:
        assert canonical(actual[key]) == canonical(expected[key]), f"{key}: {actual[key]!r} != {expected[key]!r}"
    assert list(actual["task_sets"]) == list(expected["task_sets"])  # config order is run order
    # --resume rebuilds the config from run.json: it must come back the same.
    text = json.dumps(actual)
    assert canonical(config_from_dict(json.loads(text)).to_dict()) == canonical(actual)


# ---------------------------------------------------------------- the episode oracle

MAX_EPISODES = 1_000_000
MAX_IMAGE_IDS = 20_000_000  # ~0.5 GB of int64 ids
DRAWINGS = 20  # per Omniglot character


def is_count(value, low: int) -> bool:
    """An integer (Python's or numpy's, not a bool) of at least `low`."""
    return isinstance(value, (int, np.integer)) and not isinstance(value, (bool, np.bool_)) and value >= low


def largest_n_way(alphabet: np.ndarray, protocol: str) -> int:
    """Cross: any characters of the split; within: those of one alphabet."""
    if protocol == "cross":
        return len(alphabet)
    return max(Counter(alphabet.tolist()).values(), default=0)


def expected_episodes(request: dict) -> Refused | Accepted:
    """What ep.generate(**request) must do: refuse what is malformed, absurd or impossible."""
    problems = []
    if not (isinstance(request["protocol"], str) and request["protocol"] in ("within", "cross")):
        problems.append(("protocol",))
    for name, low in (("n_way", 2), ("k_shot", 1), ("n_query", 1), ("episodes", 1)):
        if not is_count(request[name], low):
            problems.append((name,))
    if not (is_count(request["seed"], 0) and request["seed"] <= MAX_SEED):
        problems.append(("seed",))
    if problems:  # sizes are judged only once they are numbers
        return Refused(EpisodeError, tuple(problems))
    n, k, q, e = (int(request[name]) for name in ("n_way", "k_shot", "n_query", "episodes"))
    if e > MAX_EPISODES:
        problems.append(("episodes",))
    if e * n * (k + q) > MAX_IMAGE_IDS:
        problems.append(("episodes", "n_way"))
    if k + q > DRAWINGS:
        problems.append(("k_shot", "n_query"))
    if n > largest_n_way(request["alphabet"], request["protocol"]):
        problems.append(("n_way",))
    return Refused(EpisodeError, tuple(problems)) if problems else Accepted()


def check_episodes_are(result: ep.EpisodeSet, request: dict) -> None:
    """N-way k-shot episodes as asked: N distinct characters (of one alphabet for `within`),
    k + q distinct drawings of each, queries labelled with their character's position."""
    alphabet = request["alphabet"]
    e, n, k, q = (request[name] for name in ("episodes", "n_way", "k_shot", "n_query"))
    assert (result.n_episodes, result.n_way, result.k_shot, result.n_query) == (e, n, k, q)
    assert (result.protocol, result.seed, result.split_sha256) == (request["protocol"], request["seed"], "sha")
    assert result.support.shape == (e, n, k) and result.query.shape == result.query_label.shape == (e, n * q)
    assert ((0 <= result.support) & (result.support < DRAWINGS * len(alphabet))).all()
    characters = result.support[:, :, 0] // DRAWINGS
    assert (result.support // DRAWINGS == characters[:, :, None]).all()
    assert all(len(set(row)) == n for row in characters.tolist())
    assert (result.query // DRAWINGS == np.take_along_axis(characters, result.query_label, axis=1)).all()
    assert all(Counter(row) == Counter({label: q for label in range(n)}) for row in result.query_label.tolist())
    for i in range(e):
        for label in range(n):
            queries = result.query[i][result.query_label[i] == label]
            drawings = [*result.support[i, label] % DRAWINGS, *queries % DRAWINGS]
            assert len(set(drawings)) == k + q  # no drawing is both shown and asked
    if request["protocol"] == "within":
        assert all(len(set(alphabet[row].tolist())) == 1 for row in characters)
    # Episode i depends on (seed, i) alone, not on how many were asked for.
    first = ep.generate(split_sha256="sha", **{**request, "episodes": 1})
    assert (first.support[0] == result.support[0]).all() and (first.query[0] == result.query[0]).all()


# ---------------------------------------------------------------- the config loader

@st.composite
def raw_configs(draw) -> tuple[dict, bool]:
    """(raw config, valid by construction): known or unknown keys, each with a valid value or junk."""
    keys = draw(st.lists(st.one_of(st.sampled_from(list(RUN_FIELDS) + ["task_sets", "methods", "stats"]),
                                   one_line_text(max_size=6)), max_size=5, unique=True))
    raw, all_valid = {}, True
    for key in keys:
        raw[key], valid = draw(valid_or_junk(key))
        all_valid &= valid
    return raw, all_valid


def check_config_outcome(expected: Refused | Accepted, attempt: Callable[[], RunConfig]) -> RunConfig | None:
    outcome, config = check_outcome(expected, attempt)
    record(outcome)
    if outcome == "accepted":
        check_config_is(config, expected.value)
    return config


@pytest.mark.both_outcomes
@hostile(200)
@given(case=raw_configs())
def test_config_from_junk_is_refused_or_loaded_as_asked(case):
    raw, valid_by_construction = case
    expected = expected_config(raw)
    assert not valid_by_construction or isinstance(expected, Accepted), expected  # the oracle itself
    check_config_outcome(expected, lambda: config_from_dict(raw))


ONE_FIELD_CASES = [  # hand-labelled: (field, value), expected outcome
    # The config takes any count; the generator refuses absurd ones (check_resolution).
    (dict(path="task_sets.cross.episodes", value=10 ** 12), "accepted"),
    (dict(path="task_sets.cross.n_way", value=[2, -5, 10 ** 9]), "accepted"),
    (dict(path="stats.resamples", value=10 ** 15), "refused"),
    (dict(path="stats.confidence", value="1e-3"), "accepted"),  # YAML 1.1 reads 1e-3 as a string
    (dict(path="stats.confidence", value=float("nan")), "refused"),
    (dict(path="seed", value=-1), "refused"),
    (dict(path="seed", value=True), "refused"),
    (dict(path="seed", value=2 ** 63), "refused"),
    (dict(path="name", value="../../outside"), "refused"),
    (dict(path="name", value="ünïcødé"), "refused"),
    (dict(path="methods.random", value={"seed": {"a": [1, {"b": None}]}}), "accepted"),
    (dict(path="task_sets.cross", value={"protocol": "cross", "n_way": [2, 3], "episodes": 2}), "accepted"),
    (dict(path="task_sets.official", value={"protocol": "official", "split": "background"}), "accepted"),
    (dict(path="task_sets.cross.n_way", value=[]), "refused"),
    (dict(path="task_sets.new_set", value=None), "refused"),  # no protocol
]


def expected_one_field(path: str, value) -> Refused | Accepted:
    return expected_config(set_path(DEFAULT_RAW, path, value))


@st.composite
def one_hostile_field(draw) -> tuple[str, Any, bool]:
    path = draw(st.sampled_from(PATHS))
    return (path, *draw(valid_or_junk(path)))


OFFICIAL_STUB_WAYS = 3


def official_stub():
    """Stands in for Lake et al.'s runs, which the synthetic data does not have."""
    return ep.generate(DATA.evaluation.alphabet, DATA.evaluation.sha256, "within", OFFICIAL_STUB_WAYS, 1, 1, 5, 0)


def expected_resolution(config: RunConfig) -> Refused | Accepted:
    """resolve_task_sets on the synthetic data: the first (task set, N) in config order that the
    data cannot satisfy is refused, naming its task set; else [(name, split, N)] in that order."""
    resolved = []
    for name, task_set in config.task_sets.items():
        if task_set.protocol == "official":
            if task_set.split != "evaluation":  # Lake et al.'s runs are drawn from evaluation images
                return Refused(EpisodeError, ((repr(name), "official"),))
            resolved.append((name, "evaluation", OFFICIAL_STUB_WAYS))
            continue
        for n_way in task_set.n_way:
            verdict = expected_episodes(dict(
                alphabet=getattr(DATA, task_set.split).alphabet, protocol=task_set.protocol, n_way=n_way,
                k_shot=task_set.k_shot, n_query=task_set.n_query, episodes=task_set.episodes, seed=task_set.seed))
            if isinstance(verdict, Refused):
                return Refused(EpisodeError, tuple((repr(name), *reason) for reason in verdict.reasons))
            resolved.append((name, task_set.split, n_way))
    return Accepted(resolved)


def with_few_episodes(config: RunConfig) -> RunConfig:
    """The config with at most 2 episodes per task set, so that drawing them is cheap; counts
    outside [1, MAX_EPISODES] stay, as they are refused before any work."""
    def few(episodes: int) -> int:
        return min(episodes, 2) if 1 <= episodes <= MAX_EPISODES else episodes

    return dataclasses.replace(config, task_sets={name: dataclasses.replace(task_set, episodes=few(task_set.episodes))
                                                  for name, task_set in config.task_sets.items()})


def check_resolution(config: RunConfig) -> None:
    """A valid config's episodes: refused as the episode oracle says, or one set per (task set, N) as asked."""
    if config.frozen is not None:
        return  # frozen files are tried in test_hostile_frozen_files
    config = with_few_episodes(config)
    expected = expected_resolution(config)
    outcome, resolved = check_outcome(expected, lambda: resolve_task_sets(config, DATA, official_runs=official_stub))
    if outcome == "accepted":
        assert [(ts.name, ts.split, ts.episodes.n_way) for ts in resolved] == expected.value
        for ts in resolved:
            wanted = config.task_sets[ts.name]
            if wanted.protocol != "official":
                assert (ts.episodes.protocol, ts.episodes.n_episodes, ts.episodes.k_shot, ts.episodes.n_query,
                        ts.episodes.seed) == (wanted.protocol, wanted.episodes, wanted.k_shot, wanted.n_query,
                                              wanted.seed)


@pytest.mark.both_outcomes
@hostile(300)
@given(case=one_hostile_field())
@labelled_examples([(dict(case=(c["path"], c["value"], False)), label) for c, label in ONE_FIELD_CASES])
def test_one_hostile_field_in_the_default_config(case):
    path, value, valid_by_construction = case
    expected = expected_one_field(path, value)
    assert not valid_by_construction or isinstance(expected, Accepted), expected  # the oracle itself
    config = check_config_outcome(expected, lambda: config_from_dict(set_path(DEFAULT_RAW, path, value)))
    if config is not None:
        check_resolution(config)


OVERRIDE_CASES = [  # hand-labelled: --set text, expected outcome
    (dict(override="methods.random.seed=&a [*a]"), "refused"),  # an alias that contains itself
    (dict(override="task_sets.cross=!!set {a, b}"), "refused"),  # a set is {a: null, b: null}: unknown keys
    (dict(override="task_sets.cross.episodes=99999999999"), "accepted"),
    (dict(override="stats.confidence=1e-3"), "accepted"),
    (dict(override="seed=!!python/object:os.system x"), "refused"),  # not safe YAML: the text, not a seed
    (dict(override="name.first=x"), "refused"),  # name is a value, not a section
    (dict(override="seed"), "refused"),  # no '='
    (dict(override="task_sets..cross=1"), "refused"),  # an empty key
    (dict(override="methods.new.lr=0.1"), "accepted"),  # sections are created
]
overrides = st.one_of(
    # Line breaks only after the '=' (keys with one: test_bugs_these_tests_found_stay_fixed).
    st.text(max_size=40).filter(lambda text: not set(LINE_BREAKS) & set(text.partition("=")[0])),
    st.builds("{}={}".format, st.sampled_from(PATHS + ["a..b", ".", "", "task_sets.cross.n_way.x"]),
              st.one_of(st.text(max_size=20), st.sampled_from(
                  ["[2, 5]", "-1", "1e99", "{a: [", "&a [*a]", "!!python/object:os.system x", "2001-12-14",
                   "!!binary aGk=", "null", "~", "[[[]]]", "10000000000000000000000", ".inf", "'\\0'"]))),
    # JSON is YAML (up to YAML 1.1's reading of 1e-05 as a string, which the oracle knows too).
    st.sampled_from(sorted(VALID_AT)).flatmap(
        lambda path: VALID_AT[path].map(lambda value: f"{path}={json.dumps(value)}")),
)


def expected_default_override(override: str) -> Refused | Accepted:
    return expected_override(DEFAULT_RAW, override)


@pytest.mark.both_outcomes
@hostile(200)
@given(override=overrides)
@labelled_examples(OVERRIDE_CASES)
def test_hostile_set_overrides(override):
    def attempt():
        raw = copy.deepcopy(DEFAULT_RAW)
        apply_override(raw, override)
        return config_from_dict(raw)

    check_config_outcome(expected_default_override(override), attempt)


CONFIG_FILE_CASES = [  # hand-labelled: file text, expected outcome
    (dict(text="[" * 1_000), "refused"),  # deeper than the YAML parser can recurse (and 10x cheaper than 10_000)
    (dict(text="a: &a [*a]\nmethods: {random: {seed: *a}}"), "refused"),
    (dict(text="\ufeffname: x"), "accepted"),  # a byte-order mark is not part of the first key
    (dict(text=""), "accepted"),  # an empty file is the defaults
    (dict(text="- 1\n- 2"), "refused"),  # a list, not a mapping
    (dict(text="name: x\r\nseed: 3\r\n"), "accepted"),
    (dict(text="stats: {confidence: 1e-3}"), "accepted"),
]
CONFIG_FILE_NAME = "hostile.yaml"
config_texts = st.one_of(
    st.text(max_size=200), st.binary(max_size=200).map(lambda b: b.decode("latin-1")),
    st.builds(functools.partial(yaml.safe_dump, sort_keys=False), junk),
    raw_configs().map(lambda case: yaml.safe_dump(case[0], sort_keys=False)),
)


def expected_named_config_file(text: str) -> Refused | Accepted:
    return expected_config_file(Path(CONFIG_FILE_NAME), text)


@pytest.mark.both_outcomes
@hostile(100)
@given(text=config_texts)
@labelled_examples(CONFIG_FILE_CASES)
def test_hostile_config_files(tmp_path_factory, text):
    path = tmp_path_factory.mktemp("config") / CONFIG_FILE_NAME
    path.write_bytes(text.encode("utf-8", errors="surrogatepass"))
    check_config_outcome(expected_named_config_file(text), lambda: load_config(path))


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


def request_for(alphabet, protocol="cross", n_way=2, k_shot=1, n_query=1, episodes=3, seed=0) -> dict:
    return dict(alphabet=np.array(alphabet, dtype=str), protocol=protocol, n_way=n_way, k_shot=k_shot,
                n_query=n_query, episodes=episodes, seed=seed)


EPISODE_CASES = [  # hand-labelled: request, expected outcome
    (dict(request=request_for(["A"] * 30, n_way=30, episodes=10 ** 9)), "refused"),  # absurd, refused before work
    (dict(request=request_for(["A"] * 30, seed=-1)), "refused"),
    (dict(request=request_for([], protocol="within")), "refused"),
    (dict(request=request_for(["A"] * 30, n_way=30)), "accepted"),
    (dict(request=request_for(["A"] * 3 + ["B"] * 2, protocol="within", n_way=3)), "accepted"),
    (dict(request=request_for(["A"] * 2 + ["B"] * 2, protocol="within", n_way=3)), "refused"),
    (dict(request=request_for(["A"] * 5, k_shot=10, n_query=10)), "accepted"),  # all 20 drawings
    (dict(request=request_for(["A"] * 5, k_shot=10, n_query=11)), "refused"),
    (dict(request=request_for(["A"] * 5, n_way=np.int64(3), seed=2 ** 63 - 1)), "accepted"),
    (dict(request=request_for(["A"] * 5, n_way=True)), "refused"),
    (dict(request=request_for(["A"] * 5, protocol="official")), "refused"),  # official runs are not drawn
]


@pytest.mark.both_outcomes
@hostile(300)
@given(request=episode_requests())
@labelled_examples(EPISODE_CASES)
def test_generate_gives_the_episodes_asked_for_or_an_episode_error(request):
    outcome, result = check_outcome(expected_episodes(request), lambda: ep.generate(split_sha256="sha", **request))
    record(outcome)
    if outcome == "accepted":
        check_episodes_are(result, request)


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
# A changed or missing `episodes` header: test_bugs_these_tests_found_stay_fixed.
CHANGED_FIELDS = [field for field in FIELDS if field != "episodes"]
FROZEN_FILE_NAME = "set.json"
# Fields the ids' hash does not cover but the loader checks by type: any valid value is accepted.
FREE_HEADER = {
    "protocol": lambda value: isinstance(value, str) and value in ("within", "cross", "official"),
    "seed": lambda value: value is None or (is_integer(value) and 0 <= value <= MAX_SEED),
    "split_sha256": lambda value: isinstance(value, str),  # checked against the data by load_frozen
    "extra": lambda value: True,  # unknown keys are ignored, so that the format can grow
}


def refused_frozen() -> Refused:
    return Refused(EpisodeError, ((FROZEN_FILE_NAME,),))


def changed_field(field: str, value) -> tuple[dict, Refused | Accepted]:
    """The format, the ids, their hash and the counts that fix the arrays' shapes admit only
    their own value (exactly: 3.0 or true is not 3); the free header fields any valid one."""
    raw = {**FROZEN_RAW, field: value}
    if field in FREE_HEADER:
        return raw, Accepted(raw) if FREE_HEADER[field](value) else refused_frozen()
    return raw, Accepted(raw) if json.dumps(value) == json.dumps(FROZEN_RAW[field]) else refused_frozen()


def forged_id(array: str, index: int, value: int) -> tuple[dict, Refused | Accepted]:
    """One id changed and the hash recomputed, as a forger would: valid while it is an int64
    and a possible id (>= 0; a label in [0, n_way)). Which image it points to is not load's
    business: load has no data to check it against."""
    raw = copy.deepcopy(FROZEN_RAW)
    ids = np.array(raw[array], dtype=object)
    ids.reshape(-1)[index % ids.size] = value
    raw[array] = ids.tolist()
    if not -2 ** 63 <= value < 2 ** 63:
        return raw, refused_frozen()  # the forger cannot hash it either: the old hash stays
    raw["ids_sha256"] = ep.ids_sha256(*(np.asarray(raw[name], dtype=np.int64) for name in ep.ARRAY_NAMES))
    valid = 0 <= value < FROZEN_RAW["n_way"] if array == "query_label" else value >= 0
    return raw, Accepted(raw) if valid else refused_frozen()


def expected_frozen(change: tuple) -> tuple[str, Refused | Accepted]:
    """(file text, expected outcome) of one change to a valid frozen file."""
    kind, *arguments = change
    if kind == "truncate":  # a cut JSON object is not JSON, unless only the trailing newline went
        text = FROZEN[:arguments[0]]
        return text, Accepted(FROZEN_RAW) if len(text) >= len(FROZEN.rstrip()) else refused_frozen()
    if kind == "text":  # a valid file needs its format name and a 64-digit hash: more than 100 characters
        return arguments[0], refused_frozen()
    if kind == "drop":  # every field but `episodes` is required
        return json.dumps({k: v for k, v in FROZEN_RAW.items() if k != arguments[0]}), refused_frozen()
    raw, expected = changed_field(*arguments) if kind == "field" else forged_id(*arguments)
    return json.dumps(raw), expected


def expected_frozen_outcome(change: tuple) -> Refused | Accepted:
    return expected_frozen(change)[1]


def check_frozen_is(loaded: ep.EpisodeSet, raw: dict) -> None:
    """The loaded set is what the file says, field by field."""
    assert (loaded.protocol, loaded.n_way, loaded.k_shot, loaded.n_query, loaded.seed, loaded.split_sha256) == \
           tuple(raw[key] for key in ("protocol", "n_way", "k_shot", "n_query", "seed", "split_sha256"))
    for name in ep.ARRAY_NAMES:
        assert np.array_equal(getattr(loaded, name), np.array(raw[name])), name
    assert loaded.n_episodes == len(raw["support"]) and loaded.ids_sha256 == raw["ids_sha256"]


FROZEN_CASES = [  # hand-labelled: change, expected outcome
    (dict(change=("text", "[" * 100_000)), "refused"),
    (dict(change=("field", "n_way", 1e400)), "refused"),  # json writes Infinity
    (dict(change=("field", "n_way", 3.0)), "refused"),
    (dict(change=("field", "support", [[[2 ** 70]]])), "refused"),
    (dict(change=("truncate", len(FROZEN))), "accepted"),
    (dict(change=("truncate", len(FROZEN) - 1)), "accepted"),  # only the final newline cut
    (dict(change=("truncate", len(FROZEN) - 2)), "refused"),
    (dict(change=("field", "seed", None)), "accepted"),
    (dict(change=("field", "protocol", "official")), "accepted"),
    (dict(change=("field", "protocol", "within ")), "refused"),
    (dict(change=("ids", "query_label", 0, 3)), "refused"),
    (dict(change=("ids", "support", 5, -1)), "refused"),
    (dict(change=("ids", "query", 0, 2 ** 63 - 1)), "accepted"),
    (dict(change=("drop", "ids_sha256")), "refused"),
]
frozen_changes = st.one_of(
    st.tuples(st.just("truncate"), st.integers(0, len(FROZEN))),
    st.tuples(st.just("field"), st.sampled_from(CHANGED_FIELDS + ["extra"]), junk),
    st.tuples(st.just("drop"), st.sampled_from(CHANGED_FIELDS)),
    st.tuples(st.just("text"), st.text(max_size=100)),
    st.tuples(st.just("ids"), st.sampled_from(ep.ARRAY_NAMES), st.integers(0, 11),
              st.one_of(huge_ints, st.integers(-5, 300))),
)


@pytest.mark.both_outcomes
@hostile(200)
@given(change=frozen_changes)
@labelled_examples(FROZEN_CASES)
def test_hostile_frozen_files(tmp_path_factory, change):
    text, expected = expected_frozen(change)
    path = tmp_path_factory.mktemp("frozen") / FROZEN_FILE_NAME
    path.write_text(text, encoding="utf-8", errors="surrogatepass")
    outcome, loaded = check_outcome(expected, lambda: ep.load(path))
    record(outcome)
    if outcome == "accepted":
        check_frozen_is(loaded, expected.value)


# ---------------------------------------------------------------- the oracles, against hand labels

@pytest.mark.parametrize("oracle, kwargs, label", [
    *((expected_one_field, kwargs, label) for kwargs, label in ONE_FIELD_CASES),
    *((expected_default_override, kwargs, label) for kwargs, label in OVERRIDE_CASES),
    *((expected_named_config_file, kwargs, label) for kwargs, label in CONFIG_FILE_CASES),
    *((expected_episodes, kwargs, label) for kwargs, label in EPISODE_CASES),
    *((expected_frozen_outcome, kwargs, label) for kwargs, label in FROZEN_CASES),
], ids=lambda value: case_id(value) if isinstance(value, dict) else None)
def test_oracles_agree_with_hand_labelled_cases(oracle, kwargs, label):
    assert outcome_name(oracle(**kwargs)) == label


# ---------------------------------------------------------------- bugs these tests found, fixed
# Each case states the correct outcome; each once failed (a crash, a two-line message, or a
# silent acceptance). The generators above still leave them out; these pin them.

def load_config_text(tmp_path: Path, text: str) -> RunConfig:
    path = tmp_path / CONFIG_FILE_NAME
    path.write_text(text, encoding="utf-8")
    return load_config(path)


def override_default(override: str) -> RunConfig:
    raw = copy.deepcopy(DEFAULT_RAW)
    apply_override(raw, override)
    return config_from_dict(raw)


def frozen_text(tmp_path: Path, raw: dict) -> ep.EpisodeSet:
    path = tmp_path / FROZEN_FILE_NAME
    path.write_text(json.dumps(raw), encoding="utf-8")
    return ep.load(path)


FIXED_BUGS = [
    pytest.param(Refused(ConfigError, (("stats", "confidence"),)),
                 lambda tmp: config_from_dict({"stats": {"confidence": 10 ** 400}}),
                 id="confidence-int-too-large-for-a-float"),
    pytest.param(Refused(ConfigError, (("seed",),)), lambda tmp: override_default("seed=2001-13-45"),
                 id="set-impossible-date"),
    pytest.param(Refused(ConfigError, ((CONFIG_FILE_NAME,),)),
                 lambda tmp: load_config_text(tmp, "seed: !!int abc\n"), id="config-file-impossible-int"),
    pytest.param(Refused(ConfigError, (("unknown config key",),)), lambda tmp: config_from_dict({"a\nb": 1}),
                 id="unknown-key-with-a-line-break"),
    pytest.param(Refused(ConfigError, (("methods",),)), lambda tmp: config_from_dict({"methods": {"a\nb": 5}}),
                 id="method-name-with-a-line-break"),
    pytest.param(Refused(ConfigError, (("methods.1", "must be a string"),)),
                 lambda tmp: config_from_dict({"methods": {1: {"lr": 0.1}, "1": {"lr": 0.2}}}),
                 id="method-names-that-collide"),
    pytest.param(refused_frozen(), lambda tmp: frozen_text(tmp, {**FROZEN_RAW, "episodes": 999}),
                 id="frozen-episodes-header-wrong"),
    pytest.param(refused_frozen(),
                 lambda tmp: frozen_text(tmp, {k: v for k, v in FROZEN_RAW.items() if k != "episodes"}),
                 id="frozen-episodes-header-missing"),
]


@pytest.mark.parametrize("expected, attempt", FIXED_BUGS)
def test_bugs_these_tests_found_stay_fixed(tmp_path, expected, attempt):
    check_outcome(expected, lambda: attempt(tmp_path))

"""The oracles of the hostile-input tests: the rules of a run config and of an episode request,
written down again from configs/default.yaml, benchmark/config.py's docstrings and
benchmark/limits.py rather than asked of the code under test.
"""

from __future__ import annotations

import copy
import json
import string
import unicodedata
from collections import Counter
from pathlib import Path

import numpy as np
import yaml

from benchmark.config import RunConfig, config_from_dict
from benchmark.errors import ConfigError, EpisodeError
from tasks import episodes as ep
from tests.hostile import (Accepted, Refused)

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
    """One number (of ways, of shots), or a non-empty list of them (any integers: the generator
    judges their size)."""
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
TASK_SET_FIELDS = {"protocol": as_one_of("within", "cross", "official", "vinyals"), "n_way": as_n_ways, "k_shot": as_n_ways,
                   "n_query": as_integer, "episodes": as_integer, "seed": as_seed,
                   "split": lambda value: None if value is None else  # unset: the protocol's default
                   as_one_of("background", "evaluation", "vinyals_test", "vinyals_trainval")(value),
                   "only_trained": as_bool}
TASK_SET_DEFAULTS = {"n_way": [20], "k_shot": [1], "n_query": 1, "episodes": 1000, "seed": 0,
                     "split": None, "only_trained": False}
# Each protocol's splits, its default first: Lake's official runs are evaluation images; the
# Vinyals protocol has splits of its own.
SPLITS_OF_PROTOCOL = {"within": ["evaluation", "background"], "cross": ["evaluation", "background"],
                      "official": ["evaluation"], "vinyals": ["vinyals_test", "vinyals_trainval"]}
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
        values = expected[name] = checked_fields(entry, TASK_SET_FIELDS, TASK_SET_DEFAULTS, section, problems)
        allowed = SPLITS_OF_PROTOCOL.get(values.get("protocol"))
        if allowed and (values["split"] or allowed[0]) not in allowed:
            problems.append((section, "split"))
        elif allowed:
            values["split"] = values["split"] or allowed[0]
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

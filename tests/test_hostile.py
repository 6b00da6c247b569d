"""Hostile input, tried systematically: every input has an expected outcome, and must get it.

Hypothesis feeds the config loader, the `--set` parser and config files (this file), the
episode generator and frozen episode files (tests/test_hostile_episodes.py) with random and
hostile values (negative, huge, wrong types, unicode, empty, nested junk, NaN, YAML tricks);
tests/test_hostile_data.py does the same for the data readers (truncated or bit-flipped
files, hostile zip members). For each input an oracle,
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
from pathlib import Path
from typing import Any, Callable

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from benchmark.config import RunConfig, apply_override, config_from_dict, load_config
from benchmark.errors import ConfigError, DataError, EpisodeError
from tasks import episodes as ep
from tasks.sets import resolve_task_sets
from tests.hostile import (Accepted, DATA, DEFAULT_RAW, LINE_BREAKS, PATHS, Refused, VALID_AT, case_id,
                           check_outcome, hostile, junk, labelled_examples, one_line_text, outcome_name,
                           set_path, valid_or_junk)
from tests.hostile_counts import record
from tests.hostile_oracles import (MAX_EPISODES, RUN_FIELDS, check_config_is, expected_config,
                                   expected_config_file, expected_episodes, expected_override)


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
    (dict(path="task_sets.official", value={"protocol": "official", "split": "background"}), "refused"),
    (dict(path="task_sets.cross.split", value="vinyals_test"), "refused"),  # the Vinyals split is not Lake's
    (dict(path="task_sets.vinyals", value={"protocol": "vinyals", "split": "background"}), "refused"),
    (dict(path="task_sets.vinyals", value={"protocol": "vinyals", "n_way": 5}), "accepted"),
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
        if task_set.protocol == "vinyals":  # its class lists name characters the synthetic data does not have
            return Refused(DataError, (("Vinyals",),))
        if task_set.protocol == "official":
            resolved.append((name, "evaluation", OFFICIAL_STUB_WAYS, 1))
            continue
        for k_shot in task_set.k_shot:
            for n_way in task_set.n_way:
                verdict = expected_episodes(dict(
                    alphabet=getattr(DATA, task_set.split).alphabet, protocol=task_set.protocol, n_way=n_way,
                    k_shot=k_shot, n_query=task_set.n_query, episodes=task_set.episodes, seed=task_set.seed))
                if isinstance(verdict, Refused):
                    return Refused(EpisodeError, tuple((repr(name), *reason) for reason in verdict.reasons))
                resolved.append((name, task_set.split, n_way, k_shot))
    return Accepted(resolved)


def with_few_episodes(config: RunConfig) -> RunConfig:
    """The config with at most 2 episodes per task set, so that drawing them is cheap; counts
    outside [1, MAX_EPISODES] stay, as they are refused before any work."""
    def few(episodes: int) -> int:
        return min(episodes, 2) if 1 <= episodes <= MAX_EPISODES else episodes

    return dataclasses.replace(config, task_sets={name: dataclasses.replace(task_set, episodes=few(task_set.episodes))
                                                  for name, task_set in config.task_sets.items()})


def check_resolution(config: RunConfig) -> None:
    """A valid config's episodes: refused as the episode oracle says, or one set per (task set, N, k) as asked."""
    if config.frozen is not None:
        return  # frozen files are tried in test_hostile_frozen_files
    config = with_few_episodes(config)
    expected = expected_resolution(config)
    outcome, resolved = check_outcome(expected, lambda: resolve_task_sets(config, DATA, official_runs=official_stub))
    if outcome == "accepted":
        assert [(ts.name, ts.split, ts.episodes.n_way, ts.episodes.k_shot) for ts in resolved] == expected.value
        for ts in resolved:
            wanted = config.task_sets[ts.name]
            if wanted.protocol != "official":
                assert (ts.episodes.protocol, ts.episodes.n_episodes, ts.episodes.n_query,
                        ts.episodes.seed) == (wanted.protocol, wanted.episodes, wanted.n_query, wanted.seed)


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


# ---------------------------------------------------------------- the oracles, against hand labels

@pytest.mark.parametrize("oracle, kwargs, label", [
    *((expected_one_field, kwargs, label) for kwargs, label in ONE_FIELD_CASES),
    *((expected_default_override, kwargs, label) for kwargs, label in OVERRIDE_CASES),
    *((expected_named_config_file, kwargs, label) for kwargs, label in CONFIG_FILE_CASES),
], ids=lambda value: case_id(value) if isinstance(value, dict) else None)
def test_oracles_agree_with_hand_labelled_cases(oracle, kwargs, label):
    assert outcome_name(oracle(**kwargs)) == label


# ---------------------------------------------------------------- bugs these tests found, fixed
# Each case states the correct outcome; each once failed (a crash, a two-line message, or a
# silent acceptance). The generators above still leave them out; these pin them (those of
# the episode files: tests/test_hostile_episodes.py).

def load_config_text(tmp_path: Path, text: str) -> RunConfig:
    path = tmp_path / CONFIG_FILE_NAME
    path.write_text(text, encoding="utf-8")
    return load_config(path)


def override_default(override: str) -> RunConfig:
    raw = copy.deepcopy(DEFAULT_RAW)
    apply_override(raw, override)
    return config_from_dict(raw)


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
]


@pytest.mark.parametrize("expected, attempt", FIXED_BUGS)
def test_bugs_these_tests_found_stay_fixed(tmp_path, expected, attempt):
    check_outcome(expected, lambda: attempt(tmp_path))

"""What the hostile-input tests share (tests/test_hostile*.py): the expected outcomes of an input
and the check that an attempt got its outcome, the Hypothesis settings, and the strategies
that make hostile values. The oracles that say which outcome each input must get are in
tests/hostile_oracles.py.
"""

from __future__ import annotations

import copy
import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import yaml
from hypothesis import HealthCheck, example, settings
from hypothesis import strategies as st

from benchmark.errors import BenchmarkError
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


def task_set_entry(protocol: str, splits: list[str]):
    """A valid task set of one protocol: its split, when set, is one the protocol draws from."""
    return st.fixed_dictionaries({"protocol": st.just(protocol)}, optional={
        "n_way": n_ways, "k_shot": st.one_of(counts, st.lists(counts, min_size=1, max_size=3)), "n_query": counts,
        "episodes": st.integers(1, 20), "seed": seeds, "split": st.sampled_from(splits), "only_trained": st.booleans()})


# (Vinyals task sets are tried by hand-labelled examples: the synthetic data has none of their classes.)
task_set_entries = st.one_of(task_set_entry("cross", ["background", "evaluation"]),
                             task_set_entry("within", ["background", "evaluation"]),
                             task_set_entry("official", ["evaluation"]))
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

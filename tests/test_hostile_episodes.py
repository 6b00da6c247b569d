"""Hostile episode requests and frozen episode files: each input's expected outcome (tests/hostile.py
and tests/hostile_oracles.py say how), checked like the configs' in tests/test_hostile.py."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from benchmark.errors import EpisodeError
from tasks import episodes as ep
from tests.hostile import (Accepted, Refused, case_id, check_outcome, hostile, huge_ints, junk,
                           labelled_examples, outcome_name)
from tests.hostile_counts import record
from tests.hostile_oracles import MAX_SEED, check_episodes_are, expected_episodes, is_integer


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
    *((expected_episodes, kwargs, label) for kwargs, label in EPISODE_CASES),
    *((expected_frozen_outcome, kwargs, label) for kwargs, label in FROZEN_CASES),
], ids=lambda value: case_id(value) if isinstance(value, dict) else None)
def test_oracles_agree_with_hand_labelled_cases(oracle, kwargs, label):
    assert outcome_name(oracle(**kwargs)) == label


# ---------------------------------------------------------------- bugs these tests found, fixed

def frozen_text(tmp_path: Path, raw: dict) -> ep.EpisodeSet:
    path = tmp_path / FROZEN_FILE_NAME
    path.write_text(json.dumps(raw), encoding="utf-8")
    return ep.load(path)


@pytest.mark.parametrize("raw", [
    pytest.param({**FROZEN_RAW, "episodes": 999}, id="frozen-episodes-header-wrong"),
    pytest.param({k: v for k, v in FROZEN_RAW.items() if k != "episodes"}, id="frozen-episodes-header-missing"),
])
def test_a_frozen_files_episodes_header_must_match_its_episodes(tmp_path, raw):
    # load() once ignored the header: a file claiming 999 episodes that held 4 loaded.
    check_outcome(refused_frozen(), lambda: frozen_text(tmp_path, raw))

"""Episode sets: determinism, structure, uniform class positions, frozen files, bad requests."""

import json

import numpy as np
import pytest

from benchmark.errors import EpisodeError
from tasks import episodes as ep

# 5 alphabets of 30, 12, 8, 5 and 3 characters.
ALPHABET = np.array(["A"] * 30 + ["B"] * 12 + ["C"] * 8 + ["D"] * 5 + ["E"] * 3)


def generate(**kwargs):
    params = dict(alphabet=ALPHABET, split_sha256="sha", protocol="cross", n_way=5, k_shot=1,
                  n_query=1, episodes=200, seed=3)
    params.update(kwargs)
    return ep.generate(**params)


@pytest.mark.parametrize("protocol", ["within", "cross"])
def test_first_episodes_do_not_depend_on_how_many_are_asked_for(protocol):
    many = generate(protocol=protocol, episodes=1000)
    few = generate(protocol=protocol, episodes=10)
    assert np.array_equal(many.support[:10], few.support)
    assert np.array_equal(many.query[:10], few.query)
    assert np.array_equal(many.query_label[:10], few.query_label)


def test_other_seed_other_episodes():
    assert not np.array_equal(generate(seed=3).support, generate(seed=4).support)


@pytest.mark.parametrize("protocol", ["within", "cross", "vinyals"])
@pytest.mark.parametrize("k_shot,n_query", [(1, 1), (5, 3), (1, 19), (5, 15)])
def test_support_and_query_are_disjoint_and_labels_match(protocol, k_shot, n_query):
    s = generate(protocol=protocol, n_way=5, k_shot=k_shot, n_query=n_query, episodes=50)
    assert s.support.shape == (50, 5, k_shot) and s.query.shape == (50, 5 * n_query)
    for e in range(50):
        support, query = s.support[e], s.query[e]
        assert len(set(support.ravel()) | set(query)) == support.size + query.size  # all distinct
        support_character = support[:, 0] // 20
        assert len(set(support_character)) == 5
        assert np.all(support // 20 == support_character[:, None])  # k drawings of one character
        assert np.array_equal(query // 20, support_character[s.query_label[e]])
        assert np.array_equal(np.bincount(s.query_label[e], minlength=5), np.full(5, n_query))


def test_within_episodes_stay_inside_one_alphabet_and_skip_small_alphabets():
    s = generate(protocol="within", n_way=8, episodes=300)
    alphabets_used = set()
    for e in range(300):
        names = set(ALPHABET[s.support[e, :, 0] // 20])
        assert len(names) == 1
        alphabets_used |= names
    assert alphabets_used == {"A", "B", "C"}  # D and E have fewer than 8 characters


def test_cross_episodes_mix_alphabets():
    s = generate(protocol="cross", n_way=10, episodes=50)
    assert np.mean([len(set(ALPHABET[row[:, 0] // 20])) > 1 for row in s.support]) > 0.9


@pytest.mark.parametrize("protocol", ["within", "cross"])
def test_true_class_position_is_uniform(protocol):
    # The class of the first query, and the position of a fixed character among the supports,
    # are uniform over the N positions: a method that always answers 0 scores 1/N.
    n_way, episodes = 5, 4000
    s = generate(protocol=protocol, n_way=n_way, episodes=episodes)
    counts = np.bincount(s.query_label[:, 0], minlength=n_way)
    expected = episodes / n_way
    chi2 = ((counts - expected) ** 2 / expected).sum()
    assert chi2 < 18.5  # p = 0.001 for 4 degrees of freedom; the seed is fixed, so no flakiness
    smallest_position = np.argmin(s.support[:, :, 0], axis=1)
    counts = np.bincount(smallest_position, minlength=n_way)
    assert ((counts - expected) ** 2 / expected).sum() < 18.5
    assert abs(np.mean(s.query_label[:, 0] == 0) - 1 / n_way) < 0.03


@pytest.mark.parametrize("kwargs,message", [
    (dict(protocol="within", n_way=31), "at most 30"),
    (dict(protocol="cross", n_way=59), "at most 58"),
    (dict(n_way=1), "n_way must be an integer >= 2"),
    (dict(k_shot=15, n_query=6), r"k_shot \+ n_query = 21"),
    (dict(k_shot=0), "k_shot must be"),
    (dict(episodes=0), "episodes must be"),
    (dict(n_way=2.5), "n_way must be an integer"),
    (dict(protocol="diagonal"), "unknown protocol"),
])
def test_impossible_requests_are_refused_in_one_line(kwargs, message):
    with pytest.raises(EpisodeError, match=message) as info:
        generate(**kwargs)
    assert "\n" not in str(info.value)


def test_frozen_file_round_trip_is_byte_identical(tmp_path):
    s = generate(protocol="within", n_way=5, k_shot=2, n_query=3, episodes=20)
    first = ep.save(s, tmp_path / "a.json")
    loaded = ep.load(first, split_sha256="sha")
    assert loaded.same_as(s)
    second = ep.save(generate(protocol="within", n_way=5, k_shot=2, n_query=3, episodes=20),
                     tmp_path / "b.json")
    assert first.read_bytes() == second.read_bytes()
    assert json.loads(first.read_text())["ids_sha256"] == s.ids_sha256


def test_tampered_frozen_file_is_refused(tmp_path):
    path = ep.save(generate(episodes=5), tmp_path / "f.json")
    raw = json.loads(path.read_text())
    raw["support"][0][0][0] += 1
    path.write_text(json.dumps(raw))
    with pytest.raises(EpisodeError, match="was modified"):
        ep.load(path)


def test_frozen_file_for_other_data_is_refused(tmp_path):
    path = ep.save(generate(episodes=5), tmp_path / "f.json")
    with pytest.raises(EpisodeError, match="made for other data"):
        ep.load(path, split_sha256="another")


@pytest.mark.parametrize("text", ["", "{", "[]", '{"format": "something else"}'])
def test_garbled_frozen_file_is_refused(tmp_path, text):
    path = tmp_path / "f.json"
    path.write_text(text)
    with pytest.raises(EpisodeError, match="unreadable"):
        ep.load(path)


def test_missing_frozen_file_says_how_to_make_it(tmp_path):
    with pytest.raises(EpisodeError, match="freeze"):
        ep.load(tmp_path / "nope.json")

"""Paired comparisons: the same episodes resampled for both methods, and McNemar on one query."""

import numpy as np
import pandas as pd
import pytest

from benchmark.config import StatsConfig
from benchmark.stats import PAIRED_COLUMNS, bootstrap_indices, mcnemar_exact, paired_differences

EPISODES, QUERIES = 400, 5


def records_of(method: str, correct: np.ndarray, seed: int = 0, task_set: str = "cross") -> pd.DataFrame:
    """Records of one method from a (episodes, queries) array of 0/1."""
    episodes, queries = correct.shape
    return pd.DataFrame({"method": method, "seed": seed, "task_set": task_set, "split": "evaluation",
                         "protocol": "cross", "n_way": 5, "k_shot": 1,
                         "episode": np.repeat(np.arange(episodes), queries),
                         "query": np.tile(np.arange(queries), episodes),
                         "correct": correct.reshape(-1).astype(np.int8)})


def correlated_methods(rng) -> tuple[np.ndarray, np.ndarray]:
    """Two methods that find the same episodes hard: B is A with some wrong answers made right."""
    difficulty = rng.random(EPISODES)[:, None]  # some episodes are hard for everyone
    noise = rng.random((EPISODES, QUERIES))
    a = (noise > difficulty).astype(np.int8)
    b = np.where(rng.random((EPISODES, QUERIES)) < 0.15, 1, a).astype(np.int8)
    return a, b


def test_paired_interval_is_narrower_than_the_unpaired_one_on_correlated_methods():
    a, b = correlated_methods(np.random.default_rng(0))
    records = pd.concat([records_of("a", a), records_of("b", b)], ignore_index=True)
    row = paired_differences(records, order=["b", "a"]).iloc[0]
    assert (row.method_a, row.method_b) == ("b", "a")  # the method listed first minus the other
    assert row.difference == pytest.approx(b.mean() - a.mean())
    assert row.ci_low < row.difference < row.ci_high and row.significant
    # Unpaired: each method's episodes resampled independently of the other's.
    a_means = a.mean(1)[bootstrap_indices(EPISODES, 2000, 1)].mean(1)
    b_means = b.mean(1)[bootstrap_indices(EPISODES, 2000, 2)].mean(1)
    unpaired_low, unpaired_high = np.percentile(b_means - a_means, [2.5, 97.5])
    assert (row.ci_high - row.ci_low) < 0.6 * (unpaired_high - unpaired_low)


def test_paired_interval_resamples_the_same_episodes_for_both_methods():
    a, b = correlated_methods(np.random.default_rng(1))
    records = pd.concat([records_of("a", a), records_of("b", b)], ignore_index=True)
    row = paired_differences(records, StatsConfig(resamples=500, seed=4), order=["b", "a"]).iloc[0]
    indices = bootstrap_indices(EPISODES, 500, 4)
    differences = b.mean(1)[indices].mean(1) - a.mean(1)[indices].mean(1)
    assert (row.ci_low, row.ci_high) == pytest.approx(tuple(np.percentile(differences, [2.5, 97.5])))


def test_equal_methods_differ_by_nothing_and_no_pair_is_made_across_task_sets():
    a, _ = correlated_methods(np.random.default_rng(2))
    records = pd.concat([records_of("a", a), records_of("copy", a), records_of("other", a, task_set="within")],
                        ignore_index=True)
    paired = paired_differences(records)
    assert list(paired.columns) == PAIRED_COLUMNS
    assert len(paired) == 1  # "other" is alone in its task set
    row = paired.iloc[0]
    assert row.difference == 0 and (row.ci_low, row.ci_high) == (0, 0) and not row.significant
    assert (row.mcnemar_a_only, row.mcnemar_b_only, row.mcnemar_p) == (0, 0, 1.0)


def test_mcnemar_uses_the_first_query_of_each_episode_and_the_lowest_seed():
    # Query 0: A right on episodes 0-9, B right on 0-1 -> 8 discordant for A, 0 for B. The
    # other queries (and seed 1 of B) say the opposite and must be ignored.
    a = np.zeros((40, 3), np.int8)
    b = np.ones((40, 3), np.int8)
    a[:10, 0], b[:, 0], b[:2, 0] = 1, 0, 1
    b_seed1 = np.ones((40, 3), np.int8)
    records = pd.concat([records_of("b", b, seed=0), records_of("b", b_seed1, seed=1),
                         records_of("a", a)], ignore_index=True)
    row = paired_differences(records, order=["a", "b"]).iloc[0]
    assert (row.method_a, row.method_b) == ("a", "b")
    assert (row.mcnemar_a_only, row.mcnemar_b_only) == (8, 0)
    assert row.mcnemar_p == mcnemar_exact(8, 0) == pytest.approx(2 / 2 ** 8)
    # The bootstrap difference uses every query and both seeds of b.
    assert row.accuracy_b == pytest.approx((b.mean() + 1) / 2)


def test_only_episodes_both_methods_have_are_compared():
    a, b = correlated_methods(np.random.default_rng(3))
    records = pd.concat([records_of("a", a), records_of("b", b[:100])], ignore_index=True)
    row = paired_differences(records, order=["b", "a"]).iloc[0]
    assert row.episodes == 100
    assert row.difference == pytest.approx(b[:100].mean() - a[:100].mean())


def test_differences_are_earlier_listed_minus_later_listed():
    a, b = correlated_methods(np.random.default_rng(5))
    records = pd.concat([records_of("a", a), records_of("b", b), records_of("c", a)], ignore_index=True)
    pairs = paired_differences(records)[["method_a", "method_b"]].values.tolist()
    assert pairs == [["a", "b"], ["a", "c"], ["b", "c"]]  # no order given: as in the records
    listed = paired_differences(records, order=["c", "b"])  # methods not listed come after
    assert listed[["method_a", "method_b"]].values.tolist() == [["c", "b"], ["c", "a"], ["b", "a"]]
    gain = listed[(listed.method_a == "b") & (listed.method_b == "a")].iloc[0]
    assert gain.difference == pytest.approx(b.mean() - a.mean()) and gain.difference > 0

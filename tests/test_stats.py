"""Confidence intervals: bootstrap over episodes, the normal interval papers print, McNemar, seeds."""

import math

import numpy as np
import pandas as pd
import pytest

from benchmark.stats import bootstrap_ci, bootstrap_cis, group_numbers, mcnemar_exact, normal_ci, summarize


def test_bootstrap_ci_brackets_the_mean_and_shrinks_with_more_episodes():
    rng = np.random.default_rng(0)
    small = rng.random(50)
    large = rng.random(5000)
    low, high = bootstrap_ci(small, 2000, 0.95, 0)
    assert low < small.mean() < high
    low_large, high_large = bootstrap_ci(large, 2000, 0.95, 0)
    assert high_large - low_large < (high - low) / 5


def test_bootstrap_ci_is_seeded():
    values = np.random.default_rng(1).random(100)
    assert bootstrap_ci(values, 2000, 0.95, 3) == bootstrap_ci(values, 2000, 0.95, 3)
    assert bootstrap_ci(values, 2000, 0.95, 3) != bootstrap_ci(values, 2000, 0.95, 4)


def test_bootstrap_means_of_integer_counts_are_exact_and_match_the_textbook_gather():
    from fractions import Fraction

    from benchmark.stats import bootstrap_indices

    rng = np.random.default_rng(5)
    correct, queries = rng.integers(0, 21, size=37), 20  # correct answers of 37 episodes of 20 queries
    indices = bootstrap_indices(37, 300, 2)
    # Each resample's mean, exactly, then rounded once: what the interval must be made of.
    exact = np.array([float(Fraction(int(correct[row].sum()), 37 * queries)) for row in indices])
    tail = (1 - 0.9) / 2 * 100
    assert bootstrap_ci(correct, 300, 0.9, 2, denominator=queries) == tuple(np.percentile(exact, [tail, 100 - tail]))
    textbook = np.percentile((correct / queries)[indices].mean(axis=1), [5, 95])  # float sums: last bits differ
    assert np.allclose(bootstrap_ci(correct, 300, 0.9, 2, denominator=queries), textbook, rtol=0, atol=1e-12)


def test_bootstrap_cis_gives_each_array_the_interval_it_has_alone():
    rng = np.random.default_rng(5)
    arrays = [rng.integers(-5, 20, size) for size in (7, 300, 300, 1000, 1)] + [np.zeros(0)]
    denominators = [20, 20, 60, 3, 1, 20]
    together = bootstrap_cis(arrays, denominators, 500, 0.9, 2)
    alone = [bootstrap_ci(values, 500, 0.9, 2, denominator=d) for values, d in zip(arrays, denominators)]
    assert together[:-1] == alone[:-1]  # exactly: the same resamples and the same sums
    assert all(math.isnan(bound) for bound in together[-1])


@pytest.mark.parametrize("seeds", [[0, 3, -2], [0, 2 ** 40, 2 ** 62]])  # the second too far apart for one key
def test_group_numbers_are_pandas_ngroup_for_every_kind_of_column(seeds):
    rng = np.random.default_rng(6)
    rows = 500
    frame = pd.DataFrame({
        "method": pd.Categorical(rng.choice(["b", "a", "c"], rows), categories=["c", "b", "a", "unused"]),
        "task_set": rng.choice(["cross", "within"], rows),  # plain strings
        "seed": rng.choice(seeds, rows),
        "n_way": rng.choice([5, 20], rows),
    })
    columns = ["method", "task_set", "seed", "n_way"]
    expected = frame.groupby(columns, sort=False, observed=True).ngroup().to_numpy()
    assert (group_numbers(frame, columns) == expected).all()
    assert len(group_numbers(frame.iloc[:0], columns)) == 0


def test_bootstrap_ci_agrees_with_normal_ci_on_a_large_sample():
    values = (np.random.default_rng(2).random(4000) < 0.3).astype(float)
    boot, normal = bootstrap_ci(values, 2000, 0.95, 0), normal_ci(values, 0.95)
    assert abs(boot[0] - normal[0]) < 0.004 and abs(boot[1] - normal[1]) < 0.004
    assert abs((normal[1] - normal[0]) / 2 - 1.96 * values.std(ddof=1) / np.sqrt(4000)) < 1e-4


@pytest.mark.parametrize("true_accuracy,episodes", [(0.3, 200), (0.85, 300)])
def test_bootstrap_ci_covers_the_true_accuracy_at_about_the_nominal_rate(true_accuracy, episodes):
    # 400 seeded experiments, each a sample of Bernoulli(p) episode outcomes: the 95% interval
    # should contain p in about 95% of them (binomial sd of the rate over 400: 0.011).
    rng = np.random.default_rng(7)
    covered = 0
    for repetition in range(400):
        sample = (rng.random(episodes) < true_accuracy).astype(float)
        low, high = bootstrap_ci(sample, 1000, 0.95, repetition)
        covered += low <= true_accuracy <= high
    assert 0.92 <= covered / 400 <= 0.98


def test_summarize_resamples_episodes_not_queries():
    # 100 episodes of 20 queries; all queries of an episode right or all wrong. Treating the
    # 2000 queries as independent would give an interval about sqrt(20) times too narrow.
    correct = np.repeat(np.arange(100) % 2, 20)
    records = pd.DataFrame({"method": "m", "seed": 0, "task_set": "t", "split": "evaluation",
                            "protocol": "cross", "n_way": 20, "k_shot": 1,
                            "episode": np.repeat(np.arange(100), 20),
                            "query": np.tile(np.arange(20), 100), "correct": correct})
    row = summarize(records).iloc[0]
    assert row.accuracy == 0.5 and row.episodes == 100 and row.queries == 2000
    assert row.ci_high - row.ci_low > 0.15  # episode-level: about +-0.1
    assert row.ci_low < 0.5 < row.ci_high
    assert row.seeds == 1 and np.isnan(row.seed_std) and row.seed_min == row.seed_max == 0.5


def seeded_records(per_seed_correct: dict[int, np.ndarray], method="trained") -> pd.DataFrame:
    """Records of one method with one row per (seed, episode), correctness given per seed."""
    frames = []
    for seed, correct in per_seed_correct.items():
        frames.append(pd.DataFrame({"method": method, "seed": seed, "task_set": "cross",
                                    "split": "evaluation", "protocol": "cross", "n_way": 5,
                                    "k_shot": 1, "episode": np.arange(len(correct)), "query": 0,
                                    "correct": correct}))
    return pd.concat(frames, ignore_index=True)


def test_summarize_reports_the_mean_over_seeds_their_spread_and_the_episode_interval():
    # 100 episodes; seed 0 gets 60 right, seed 1 70, seed 2 80 (different episodes each).
    correct = {seed: (np.arange(100) < 60 + 10 * seed).astype(np.int8) for seed in range(3)}
    row = summarize(seeded_records(correct)).iloc[0]
    assert row.seeds == 3 and row.episodes == 100 and row.queries == 100
    assert row.accuracy == pytest.approx(0.7)
    assert row.seed_std == pytest.approx(0.1) and (row.seed_min, row.seed_max) == (0.6, 0.8)
    # The episode interval resamples episodes of the seed-averaged accuracy: per-episode
    # means are 1 (60 episodes), 2/3 (10), 1/3 (10), 0 (20).
    correct_of_episode = np.sum([c for c in correct.values()], axis=0)  # of 3 answers, one a seed
    assert (row.ci_low, row.ci_high) == bootstrap_ci(correct_of_episode, 2000, 0.95, 0, denominator=3)


def test_mcnemar_exact_matches_hand_computed_values():
    # b=1, c=9: 2 * (C(10,0) + C(10,1)) / 2^10 = 22/1024
    assert mcnemar_exact(1, 9) == pytest.approx(0.021484375, abs=1e-15)
    assert mcnemar_exact(9, 1) == mcnemar_exact(1, 9)
    # b=3, c=7: 2 * (1 + 10 + 45 + 120) / 1024
    assert mcnemar_exact(3, 7) == pytest.approx(352 / 1024, abs=1e-15)
    # b=0, c=5: 2 / 32
    assert mcnemar_exact(0, 5) == pytest.approx(0.0625, abs=1e-15)
    assert mcnemar_exact(5, 5) == 1.0 and mcnemar_exact(0, 0) == 1.0 and mcnemar_exact(0, 1) == 1.0


def test_mcnemar_exact_agrees_with_the_continuity_corrected_chi_square_on_large_counts():
    # chi2 = (|b - c| - 1)^2 / (b + c) = 3.61 for b=40, c=60; p = P(chi2_1 > 3.61) = erfc(sqrt(3.61/2))
    chi_square_p = math.erfc(math.sqrt(3.61 / 2))
    assert abs(mcnemar_exact(40, 60) - chi_square_p) < 0.003
    # Large n: exact integers, no overflow, and the approximation is closer still.
    assert mcnemar_exact(4000, 4300) == pytest.approx(math.erfc(math.sqrt(299 ** 2 / 8300 / 2)), rel=0.01)


def test_mcnemar_exact_refuses_negative_counts():
    with pytest.raises(ValueError):
        mcnemar_exact(-1, 3)

"""Confidence intervals: bootstrap over episodes and the normal interval papers print."""

import numpy as np
import pandas as pd

from benchmark.stats import bootstrap_ci, normal_ci, summarize


def test_bootstrap_ci_brackets_the_mean_and_shrinks_with_more_episodes():
    rng = np.random.default_rng(0)
    small = rng.random(50)
    large = rng.random(5000)
    low, high = bootstrap_ci(small)
    assert low < small.mean() < high
    low_large, high_large = bootstrap_ci(large)
    assert high_large - low_large < (high - low) / 5


def test_bootstrap_ci_is_seeded():
    values = np.random.default_rng(1).random(100)
    assert bootstrap_ci(values, seed=3) == bootstrap_ci(values, seed=3)
    assert bootstrap_ci(values, seed=3) != bootstrap_ci(values, seed=4)


def test_bootstrap_ci_agrees_with_normal_ci_on_a_large_sample():
    values = (np.random.default_rng(2).random(4000) < 0.3).astype(float)
    boot, normal = bootstrap_ci(values), normal_ci(values)
    assert abs(boot[0] - normal[0]) < 0.004 and abs(boot[1] - normal[1]) < 0.004
    assert abs((normal[1] - normal[0]) / 2 - 1.96 * values.std(ddof=1) / np.sqrt(4000)) < 1e-4


def test_summarize_resamples_episodes_not_queries():
    # 100 episodes of 20 queries; all queries of an episode right or all wrong. Treating the
    # 2000 queries as independent would give an interval about sqrt(20) times too narrow.
    correct = np.repeat(np.arange(100) % 2, 20)
    records = pd.DataFrame({"method": "m", "task_set": "t", "split": "evaluation", "protocol": "cross",
                            "n_way": 20, "k_shot": 1, "episode": np.repeat(np.arange(100), 20),
                            "query": np.tile(np.arange(20), 100), "correct": correct})
    row = summarize(records).iloc[0]
    assert row.accuracy == 0.5 and row.episodes == 100 and row.queries == 2000
    assert row.ci_high - row.ci_low > 0.15  # episode-level: about +-0.1
    assert row.ci_low < 0.5 < row.ci_high

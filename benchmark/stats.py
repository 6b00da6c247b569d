"""Accuracy with confidence intervals from per-query records.

Queries of one episode share their supports, so they are not independent: the unit of
resampling is the episode. The 95% interval is a seeded percentile bootstrap over
episodes; the normal interval 1.96 s / sqrt(E) over episode accuracies is reported beside
it because papers use it.
"""

from __future__ import annotations

from statistics import NormalDist

import numpy as np
import pandas as pd

GROUP_COLUMNS = ["method", "task_set", "split", "protocol", "n_way", "k_shot"]
SUMMARY_COLUMNS = GROUP_COLUMNS + ["episodes", "queries", "accuracy", "ci_low", "ci_high",
                                   "ci_normal_low", "ci_normal_high"]


def bootstrap_indices(n_episodes: int, resamples: int, seed: int) -> np.ndarray:
    """Resampled episode indices (resamples, E). Depends only on (E, resamples, seed), so every
    method evaluated on the same episodes is resampled the same way: comparisons are paired."""
    rng = np.random.default_rng([seed, n_episodes])
    return rng.integers(0, n_episodes, size=(resamples, n_episodes))


def bootstrap_ci(values: np.ndarray, resamples: int = 2000, confidence: float = 0.95,
                 seed: int = 0) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of per-episode values."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) == 0:
        return float("nan"), float("nan")
    means = values[bootstrap_indices(len(values), resamples, seed)].mean(axis=1)
    tail = (1 - confidence) / 2 * 100
    low, high = np.percentile(means, [tail, 100 - tail])
    return float(low), float(high)


def normal_ci(values: np.ndarray, confidence: float = 0.95) -> tuple[float, float]:
    """mean +- z * s / sqrt(E): the interval most papers print."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2:
        return float("nan"), float("nan")
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    half = z * values.std(ddof=1) / np.sqrt(len(values))
    return float(values.mean() - half), float(values.mean() + half)


def episode_accuracy(records: pd.DataFrame) -> pd.DataFrame:
    """Mean correctness per episode, with the group columns."""
    return (records.groupby(GROUP_COLUMNS + ["episode"], sort=False, observed=True)["correct"]
            .agg(["mean", "size"]).reset_index())


def summarize(records: pd.DataFrame, resamples: int = 2000, confidence: float = 0.95,
              seed: int = 0) -> pd.DataFrame:
    """One row per (method, task set, split, protocol, N, k): accuracy and its intervals."""
    per_episode = episode_accuracy(records)
    rows = []
    for key, group in per_episode.groupby(GROUP_COLUMNS, sort=False, observed=True):
        values = group["mean"].to_numpy()
        queries = int(group["size"].sum())
        # With equal queries per episode the mean of episode means is the mean over queries.
        accuracy = float(np.average(values, weights=group["size"].to_numpy()))
        low, high = bootstrap_ci(values, resamples, confidence, seed)
        normal_low, normal_high = normal_ci(values, confidence)
        rows.append(dict(zip(GROUP_COLUMNS, key), episodes=len(values), queries=queries,
                         accuracy=accuracy, ci_low=low, ci_high=high,
                         ci_normal_low=normal_low, ci_normal_high=normal_high))
    summary = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    return summary.sort_values(["task_set", "n_way", "method"], kind="stable").reset_index(drop=True)

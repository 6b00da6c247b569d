"""Accuracy with confidence intervals, seed spread and paired comparisons from per-query records.

Queries of one episode share their supports, so they are not independent: the unit of
resampling is the episode. The 95% interval is a seeded percentile bootstrap over
episodes; the normal interval 1.96 s / sqrt(E) over episode accuracies is reported beside
it because papers use it.

With several training seeds, a method's accuracy is the mean over seeds; its episode
interval resamples episodes of the seed-averaged accuracy (how much the number would move
with other episodes), and the spread across seeds (standard deviation, min and max of the
per-seed accuracies) is reported separately: it says how much the number moves with another
training run, and it is often the larger of the two.

Two methods on the same task set and N are compared paired, episode by episode: the
difference of their accuracies with a bootstrap interval that resamples the same episodes
for both, and an exact McNemar test on one query per episode (see `mcnemar_exact`).
"""

from __future__ import annotations

import functools
import itertools
import math
from statistics import NormalDist

import numpy as np
import pandas as pd

from benchmark.config import StatsConfig

GROUP_COLUMNS = ["method", "task_set", "split", "protocol", "n_way", "k_shot"]
SUMMARY_COLUMNS = GROUP_COLUMNS + ["episodes", "queries", "accuracy", "ci_low", "ci_high",
                                   "ci_normal_low", "ci_normal_high",
                                   "seeds", "seed_std", "seed_min", "seed_max"]
TASK_COLUMNS = ["task_set", "split", "protocol", "n_way", "k_shot"]
PAIRED_COLUMNS = TASK_COLUMNS + ["method_a", "method_b", "episodes", "accuracy_a", "accuracy_b",
                                 "difference", "ci_low", "ci_high", "significant",
                                 "mcnemar_a_only", "mcnemar_b_only", "mcnemar_p"]


@functools.lru_cache(maxsize=8)
def bootstrap_indices(n_episodes: int, resamples: int, seed: int) -> np.ndarray:
    """Resampled episode indices (resamples, E). Depends only on (E, resamples, seed), so every
    method evaluated on the same episodes is resampled the same way: comparisons are paired.
    Drawn once per (E, resamples, seed) and kept (read-only)."""
    rng = np.random.default_rng([seed, n_episodes])
    indices = rng.integers(0, n_episodes, size=(resamples, n_episodes))
    indices.setflags(write=False)
    return indices


@functools.lru_cache(maxsize=8)
def bootstrap_counts(n_episodes: int, resamples: int, seed: int) -> np.ndarray:
    """(resamples, E): how many times each resample draws each episode, counted from
    `bootstrap_indices` (the same draws). A resample's sum is then `counts @ values`."""
    indices = bootstrap_indices(n_episodes, resamples, seed)
    rows = np.arange(resamples)[:, None] * n_episodes
    counts = np.bincount((indices + rows).ravel(), minlength=resamples * n_episodes)
    counts = counts.reshape(resamples, n_episodes).astype(np.float64)
    counts.setflags(write=False)
    return counts


def bootstrap_ci(values: np.ndarray, resamples: int, confidence: float, seed: int,
                 denominator: int = 1) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean of per-episode values `values / denominator`
    (see `bootstrap_cis`)."""
    return bootstrap_cis([values], [denominator], resamples, confidence, seed)[0]


def bootstrap_cis(numerators: list[np.ndarray], denominators: list[int], resamples: int, confidence: float,
                  seed: int) -> list[tuple[float, float]]:
    """The percentile bootstrap interval of the mean of each array of per-episode values
    `numerators[i] / denominators[i]`.

    An accuracy is a number of correct answers over a number of queries, so the harness passes
    integer numerators (see `common_denominator`): each resample's sum, `counts @ numerators`,
    is then a sum of integers, exact in floating point in any order (BLAS, threads, CPU), and
    its mean is one correctly rounded division. The intervals are the same on every machine, to
    the bit; and every array over the same E is resampled in one matrix product, not hundreds
    of gathers (a full report: 345 intervals in 0.05 s instead of 0.8 s).
    """
    tail = (1 - confidence) / 2 * 100
    intervals = [(float("nan"), float("nan"))] * len(numerators)
    by_length: dict[int, list[int]] = {}
    for position, values in enumerate(numerators):
        by_length.setdefault(len(values), []).append(position)
    for n_episodes, positions in by_length.items():
        if n_episodes == 0:
            continue
        stacked = np.stack([np.asarray(numerators[i], dtype=np.float64) for i in positions], axis=1)
        scale = n_episodes * np.array([denominators[i] for i in positions], dtype=np.float64)
        means = bootstrap_counts(n_episodes, resamples, seed) @ stacked / scale
        lows, highs = np.percentile(means, [tail, 100 - tail], axis=0)
        for position, low, high in zip(positions, lows, highs):
            intervals[position] = (float(low), float(high))
    return intervals


def common_denominator(correct: np.ndarray, size: np.ndarray) -> tuple[np.ndarray, int]:
    """Per-episode accuracies `correct / size` as integer numerators over one denominator (the
    least common multiple of the sizes; in a complete run every episode of a method has the
    same size, its queries times its seeds)."""
    correct, size = np.asarray(correct, dtype=np.int64), np.asarray(size, dtype=np.int64)
    denominator = math.lcm(*np.unique(size).tolist()) if len(size) else 1
    return correct * (denominator // size), denominator


def normal_ci(values: np.ndarray, confidence: float) -> tuple[float, float]:
    """mean +- z * s / sqrt(E): the interval most papers print."""
    values = np.asarray(values, dtype=np.float64)
    if len(values) < 2:
        return float("nan"), float("nan")
    z = NormalDist().inv_cdf(0.5 + confidence / 2)
    half = z * values.std(ddof=1) / np.sqrt(len(values))
    return float(values.mean() - half), float(values.mean() + half)


def group_numbers(records: pd.DataFrame, columns: list[str]) -> np.ndarray:
    """Each row's group over `columns`, numbered in the order groups first appear: what
    `records.groupby(columns, sort=False).ngroup()` gives, from the columns' integer codes in
    a third of its time (a full run has millions of rows)."""
    key, size = np.zeros(len(records), dtype=np.int64), 1
    for name in columns:
        codes = _integer_codes(records[name])
        low, width = (int(codes.min()), int(codes.max() - codes.min()) + 1) if len(codes) else (0, 1)
        if size * width >= 2 ** 62:  # numbers too far apart to share one integer key
            return records.groupby(columns, sort=False, observed=True).ngroup().to_numpy(np.int64)
        key, size = key * width + (codes - low), size * width
    return pd.factorize(key, sort=False)[0].astype(np.int64)


def _integer_codes(column: pd.Series) -> np.ndarray:
    """Integers equal where the column's values are: a category's code, an integer itself,
    else the value's number in order of appearance."""
    if isinstance(column.dtype, pd.CategoricalDtype):
        return column.cat.codes.to_numpy(np.int64)
    if pd.api.types.is_integer_dtype(column.dtype):
        return column.to_numpy(np.int64)
    return pd.factorize(column, sort=False)[0].astype(np.int64)


def _counted(records: pd.DataFrame, columns: list[str], width: int, within: np.ndarray):
    """(the groups over `columns` as a frame, a key per row: group number x width + `within`)."""
    numbers = group_numbers(records, columns)
    first_rows = pd.Series(numbers).drop_duplicates().index.to_numpy()  # group g's first row is first_rows[g]
    groups = records[columns].iloc[first_rows].reset_index(drop=True)
    return groups, numbers * width + within


def episode_accuracy(records: pd.DataFrame) -> pd.DataFrame:
    """Per episode, with the group columns: `mean` correctness over its queries and the
    method's seeds, `correct` answers and `size` (queries x seeds); groups in the order they
    first appear, episodes ascending within each.

    Counted with one integer key per (group, episode) and `np.bincount`: a full run has millions
    of records, and grouping them by seven columns took a second.
    """
    episodes = records["episode"].to_numpy(dtype=np.int64)
    width = int(episodes.max()) + 1 if len(episodes) else 1
    groups, key = _counted(records, GROUP_COLUMNS, width, episodes)
    sums = np.bincount(key, weights=records["correct"].to_numpy(dtype=np.float64))
    sizes = np.bincount(key)
    present = np.flatnonzero(sizes)
    return (groups.iloc[present // width].reset_index(drop=True)
            .assign(episode=present % width, mean=sums[present] / sizes[present],
                    correct=sums[present].astype(np.int64), size=sizes[present]))


def seed_accuracy(records: pd.DataFrame) -> pd.DataFrame:
    """Accuracy and queries of each training seed: one row per (group, seed), in the order they
    first appear."""
    groups, key = _counted(records, GROUP_COLUMNS + ["seed"], 1, np.zeros(len(records), dtype=np.int64))
    sums = np.bincount(key, weights=records["correct"].to_numpy(dtype=np.float64), minlength=len(groups))
    sizes = np.bincount(key, minlength=len(groups))
    return groups.assign(accuracy=sums / np.maximum(sizes, 1), queries=sizes)


def summarize(records: pd.DataFrame, stats: StatsConfig = StatsConfig(),
              per_episode: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per (method, task set, split, protocol, N, k): accuracy, its intervals, seed spread.

    `accuracy` is the mean over all queries of all seeds (equal counts per seed: the mean of
    the per-seed accuracies); `queries` counts the distinct queries, not queries x seeds.
    `per_episode`: `episode_accuracy(records)`, when the caller has it already.
    """
    per_episode = episode_accuracy(records) if per_episode is None else per_episode
    per_seed = {key: group for key, group in seed_accuracy(records).groupby(GROUP_COLUMNS, sort=False, observed=True)}
    rows, fractions = [], []
    for key, group in per_episode.groupby(GROUP_COLUMNS, sort=False, observed=True):
        values = group["mean"].to_numpy()
        # With equal queries per episode the mean of episode means is the mean over queries.
        accuracy = float(np.average(values, weights=group["size"].to_numpy()))
        normal_low, normal_high = normal_ci(values, stats.confidence)
        seeds = per_seed[key]["accuracy"].to_numpy()
        # A seed's records of a task set are written whole (one chunk), so every seed has all of
        # its distinct queries, once: their number is any seed's count.
        queries = int(per_seed[key]["queries"].max())
        rows.append(dict(zip(GROUP_COLUMNS, key), episodes=len(values),
                         queries=queries, accuracy=accuracy, ci_low=np.nan,
                         ci_high=np.nan, ci_normal_low=normal_low, ci_normal_high=normal_high,
                         seeds=len(seeds), seed_std=float(seeds.std(ddof=1)) if len(seeds) > 1 else np.nan,
                         seed_min=float(seeds.min()), seed_max=float(seeds.max())))
        fractions.append(common_denominator(group["correct"].to_numpy(), group["size"].to_numpy()))
    intervals = bootstrap_cis(*_unzipped(fractions), stats.resamples, stats.confidence, stats.seed)
    for row, (low, high) in zip(rows, intervals):
        row.update(ci_low=low, ci_high=high)
    summary = pd.DataFrame(rows, columns=SUMMARY_COLUMNS)
    return summary.sort_values(["task_set", "n_way", "method"], kind="stable").reset_index(drop=True)


def mcnemar_exact(a_only: int, b_only: int) -> float:
    """Two-sided exact McNemar p-value from the discordant pairs of two paired binary outcomes.

    `a_only`: items A got right and B wrong; `b_only`: the reverse. Under "A and B are equally
    accurate" each discordant item is a fair coin, so the p-value is twice the binomial tail
    P(X <= min(a_only, b_only)), X ~ Binomial(a_only + b_only, 1/2), capped at 1. Computed in
    exact integer arithmetic. The test assumes the items are independent: use one query per
    episode, never all queries of an episode (they share their supports).
    """
    if a_only < 0 or b_only < 0:
        raise ValueError(f"discordant counts must be >= 0, got {a_only} and {b_only}")
    n = a_only + b_only
    if n == 0:
        return 1.0
    term, tail = 1, 0  # term = C(n, i), summed incrementally: exact and O(min(a, b)) steps
    for i in range(min(a_only, b_only) + 1):
        tail += term
        term = term * (n - i) // (i + 1)
    return min(1.0, 2 * tail / 2 ** n)


def paired_differences(records: pd.DataFrame, stats: StatsConfig = StatsConfig(),
                       order: list[str] | None = None, per_episode: pd.DataFrame | None = None) -> pd.DataFrame:
    """Every pair of methods on the same (task set, N): accuracy difference A - B, paired.

    A is the method listed earlier in `order` (the run's --methods), B the later one, so a new
    method listed first shows its gain as a positive difference; methods not in `order` come
    after, in the order of the records. The interval is a percentile bootstrap of the mean
    per-episode difference: resampling the differences resamples the same episodes for both
    methods (and they are the same indices `summarize` uses for each method alone).
    `significant`: the interval excludes 0. The McNemar test uses the first query of each
    episode (query 0) of each method's lowest seed, so that its pairs are independent; its
    p-value is an extra check for episodes of one query per class, where the bootstrap and
    McNemar look at nearly the same data. `per_episode`: as for `summarize`.
    """
    per_episode = episode_accuracy(records) if per_episode is None else per_episode
    first = _first_query_outcomes(records)
    rows, fractions = [], []
    for key, group in per_episode.groupby(TASK_COLUMNS, sort=False, observed=True):
        table, correct, size = (_by_episode(group, column) for column in ("mean", "correct", "size"))
        outcomes = first.get(key, {})
        for method_a, method_b in itertools.combinations(_ordered(list(table), order or []), 2):
            both = ~np.isnan(table[method_a]) & ~np.isnan(table[method_b])  # the episodes both have
            a, b = table[method_a][both], table[method_b][both]
            differences = a - b
            fractions.append(_difference_fractions(correct[method_a][both], size[method_a][both],
                                                   correct[method_b][both], size[method_b][both]))
            a_only, b_only = _discordant(outcomes.get(method_a), outcomes.get(method_b))
            rows.append(dict(zip(TASK_COLUMNS, key), method_a=method_a, method_b=method_b,
                             episodes=int(both.sum()), accuracy_a=float(a.mean()), accuracy_b=float(b.mean()),
                             difference=float(differences.mean()) if len(a) else np.nan,
                             mcnemar_a_only=a_only, mcnemar_b_only=b_only,
                             mcnemar_p=mcnemar_exact(a_only, b_only)))
    intervals = bootstrap_cis(*_unzipped(fractions), stats.resamples, stats.confidence, stats.seed)
    for row, (low, high) in zip(rows, intervals):
        row.update(ci_low=low, ci_high=high, significant=bool(low > 0 or high < 0))
    return pd.DataFrame(rows, columns=PAIRED_COLUMNS)


def _difference_fractions(correct_a, size_a, correct_b, size_b) -> tuple[np.ndarray, int]:
    """Per-episode differences of accuracy a - b as integer numerators over one denominator."""
    (a, denominator_a), (b, denominator_b) = common_denominator(correct_a, size_a), common_denominator(correct_b, size_b)
    denominator = math.lcm(denominator_a, denominator_b)
    return a * (denominator // denominator_a) - b * (denominator // denominator_b), denominator


def _unzipped(fractions: list[tuple[np.ndarray, int]]) -> tuple[list[np.ndarray], list[int]]:
    return [numerators for numerators, _ in fractions], [denominator for _, denominator in fractions]


def _by_episode(group: pd.DataFrame, column: str) -> dict[str, np.ndarray]:
    """method -> `column` by episode number (NaN for an episode the method does not have)."""
    size = int(group["episode"].max()) + 1
    table = {}
    for method, rows in group.groupby("method", sort=False, observed=True):
        values = np.full(size, np.nan)
        values[rows["episode"].to_numpy()] = rows[column].to_numpy()
        table[str(method)] = values
    return table


def _discordant(a: np.ndarray | None, b: np.ndarray | None) -> tuple[int, int]:
    """(episodes only A got right, episodes only B got right) among those both have."""
    if a is None or b is None:
        return 0, 0
    both = ~np.isnan(a) & ~np.isnan(b)
    a, b = a[both].astype(bool), b[both].astype(bool)
    return int((a & ~b).sum()), int((~a & b).sum())


def _ordered(methods: list[str], order: list[str]) -> list[str]:
    """`methods` in the order of `order`, those it does not name after them, as they came."""
    return sorted(methods, key=lambda name: (order.index(name) if name in order else len(order),
                                             methods.index(name)))


def _first_query_outcomes(records: pd.DataFrame) -> dict[tuple, dict[str, np.ndarray]]:
    """Per (task set, N): method -> correctness of query 0 of each episode, of its lowest seed."""
    first = records[records["query"] == 0]
    lowest = first.groupby(TASK_COLUMNS + ["method"], observed=True)["seed"].transform("min")
    first = first[first["seed"] == lowest]
    return {key: _by_episode(group, "correct") for key, group in first.groupby(TASK_COLUMNS, sort=False, observed=True)}

"""The two kinds of job a run is made of, the same wherever they run (benchmark/executors/):

    fit      one (method, training seed, training split): the method's `fit`, timed, then
             `probe`: one episode with more queries than ways, to catch transposed scores
    predict  one fitted method on one task set: its `predict`, checked by `checked_scores`

A `FitJob` is what the runner plans; `fit` and `predict` are what an executor calls, in this
process or in a Ray worker. They raise MethodError when the method's own code fails, so that
each executor reports a method's failure the same way.
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from benchmark.api import EpisodeBatch, FitContext, SharedComponents, checked_scores
from benchmark.checkpoints import CheckpointStore
from benchmark import run_manifest
from benchmark.errors import BenchmarkError, ConfigError, MethodError
from benchmark.shipped_weights import ShippedWeights
from tasks.sets import TaskSet, data_split


@dataclass
class FitJob:
    """One fit the run still needs, and the task sets it then predicts."""

    name: str  # the method's registered name
    method: object  # a fresh instance, hyperparameters only
    seed: int
    training_split: str
    label: str  # how messages and run.json's failures name this fit (run_manifest.fit_label)
    task_sets: list[TaskSet]
    device: str  # where the method runs: the run's device if it declares `uses_gpu`, else "cpu"

    @property
    def timing_key(self) -> str:
        """Where run.json keeps this fit's times: "SEED/TRAINING_SPLIT", e.g. "0/background"."""
        return f"{self.seed}/{self.training_split}"


def resolve_device(requested: str, has_gpu: bool | None = None, lacking: str = "no CUDA GPU is available") -> str:
    """The device a run uses: "auto" is CUDA where there is a GPU (`has_gpu`; default: this
    process sees one); "cuda" without one is refused, saying what lacks it."""
    has_gpu = torch.cuda.is_available() if has_gpu is None else has_gpu
    if requested == "auto":
        return "cuda" if has_gpu else "cpu"
    if requested == "cuda" and not has_gpu:
        raise ConfigError(f"device 'cuda' was asked for but {lacking}: use --device cpu")
    return requested


def device_for(method, run_device: str) -> str:
    """The run's device for a method that declares `uses_gpu`; the CPU for any other."""
    return run_device if method.capabilities.uses_gpu else "cpu"


@dataclass
class FitSettings:
    """How a fit is run: the same for every fit of a run."""

    checkpoint_dir: Path | None  # None: no checkpoint cache
    shipped_weights_dir: Path | None  # None: never use shipped weights
    retrain: bool = False
    progress: bool = False
    log: object = field(default=print, repr=False)


@dataclass
class Fitted:
    method: object
    fit_seconds: float  # without the shared components it built, timed apart
    components: dict[str, float]  # shared components this fit built -> seconds
    weights: str | None  # "trained", "cached" or "shipped" for a trained method

    def timing(self, predict_seconds: dict[str, float], peak_rss_mb: float) -> dict:
        """The fit's entry in run.json's method timing; `predict_seconds`: task-set key
        ("cross/20way/1shot") -> seconds its prediction job took (kept, for perf/cluster_cost.py)."""
        timing = {"fit_seconds": round(self.fit_seconds, 3),
                  "predict_seconds": round(sum(predict_seconds.values()), 3),
                  "predict_seconds_per_task_set": {key: round(seconds, 3) for key, seconds in predict_seconds.items()},
                  "peak_rss_mb": round(peak_rss_mb, 1)}
        return dict(timing, weights=self.weights) if self.weights else timing


def fit(method, seed: int, training_split: str, data, device: str, settings: FitSettings,
        components: SharedComponents) -> Fitted:
    """Fit `method` on the split `training_split` of `data`; MethodError when its code fails."""
    context = FitContext(
        device=device, seed=seed, progress=settings.progress, retrain=settings.retrain, log=settings.log,
        checkpoints=CheckpointStore(settings.checkpoint_dir, log=settings.log)
        if settings.checkpoint_dir is not None else None,
        shipped_weights=ShippedWeights(settings.shipped_weights_dir, log=settings.log)
        if settings.shipped_weights_dir is not None else None,
        components=components, training_split=training_split)
    built_before = set(components.seconds)
    # Layer initialisation in plugins often uses torch's global generator: seeding it here
    # makes such methods reproducible and independent of the order (and place) methods run in.
    torch.manual_seed(seed)
    started = time.perf_counter()
    try:
        fitted = method.fit(data_split(data, training_split), context)
    except BenchmarkError:
        raise
    except Exception as error:
        raise MethodError(f"fit raised {type(error).__name__}: {error}") from error
    if fitted is not method:
        raise MethodError("fit must return self")
    built = {key: seconds for key, seconds in components.seconds.items() if key not in built_before}
    weights = (getattr(method, "training_info_", None) or {}).get("weights")
    return Fitted(method, time.perf_counter() - started - sum(built.values()), built, weights)


def probe(method, task_set: TaskSet, data) -> None:
    """Score one episode of `task_set` with more queries than ways, on a copy of the fitted
    method, before its first prediction: MethodError if the scores come back transposed.

    Every default task set has as many queries as ways (one query per class), so scores shaped
    (episodes, ways, queries) would pass the shape check and run at chance to the end. The copy
    keeps whatever the method caches or draws out of the records' way.
    """
    batch = task_set.batch(data)
    extra = 1 if batch.n_queries + 1 != batch.n_way else 2  # queries must not equal ways
    support = batch.support[:1]
    query = np.concatenate([batch.query[:1], np.repeat(support[:, :1, 0], extra, axis=1)], axis=1)
    # Only the episode's own images, under a name of their own: a method that caches per image
    # pool (1-NN's distance table) then works on a few dozen images, not the split.
    ids = np.unique(np.concatenate([support.ravel(), query.ravel()]))
    episode = EpisodeBatch(np.asarray(batch.images[ids]), np.searchsorted(ids, support),
                           np.searchsorted(ids, query), f"{batch.images_key}:probe")
    try:
        copied = copy.deepcopy(method)
    except Exception:  # a method that cannot be copied is not probed: the shape check still runs
        return
    try:
        scores = copied.predict(episode)
    except BenchmarkError:
        raise
    except Exception as error:
        raise MethodError(f"predict raised {type(error).__name__}: {error} (on a probe episode of "
                          f"{episode.n_queries} queries and {episode.n_way} ways)") from error
    if np.shape(scores) == (1, episode.n_way, episode.n_queries):
        raise MethodError(f"predict returned scores shaped (episodes, ways, queries) {np.shape(scores)} on a "
                          f"probe episode of {episode.n_queries} queries and {episode.n_way} ways: transposed; "
                          f"it must return (episodes, queries, ways) {episode.score_shape}")
    try:
        checked_scores(scores, episode)
    except MethodError as error:
        raise MethodError(f"{error}, on a probe episode of {episode.n_queries} queries scored after fit") from None


def predict(method, task_set: TaskSet, data) -> tuple[np.ndarray, float]:
    """A fitted method's checked scores on one task set, and the seconds they took."""
    started = time.perf_counter()
    batch = task_set.batch(data)
    try:
        scores = method.predict(batch)
    except BenchmarkError:
        raise
    except Exception as error:
        raise MethodError(f"predict raised {type(error).__name__}: {error}") from error
    return checked_scores(scores, batch), time.perf_counter() - started


def task_set_key(task_set: TaskSet) -> str:
    """'cross/20way/1shot': how run.json names one (task set, N, k)."""
    return run_manifest.task_set_key(task_set.name, task_set.episodes.n_way, task_set.episodes.k_shot)


def failure_reason(error: Exception) -> str:
    """How run.json and the terminal state a failed job: a method's error as it said it; any
    other exception (a bug in the method's own code outside fit/predict) with its type."""
    return str(error) if isinstance(error, BenchmarkError) else f"{type(error).__name__}: {error}"

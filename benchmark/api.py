"""The method contract: what the runner hands a method, and what it expects back.

A method is constructed with its hyperparameters only, learns from a training split in
`fit`, and scores episodes in `predict`. It never sees the query labels, and `fit` never
sees test images: the runner holds both and hands each part only what it may use. Scores
are checked by one function, `checked_scores`, wherever they come back (runner and contract).
"""

from __future__ import annotations

import abc
import inspect
import time
import zlib
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar

import numpy as np
import torch

from benchmark.errors import MethodError


@dataclass(frozen=True)
class Capabilities:
    """What a method declares about itself. Every field is read: `needs_training` and
    `uses_gpu` by the runner, `cpus` by the Ray executor, `deterministic` by the contract check
    and the CI regression, `transductive` by the contract check and the report."""

    # Trained once per training seed (`--seeds`); run on `only_trained` task sets.
    needs_training: bool = False
    # Same seed, same scores, on the same machine and device: the contract checks it, and the
    # CI regression requires such an untrained method to match its golden numbers exactly.
    deterministic: bool = True
    # Fitted and run on the run's device (`--device cuda`); otherwise always on the CPU. On a
    # cluster (`--executor ray`) each of its jobs then asks for one GPU, where the cluster has any.
    uses_gpu: bool = False
    # The CPUs one of its jobs takes on a cluster (`--executor ray`), and so its torch threads
    # there: jobs sharing a node never ask for more threads than the node has cores.
    cpus: int = 1
    # Scores a query using the episode's other queries too (TIM, BD-CSPN, batch statistics at
    # test time). An inductive method (False) must score each query the same alone, with the
    # others, or with them shuffled (the contract's `inductive` rule); tables and figures mark
    # transductive methods, whose accuracy is not comparable with inductive ones'.
    transductive: bool = False


@dataclass(frozen=True)
class EpisodeBatch:
    """All episodes of one (task set, N): ids into `images`, never the query labels."""

    # (n_images, 105, 105) uint8, 1 = ink, read-only; indexed by image id. For rotated classes
    # (the Vinyals split) a view that rotates the images it is indexed for: index it by image
    # ids (an array of them, or a slice), or take np.asarray of it for the whole array.
    images: np.ndarray
    support: np.ndarray  # (E, N, k) image ids, class j of episode e is support[e, j]
    query: np.ndarray  # (E, Q) image ids
    images_key: str  # names `images` (the split's sha256), so a method may cache its embeddings

    def __post_init__(self):
        for array in (self.images, self.support, self.query):
            if isinstance(array, np.ndarray):
                array.setflags(write=False)

    @property
    def n_episodes(self) -> int:
        return self.support.shape[0]

    @property
    def n_way(self) -> int:
        return self.support.shape[1]

    @property
    def k_shot(self) -> int:
        return self.support.shape[2]

    @property
    def n_queries(self) -> int:
        return self.query.shape[1]

    @property
    def score_shape(self) -> tuple[int, int, int]:
        return (self.n_episodes, self.n_queries, self.n_way)

    def fingerprint(self) -> int:
        """A platform-independent number derived from the ids, for seeding per-batch randomness."""
        ids = np.concatenate([self.support.reshape(-1), self.query.reshape(-1)]).astype("<i8")
        return zlib.crc32(ids.tobytes()) ^ zlib.crc32(str(self.score_shape).encode())


def checked_scores(scores, batch: EpisodeBatch) -> np.ndarray:
    """`predict`'s return value as a numpy array, or MethodError saying what is wrong with it."""
    if isinstance(scores, torch.Tensor):
        scores = scores.detach().cpu().numpy()
    scores = np.asarray(scores)
    where = f"on {batch.n_way}-way {batch.k_shot}-shot episodes"
    if scores.shape != batch.score_shape:
        raise MethodError(f"predict returned shape {scores.shape} {where}, expected {batch.score_shape} "
                          f"(episodes, queries, ways)")
    if not np.issubdtype(scores.dtype, np.number) or not np.isfinite(scores).all():
        raise MethodError(f"predict returned NaN, infinite or non-numeric scores {where}")
    return scores


class SharedComponents:
    """Parts several methods of a run share, such as one trained backbone under several heads:
    each is built once per (key, training seed, training split) and its time is kept apart
    from the fits."""

    def __init__(self):
        self._built: dict[tuple[str, int, str], Any] = {}
        self.seconds: dict[str, float] = {}  # "key (seed S)" or "key (seed S, SPLIT)" -> seconds its build took

    def get(self, key: str, seed: int, build: Callable[[], Any], training_split: str = "background") -> Any:
        if (key, seed, training_split) not in self._built:
            started = time.perf_counter()
            self._built[(key, seed, training_split)] = build()
            where = "" if training_split == "background" else f", {training_split}"
            self.seconds[f"{key} (seed {seed}{where})"] = time.perf_counter() - started
        return self._built[(key, seed, training_split)]


@dataclass
class FitContext:
    """What `fit` may use besides the training split."""

    device: str = "cpu"
    seed: int = 0
    progress: bool = True  # show progress bars
    checkpoints: Any = None  # a benchmark.checkpoints.CheckpointStore, or None for no caching
    retrain: bool = False  # ignore cached checkpoints and shipped weights
    shipped_weights: Any = None  # a benchmark.shipped_weights.ShippedWeights (weights/), or None
    log: Any = field(default=print, repr=False)  # one-line messages for the user
    # Called by the training loop after each validation, as on_validation(step, accuracy):
    # to watch training (perf/), never to change it.
    on_validation: Callable[[int, float], None] | None = field(default=None, repr=False)
    # Set by the runner: what the run's methods share (see `shared`), and the name of the split
    # being fitted on (parts built on one training split are never handed to a fit on another).
    components: SharedComponents | None = field(default=None, repr=False)
    training_split: str = "background"

    def generator(self) -> np.random.Generator:
        return np.random.default_rng(self.seed)

    def shared(self, key: str, build: Callable[[], Any]) -> Any:
        """A part that other methods of the run may share, built by `build()` the first time a
        method asks for `key` with this training seed and split, and handed to the others as it is (so
        it must not be changed in place). run.json reports its time apart from the fits.
        Name the key after everything that shapes the part (e.g. "pixel_pca-64")."""
        if self.components is None:  # outside a run (contract checks, perf/): nothing to share with
            return build()
        return self.components.get(key, self.seed, build, self.training_split)


def hyperparameters(cls: type) -> dict[str, inspect.Parameter]:
    """A method class's hyperparameters: the named arguments of its `__init__`, and, when that
    passes `**kwargs` on to its parent's, the parent's too (the nearest class's wins), so a
    family of methods can share a base class's hyperparameters without repeating them:

        class Base(EmbeddingMethod):
            def __init__(self, size: int = 21): ...
        class Child(Base):
            def __init__(self, scale: float = 1.0, **kwargs):   # hyperparameters: scale, size
                super().__init__(**kwargs)
                self.scale = scale
    """
    found = {}
    for klass in cls.__mro__:
        init = vars(klass).get("__init__")
        if init is None or klass is object:
            continue
        try:  # annotations as types (`from __future__ import annotations` leaves them strings)
            parameters = inspect.signature(init, eval_str=True).parameters
        except Exception:  # a plugin's annotations may not resolve: keep them as written
            parameters = inspect.signature(init).parameters
        for name, parameter in parameters.items():
            if name != "self" and parameter.kind in (parameter.POSITIONAL_OR_KEYWORD, parameter.KEYWORD_ONLY):
                found.setdefault(name, parameter)
        if not any(parameter.kind is parameter.VAR_KEYWORD for parameter in parameters.values()):
            break
    return found


class Method(abc.ABC):
    """Base class of every method. Subclasses are registered with `@register_method(name)`.

    Like scikit-learn estimators: `__init__` stores its arguments under the same names and
    does nothing else; `fit` returns self; what `fit` learns ends in `_`, and `predict`
    starts with `self.check_is_fitted(...)` naming what it needs.
    """

    name: ClassVar[str] = ""  # set by @register_method
    capabilities: ClassVar[Capabilities] = Capabilities()

    def get_params(self) -> dict[str, Any]:
        """The hyperparameters (`hyperparameters(type(self))`), read back from the attributes of
        the same name."""
        return {name: getattr(self, name) for name in hyperparameters(type(self))}

    @classmethod
    def summary(cls) -> str:
        """One line for `--list-methods`: the first line of the class docstring."""
        doc = inspect.getdoc(cls) or ""
        return doc.splitlines()[0] if doc else ""

    @abc.abstractmethod
    def fit(self, training_split, context: FitContext) -> Method:
        """Learn from the training split (an `OmniglotSplit`); return self."""

    @abc.abstractmethod
    def predict(self, batch: EpisodeBatch) -> np.ndarray:
        """Scores (E, Q, N): higher means the query more likely belongs to that class."""

    def check_is_fitted(self, *attributes: str) -> None:
        """Raise MethodError unless `fit` has set every attribute named (at least one)."""
        if not attributes:
            raise TypeError("check_is_fitted needs the names of the attributes fit sets, e.g. 'network_'")
        missing = [name for name in attributes if not hasattr(self, name)]
        if missing:
            raise MethodError(f"method {self.name or type(self).__name__!r}: predict called before fit "
                              f"({', '.join(missing)} not set)")


# Small chunks stay in cache and reuse memory: 3x faster than 256 MiB ones for 1-NN.
SCORE_CHUNK_BYTES = 8 * 2**20
# Images embedded per call, by the device the features come back on. A conv net on a CPU is
# fastest in small batches that stay in cache (perf/embed_batch.py: 0.13-0.15 ms an image at
# 64-128, 0.45 at 2048); a GPU wants large ones.
EMBED_BATCH_SIZES = {"cpu": 64, "cuda": 2048}


class EmbeddingCache:
    """Features by image id for one images array (named by its key), filled as batches ask."""

    def __init__(self):
        self.key: str | None = None
        self.table: torch.Tensor | None = None
        self.done: np.ndarray | None = None

    def features_for(self, batch: EpisodeBatch, embed, batch_sizes: dict[str, int]) -> torch.Tensor:
        """The table, with a row for every image the batch uses; only new images are embedded,
        `batch_sizes[device type]` at a time (the first call, before the device is known, takes
        the smallest).

        Rows of images no batch has used stay zero.
        """
        if self.key != batch.images_key:
            self.key, self.table, self.done = batch.images_key, None, np.zeros(len(batch.images), dtype=bool)
        wanted = np.unique(np.concatenate([batch.support.reshape(-1), batch.query.reshape(-1)]))
        missing = wanted[~self.done[wanted]]
        start = 0
        while start < len(missing):
            size = batch_sizes.get(self.table.device.type, 64) if self.table is not None else min(batch_sizes.values())
            ids, start = missing[start:start + size], start + size
            with torch.no_grad():
                features = embed(batch.images[ids]).detach()
            if self.table is None:
                self.table = features.new_zeros((len(batch.images), features.shape[1]))
            self.table[torch.as_tensor(ids, device=features.device)] = features
            self.done[ids] = True
        return self.table


def score_by_embedding(batch: EpisodeBatch, embed: Callable, score: Callable, cache: EmbeddingCache | None = None,
                       embed_batch_sizes: dict[str, int] = EMBED_BATCH_SIZES,
                       score_chunk_bytes: int = SCORE_CHUNK_BYTES, score_needs_grad: bool = False) -> np.ndarray:
    """Scores (E, Q, N) of a batch from `embed(images) -> (n, d)` and
    `score(query (e, Q, d), support (e, N, k, d)) -> (e, Q, N)`.

    Every image the batch uses is embedded once (into `cache`, which later batches over the
    same images reuse; a fresh one when None), then episodes are gathered by index and scored
    in chunks of episodes that bound memory. Embedding runs under `torch.no_grad()`, and so
    does scoring unless `score_needs_grad` (then the features still carry no gradient).
    """
    features = (cache or EmbeddingCache()).features_for(batch, embed, embed_batch_sizes)
    # Copies: torch does not take read-only arrays, and the ids are small.
    support = torch.tensor(batch.support, device=features.device)
    query = torch.tensor(batch.query, device=features.device)
    per_episode = (batch.n_queries + batch.n_way * batch.k_shot) * features[0].nbytes
    chunk = max(1, score_chunk_bytes // max(per_episode, 1))
    # One output array filled in place: chunk results kept alive between the temporaries of
    # later chunks would fragment the heap and keep its memory from being reused.
    scores = np.zeros(batch.score_shape, np.float32)
    with torch.set_grad_enabled(score_needs_grad):
        for start in range(0, batch.n_episodes, chunk):
            part = slice(start, start + chunk)
            scores[part] = score(features[query[part]], features[support[part]]).detach().float().cpu().numpy()
    return scores


class EmbeddingMethod(Method):
    """A method that maps each image to features and scores queries against supports.

    Subclasses write `embed(images)` and `score(query, support)`; `predict` is written once
    (`score_by_embedding`). `fit` ends with `self.reset_embeddings()`: it starts an empty
    cache of features, so features made with earlier weights are never reused, and
    `predict` refuses to run until it was called.

    `embed` and `score` run under `torch.no_grad()` (no autograd graph: less memory, faster).
    A method that trains something for each episode inside `score` (fine-tuning a head on the
    supports, say) sets `score_needs_grad = True`: `score` then runs with gradients enabled,
    and gets features that carry none (its own parameters need `requires_grad_()`).
    """

    score_chunk_bytes: ClassVar[int] = SCORE_CHUNK_BYTES
    embed_batch_sizes: ClassVar[dict[str, int]] = EMBED_BATCH_SIZES
    score_needs_grad: ClassVar[bool] = False

    @abc.abstractmethod
    def embed(self, images: np.ndarray) -> torch.Tensor:
        """(n, 105, 105) uint8 images, 1 = ink -> (n, d) float features."""

    @abc.abstractmethod
    def score(self, query: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
        """query (e, Q, d), support (e, N, k, d) -> scores (e, Q, N)."""

    def reset_embeddings(self) -> None:
        """Start an empty feature cache (`embeddings_`): call it at the end of fit."""
        self.embeddings_ = EmbeddingCache()

    def predict(self, batch: EpisodeBatch) -> np.ndarray:
        self.check_is_fitted("embeddings_")
        return score_by_embedding(batch, self.embed, self.score, self.embeddings_, self.embed_batch_sizes,
                                  self.score_chunk_bytes, self.score_needs_grad)

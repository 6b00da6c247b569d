"""The method contract: what the runner hands a method, and what it expects back.

A method is constructed with its hyperparameters only, learns from the background split in
`fit`, and scores episodes in `predict`. It never sees the query labels, and `fit` never
sees evaluation images: the runner holds both and hands each part only what it may use.
"""

from __future__ import annotations

import abc
import functools
import inspect
import zlib
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch

from benchmark.errors import MethodError


@dataclass(frozen=True)
class Capabilities:
    needs_training: bool = False
    uses_gpu: bool = False
    # Same seed, same scores, on the same machine and device.
    deterministic: bool = True


@dataclass(frozen=True)
class EpisodeBatch:
    """All episodes of one (task set, N): ids into `images`, never the query labels."""

    images: np.ndarray  # (n_images, 105, 105) uint8, 1 = ink, read-only; indexed by image id
    support: np.ndarray  # (E, N, k) image ids, class j of episode e is support[e, j]
    query: np.ndarray  # (E, Q) image ids
    images_key: str  # names `images` (the split's sha256), so a method may cache its embeddings

    def __post_init__(self):
        for array in (self.images, self.support, self.query):
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


@dataclass
class FitContext:
    """What `fit` may use besides the background split."""

    device: str = "cpu"
    seed: int = 0
    progress: bool = True  # show progress bars
    checkpoints: Any = None  # a benchmark.checkpoints.CheckpointStore, or None for no caching
    retrain: bool = False  # ignore cached checkpoints
    log: Any = field(default=print, repr=False)  # one-line messages for the user

    def generator(self) -> np.random.Generator:
        return np.random.default_rng(self.seed)


class Method(abc.ABC):
    """Base class of every method. Subclasses are registered with `@register_method(name)`.

    Like scikit-learn estimators: `__init__` stores its arguments under the same names and
    does nothing else; `fit` returns self; what `fit` learns ends in `_`.
    """

    name: ClassVar[str] = ""  # set by @register_method
    capabilities: ClassVar[Capabilities] = Capabilities()

    def get_params(self) -> dict[str, Any]:
        """The constructor arguments, read back from the attributes of the same name."""
        signature = inspect.signature(type(self).__init__)
        return {p: getattr(self, p) for p in signature.parameters
                if p != "self" and signature.parameters[p].kind not in (inspect.Parameter.VAR_POSITIONAL,
                                                                         inspect.Parameter.VAR_KEYWORD)}

    @classmethod
    def summary(cls) -> str:
        """One line for `--list-methods`: the first line of the class docstring."""
        doc = inspect.getdoc(cls) or ""
        return doc.splitlines()[0] if doc else ""

    @abc.abstractmethod
    def fit(self, background, context: FitContext) -> Method:
        """Learn from the background split (an `OmniglotSplit`); return self."""

    @abc.abstractmethod
    def predict(self, batch: EpisodeBatch) -> np.ndarray:
        """Scores (E, Q, N): higher means the query more likely belongs to that class."""

    def check_is_fitted(self) -> None:
        fitted = [k for k in vars(self) if k.endswith("_") and not k.startswith("_")]
        if not fitted:
            raise MethodError(f"method {self.name or type(self).__name__!r}: predict called before fit")


class EmbeddingMethod(Method):
    """A method that maps each image to features and scores queries against supports.

    `predict` is written once here: every image the batch uses is embedded once (and kept,
    so later batches over the same images reuse it), then episodes are gathered by index
    and scored in chunks of episodes that bound memory.
    """

    # Small chunks stay in cache and reuse memory: 3x faster than 256 MiB ones for 1-NN.
    score_chunk_bytes: ClassVar[int] = 8 * 2**20
    embed_batch_size: ClassVar[int] = 2048

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        # Embeddings made with earlier weights are stale once fit runs again.
        if "fit" in cls.__dict__:
            fit = cls.__dict__["fit"]

            @functools.wraps(fit)
            def fit_then_forget_embeddings(self, *args, **kwargs):
                self._embedding_cache = None
                return fit(self, *args, **kwargs)

            cls.fit = fit_then_forget_embeddings

    @abc.abstractmethod
    def embed(self, images: np.ndarray) -> torch.Tensor:
        """(n, 105, 105) uint8 images, 1 = ink -> (n, d) float features."""

    @abc.abstractmethod
    def score(self, query: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
        """query (e, Q, d), support (e, N, k, d) -> scores (e, Q, N)."""

    def predict(self, batch: EpisodeBatch) -> np.ndarray:
        self.check_is_fitted()
        features = self._features_for(batch)
        # Copies: torch does not take read-only arrays, and the ids are small.
        support = torch.tensor(batch.support, device=features.device)
        query = torch.tensor(batch.query, device=features.device)
        per_episode = (batch.n_queries + batch.n_way * batch.k_shot) * features[0].nbytes
        chunk = max(1, self.score_chunk_bytes // max(per_episode, 1))
        # One output array filled in place: chunk results kept alive between the temporaries
        # of later chunks would fragment the heap and keep its memory from being reused.
        scores = np.zeros(batch.score_shape, np.float32)
        with torch.no_grad():
            for start in range(0, batch.n_episodes, chunk):
                part = slice(start, start + chunk)
                scores[part] = self.score(features[query[part]], features[support[part]]).float().cpu().numpy()
        return scores

    def _features_for(self, batch: EpisodeBatch) -> torch.Tensor:
        """A table of features by image id, filled for every image the batch uses.

        Only images not embedded before are embedded; rows of unused images stay zero.
        """
        cache = getattr(self, "_embedding_cache", None)
        if cache is None or cache["key"] != batch.images_key:
            cache = self._embedding_cache = {"key": batch.images_key, "table": None,
                                             "done": np.zeros(len(batch.images), dtype=bool)}
        wanted = np.unique(np.concatenate([batch.support.reshape(-1), batch.query.reshape(-1)]))
        missing = wanted[~cache["done"][wanted]]
        for start in range(0, len(missing), self.embed_batch_size):
            ids = missing[start:start + self.embed_batch_size]
            with torch.no_grad():
                features = self.embed(batch.images[ids]).detach()
            if cache["table"] is None:
                cache["table"] = features.new_zeros((len(batch.images), features.shape[1]))
            cache["table"][torch.as_tensor(ids, device=features.device)] = features
            cache["done"][ids] = True
        return cache["table"]

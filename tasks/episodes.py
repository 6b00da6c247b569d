"""Episode sets: seeded N-way k-shot tasks over one Omniglot split, and their frozen files.

`within` draws the N classes from one alphabet; `cross` and `vinyals` from the whole split
(Lake's characters, or the Vinyals split's rotated classes). Each class gets k support and q
query drawings, all distinct.

Episode i is drawn from `np.random.default_rng([seed, i])` alone, so it does not depend on
how many episodes are asked for, on their order, or on parallelism. Characters are drawn
without replacement and keep the order in which they were drawn, so the position of the
true class among the N supports is uniformly random.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from benchmark.data import DRAWINGS as DRAWINGS_PER_CHARACTER
from benchmark.errors import EpisodeError
from benchmark.files import write_atomically
from benchmark.limits import MAX_EPISODES, MAX_IMAGE_IDS, MAX_SEED
from tasks.protocols import ALL as FROZEN_PROTOCOLS
from tasks.protocols import GENERATED as PROTOCOLS

FROZEN_FORMAT = "oneshot-benchmark/episodes/v1"
ARRAY_NAMES = ("support", "query", "query_label")


@dataclass(frozen=True, eq=False)
class EpisodeSet:
    """Fixed tasks: image ids into one split (`character_index * 20 + drawing`).

    `support` (E, N, k), `query` (E, N*q), `query_label` (E, N*q) in [0, N).
    """

    protocol: str
    n_way: int
    k_shot: int
    n_query: int
    seed: int | None
    split_sha256: str
    support: np.ndarray
    query: np.ndarray
    query_label: np.ndarray

    def __post_init__(self):
        for array in (self.support, self.query, self.query_label):
            array.setflags(write=False)

    @property
    def n_episodes(self) -> int:
        return self.support.shape[0]

    @property
    def ids_sha256(self) -> str:
        return ids_sha256(self.support, self.query, self.query_label)

    def head(self, n: int) -> EpisodeSet:
        """The first n episodes (for quick runs and tests)."""
        return EpisodeSet(self.protocol, self.n_way, self.k_shot, self.n_query, self.seed,
                          self.split_sha256, self.support[:n].copy(), self.query[:n].copy(),
                          self.query_label[:n].copy())

    def same_as(self, other: EpisodeSet) -> bool:
        return (self.protocol, self.n_way, self.k_shot, self.n_query, self.seed, self.split_sha256,
                self.ids_sha256) == (other.protocol, other.n_way, other.k_shot, other.n_query,
                                     other.seed, other.split_sha256, other.ids_sha256)


def ids_sha256(support: np.ndarray, query: np.ndarray, query_label: np.ndarray) -> str:
    """A hash of the ids that does not depend on the platform's integer width or byte order."""
    digest = hashlib.sha256()
    for array in (support, query, query_label):
        digest.update(str(array.shape).encode())
        digest.update(np.ascontiguousarray(array, dtype="<i8").tobytes())
    return digest.hexdigest()


def max_n_way(alphabet: np.ndarray, protocol: str) -> int:
    """The largest N the protocol can draw from a split with these character alphabets."""
    if protocol != "within":  # any characters (cross) or classes (vinyals) of the split
        return len(alphabet)
    _, counts = np.unique(alphabet, return_counts=True)
    return int(counts.max()) if len(counts) else 0


def validate_request(alphabet: np.ndarray, protocol: str, n_way: int, k_shot: int,
                     n_query: int, episodes: int, seed: int = 0) -> None:
    """Raise EpisodeError, in one line with the fix, for a request the split cannot satisfy."""
    if not isinstance(protocol, str) or protocol not in PROTOCOLS:
        raise EpisodeError(f"unknown protocol {protocol!r}: use one of {', '.join(PROTOCOLS)}")
    for name, value, low in (("n_way", n_way, 2), ("k_shot", k_shot, 1), ("n_query", n_query, 1),
                             ("episodes", episodes, 1)):
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool) or value < low:
            raise EpisodeError(f"{name} must be an integer >= {low}, got {value!r}")
    if not isinstance(seed, (int, np.integer)) or isinstance(seed, bool) or not 0 <= seed <= MAX_SEED:
        raise EpisodeError(f"seed must be an integer between 0 and {MAX_SEED}, got {seed!r}")
    if episodes > MAX_EPISODES:
        raise EpisodeError(f"episodes must be at most {MAX_EPISODES:,}, got {episodes:,}")
    if episodes * n_way * (k_shot + n_query) > MAX_IMAGE_IDS:
        raise EpisodeError(f"{episodes:,} episodes of {n_way}-way {k_shot}-shot with {n_query} queries "
                           f"per class are too large (more than {MAX_IMAGE_IDS:,} image ids): "
                           f"lower episodes or n_way")
    if k_shot + n_query > DRAWINGS_PER_CHARACTER:
        raise EpisodeError(f"k_shot + n_query = {k_shot + n_query} but each character has only "
                           f"{DRAWINGS_PER_CHARACTER} drawings: lower k_shot or n_query")
    largest = max_n_way(alphabet, protocol)
    if n_way > largest:
        where = "any one alphabet" if protocol == "within" else "the split"
        raise EpisodeError(f"{n_way}-way {protocol!r} episodes are impossible: {where} has at most "
                           f"{largest} characters; use n_way <= {largest}")


def generate(alphabet: np.ndarray, split_sha256: str, protocol: str, n_way: int, k_shot: int = 1,
             n_query: int = 1, episodes: int = 1000, seed: int = 0) -> EpisodeSet:
    """Draw `episodes` seeded tasks over a split whose characters belong to `alphabet`."""
    validate_request(alphabet, protocol, n_way, k_shot, n_query, episodes, seed)
    alphabet = np.asarray(alphabet)
    if protocol == "within":
        names, counts = np.unique(alphabet, return_counts=True)
        pools = [np.flatnonzero(alphabet == name) for name in names[counts >= n_way]]
    else:
        pools = [np.arange(len(alphabet))]
    support = np.empty((episodes, n_way, k_shot), dtype=np.int64)
    query = np.empty((episodes, n_way * n_query), dtype=np.int64)
    query_label = np.empty((episodes, n_way * n_query), dtype=np.int64)
    for i in range(episodes):
        rng = np.random.default_rng([seed, i])
        pool = pools[rng.integers(len(pools))]
        characters = rng.choice(pool, size=n_way, replace=False)
        # k + q distinct drawings per character: the first k of a random permutation of 20.
        drawings = np.argsort(rng.random((n_way, DRAWINGS_PER_CHARACTER)), axis=1)[:, :k_shot + n_query]
        ids = characters[:, None] * DRAWINGS_PER_CHARACTER + drawings
        support[i] = ids[:, :k_shot]
        order = rng.permutation(n_way * n_query)
        query[i] = ids[:, k_shot:].reshape(-1)[order]
        query_label[i] = np.repeat(np.arange(n_way), n_query)[order]
    return EpisodeSet(protocol, n_way, k_shot, n_query, seed, split_sha256, support, query, query_label)


def to_json(episodes: EpisodeSet) -> str:
    """The frozen-file text: parameters, ids, the split's sha256 and a sha256 of the ids.

    One episode per line keeps files diffable and the bytes identical on every machine.
    """
    header = {
        "format": FROZEN_FORMAT,
        "protocol": episodes.protocol,
        "n_way": episodes.n_way,
        "k_shot": episodes.k_shot,
        "n_query": episodes.n_query,
        "episodes": episodes.n_episodes,
        "seed": episodes.seed,
        "split_sha256": episodes.split_sha256,
        "ids_sha256": episodes.ids_sha256,
    }
    parts = [f" {json.dumps(key)}: {json.dumps(value)}" for key, value in header.items()]
    for name in ARRAY_NAMES:
        rows = ",\n  ".join(json.dumps(row.tolist(), separators=(",", ":"))
                            for row in getattr(episodes, name))
        parts.append(f' "{name}": [\n  {rows}\n ]')
    return "{\n" + ",\n".join(parts) + "\n}\n"


def save(episodes: EpisodeSet, path: str | Path) -> Path:
    """Write a frozen file atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(path, to_json(episodes))
    return path


def load(path: str | Path, split_sha256: str | None = None) -> EpisodeSet:
    """Read a frozen file; refuse one whose ids or data hash do not match what it claims."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(raw, dict) or raw.get("format") != FROZEN_FORMAT:
            raise ValueError(f"it is not a frozen episode file of format {FROZEN_FORMAT!r}")
        arrays = [np.asarray(raw[name], dtype=np.int64) for name in ARRAY_NAMES]
        loaded = EpisodeSet(*_checked_header(raw), *arrays)
        claimed_sha256 = raw["ids_sha256"]
    except FileNotFoundError:
        raise EpisodeError(f"frozen episode file {path} not found: create it with "
                           f"`python run_benchmark.py freeze --config CONFIG`") from None
    # Hostile content surfaces as any of these (huge numbers overflow, deep nesting recurses).
    except (OSError, ValueError, KeyError, TypeError, OverflowError, RecursionError) as error:
        reason = (str(error).splitlines() or [type(error).__name__])[0][:200]
        raise EpisodeError(f"frozen episode file {path} is unreadable ({reason}); regenerate it with "
                           f"`python run_benchmark.py freeze`") from None
    _check_shapes(loaded, path)
    if loaded.ids_sha256 != claimed_sha256:
        raise EpisodeError(f"frozen episode file {path} was modified: its ids do not match its "
                           f"ids_sha256; restore it from git or regenerate it with `freeze`")
    if split_sha256 is not None and loaded.split_sha256 != split_sha256:
        raise EpisodeError(f"frozen episode file {path} was made for other data (split sha256 "
                           f"{loaded.split_sha256[:12]}..., this data {split_sha256[:12]}...); "
                           f"use the standard Omniglot data or regenerate the file")
    return loaded


def _checked_header(raw: dict) -> tuple:
    """(protocol, n_way, k_shot, n_query, seed, split_sha256) of a frozen file, type-checked."""
    protocol = raw["protocol"]
    if protocol not in FROZEN_PROTOCOLS:
        raise ValueError(f"protocol {str(protocol)[:40]!r} is unknown")
    counts = []
    for name, low in (("n_way", 2), ("k_shot", 1), ("n_query", 1)):
        value = raw[name]
        if type(value) is not int or value < low:
            raise ValueError(f"{name} must be an integer >= {low}, got {str(value)[:40]}")
        counts.append(value)
    seed = raw["seed"]
    if seed is not None and (type(seed) is not int or not 0 <= seed <= MAX_SEED):
        raise ValueError(f"seed must be null or an integer between 0 and {MAX_SEED}, got {str(seed)[:40]}")
    if not isinstance(raw["split_sha256"], str):
        raise ValueError("split_sha256 must be a string")
    episodes = raw["episodes"]
    if type(episodes) is not int or episodes != len(raw["support"]):
        raise ValueError(f"episodes is {str(episodes)[:40]}, but the file holds {len(raw['support'])}")
    return (protocol, *counts, seed, raw["split_sha256"])


def _check_shapes(episodes: EpisodeSet, path: Path) -> None:
    if episodes.support.ndim != 3 or len(episodes.support) < 1:
        raise EpisodeError(f"frozen episode file {path} is malformed: support has shape "
                           f"{episodes.support.shape}, expected (episodes >= 1, n_way, k_shot)")
    e, n, k, q = episodes.n_episodes, episodes.n_way, episodes.k_shot, episodes.n_query
    expected = {"support": (e, n, k), "query": (e, n * q), "query_label": (e, n * q)}
    for name, shape in expected.items():
        if getattr(episodes, name).shape != shape:
            raise EpisodeError(f"frozen episode file {path} is malformed: {name} has shape "
                               f"{getattr(episodes, name).shape}, expected {shape}")
    if episodes.query_label.size and not (0 <= episodes.query_label.min() and episodes.query_label.max() < n):
        raise EpisodeError(f"frozen episode file {path} is malformed: query labels outside [0, {n})")
    if episodes.support.min() < 0 or episodes.query.min() < 0:
        raise EpisodeError(f"frozen episode file {path} is malformed: negative image ids")

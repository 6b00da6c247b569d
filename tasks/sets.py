"""The task sets a config names, resolved to episode sets: one per (task set, N).

A config with `frozen: DIR` loads its episodes from the frozen files in DIR (written by
`run_benchmark.py freeze`) instead of generating them. Each file is checked on the way in:
its ids against their sha256, the data it was made for against the data loaded, and its
parameters against the config, so a tampered file or a config edited since freezing is
refused with one line that says how to fix it.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from pathlib import Path

from benchmark.api import EpisodeBatch
from benchmark.config import RunConfig, TaskSetConfig
from benchmark.data import official_runs_zip
from benchmark.errors import ConfigError, EpisodeError
from benchmark.paths import PROJECT_ROOT
from tasks import episodes as episode_sets
from tasks import protocols
from tasks.episodes import EpisodeSet
from tasks.official import official_episode_set
from tasks.vinyals import SPLIT_LISTS, vinyals_split
# The official runs are fixed by Lake et al.: 20 runs, 20-way, 1-shot, 1 query per class.
OFFICIAL_SHAPE = {"n_way": 20, "k_shot": 1, "n_query": 1, "episodes": 20, "seed": None}


@dataclass(frozen=True)
class TaskSet:
    """The episodes of one (task set, N), and which split their ids point into."""

    name: str
    split: str
    episodes: EpisodeSet

    @property
    def label(self) -> str:
        return f"{self.name} {self.episodes.n_way}-way {self.episodes.k_shot}-shot"

    @property
    def training_split(self) -> str:
        """The split a method is fitted on before it predicts these episodes (its protocol's)."""
        return protocols.TRAINING_SPLIT[self.episodes.protocol]

    def batch(self, data) -> EpisodeBatch:
        """What a method's `predict` gets for these episodes: ids into their split's images."""
        split = data_split(data, self.split)
        return EpisodeBatch(split.flat_images, self.episodes.support, self.episodes.query, split.sha256)


_DERIVED_SPLITS = weakref.WeakKeyDictionary()  # data -> {name: split}: built once per data


def data_split(data, name: str):
    """The split `name` of the data (tasks/protocols.py SPLITS): Lake's two as loaded, the
    Vinyals ones built from the shipped class lists the first time they are asked for."""
    if name in ("background", "evaluation"):
        return getattr(data, name)
    if name not in SPLIT_LISTS:
        raise ConfigError(f"split {name!r} is unknown: use one of {', '.join(protocols.SPLITS)}")
    built = _DERIVED_SPLITS.setdefault(data, {})
    if name not in built:
        built[name] = vinyals_split(data, name)
    return built[name]


def resolve_task_sets(config: RunConfig, data, official_runs=None, use_frozen: bool = True,
                      download: bool = False, progress: bool = False) -> list[TaskSet]:
    """Generate (or load) every episode set of the config, in config order.

    The official runs come from Lake et al.'s all_runs.zip in the data folder (downloaded if
    `download`), or from `official_runs()` when given; only a config with an `official` task
    set that is not frozen needs them. With `use_frozen=False` a frozen config is generated
    anyway (to freeze it).
    """
    if official_runs is None:
        def official_runs():
            return official_episode_set(official_runs_zip(data.root, download=download, progress=progress),
                                        data.evaluation)

    frozen = frozen_directory(config) if use_frozen else None
    resolved = []
    for name, task_set in config.task_sets.items():
        split = data_split(data, task_set.split)
        if task_set.protocol == protocols.OFFICIAL:  # evaluation images: the config allows no other split
            if frozen is not None:
                episodes = load_frozen(frozen, name, task_set, OFFICIAL_SHAPE["n_way"], OFFICIAL_SHAPE["k_shot"],
                                       split.sha256)
            else:
                episodes = official_runs()
            resolved.append(TaskSet(name, "evaluation", episodes))
            continue
        for k_shot in task_set.k_shot:
            for n_way in task_set.n_way:
                resolved.append(TaskSet(name, task_set.split, _episodes(frozen, name, task_set, split, n_way, k_shot)))
    return resolved


def _episodes(frozen: Path | None, name: str, task_set: TaskSetConfig, split, n_way: int, k_shot: int) -> EpisodeSet:
    """One (task set, N, k)'s episodes: loaded from its frozen file, else generated."""
    if frozen is not None:
        return load_frozen(frozen, name, task_set, n_way, k_shot, split.sha256)
    try:
        return episode_sets.generate(split.alphabet, split.sha256, task_set.protocol, n_way, k_shot,
                                     task_set.n_query, task_set.episodes, task_set.seed)
    except EpisodeError as error:
        raise EpisodeError(f"task set {name!r}: {error}") from None


def frozen_directory(config: RunConfig) -> Path | None:
    """The config's `frozen` directory as a path (relative ones are under the project root)."""
    if config.frozen is None:
        return None
    directory = Path(config.frozen)
    return directory if directory.is_absolute() else PROJECT_ROOT / directory


def frozen_path(directory: str | Path, name: str, n_way: int, k_shot: int) -> Path:
    """Where the frozen file of one (task set, N, k) lives."""
    return Path(directory) / f"{name}-{n_way}way-{k_shot}shot.json"


def expected_parameters(task_set: TaskSetConfig, n_way: int, k_shot: int) -> dict:
    """What a frozen file of this (task set, N, k) must say about itself."""
    if task_set.protocol == protocols.OFFICIAL:
        return {"protocol": protocols.OFFICIAL, **OFFICIAL_SHAPE}
    return {"protocol": task_set.protocol, "n_way": n_way, "k_shot": k_shot,
            "n_query": task_set.n_query, "episodes": task_set.episodes, "seed": task_set.seed}


def load_frozen(directory: Path, name: str, task_set: TaskSetConfig, n_way: int, k_shot: int,
                split_sha256: str) -> EpisodeSet:
    """Load one frozen file and check it against the data and the config."""
    path = frozen_path(directory, name, n_way, k_shot)
    episodes = episode_sets.load(path, split_sha256)  # checks the ids and the data's sha256
    actual = {"protocol": episodes.protocol, "n_way": episodes.n_way, "k_shot": episodes.k_shot,
              "n_query": episodes.n_query, "episodes": episodes.n_episodes, "seed": episodes.seed}
    for key, wanted in expected_parameters(task_set, n_way, k_shot).items():
        if actual[key] != wanted:
            raise EpisodeError(f"frozen episode file {path} has {key}={actual[key]!r} but the config's "
                               f"task set {name!r} asks for {key}={wanted!r}: refreeze with `python "
                               f"run_benchmark.py freeze --config CONFIG`, or generate with --set frozen=null")
    return episodes


@dataclass(frozen=True)
class FrozenFile:
    path: Path
    episodes: int
    ids_sha256: str
    status: str  # "new", "unchanged" or "changed"


def freeze(task_sets: list[TaskSet], directory: Path) -> list[FrozenFile]:
    """Write each task set to its frozen file in `directory`; say which files changed."""
    written = []
    for task_set in task_sets:
        episodes = task_set.episodes
        path = frozen_path(directory, task_set.name, episodes.n_way, episodes.k_shot)
        text = episode_sets.to_json(episodes)
        before = path.read_text(encoding="utf-8") if path.exists() else None
        try:
            episode_sets.save(episodes, path)
        except OSError as error:
            raise ConfigError(f"cannot write the frozen file {path} ({error}): choose a writable --out") from None
        status = "new" if before is None else ("unchanged" if before == text else "changed")
        written.append(FrozenFile(path, episodes.n_episodes, episodes.ids_sha256, status))
    return written


def stale_frozen_files(directory: Path, written: list[FrozenFile]) -> list[Path]:
    """Frozen files in `directory` that the config no longer names (left for the user to delete)."""
    kept = {file.path.resolve() for file in written}
    return sorted(p for p in Path(directory).glob("*.json") if p.resolve() not in kept)

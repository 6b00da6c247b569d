"""The task sets a config names, resolved to episode sets: one per (task set, N)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from benchmark.config import RunConfig, TaskSetConfig
from benchmark.errors import EpisodeError
from tasks import episodes as episode_sets
from tasks.episodes import EpisodeSet


@dataclass(frozen=True)
class TaskSet:
    """The episodes of one (task set, N), and which split their ids point into."""

    name: str
    split: str
    episodes: EpisodeSet

    @property
    def label(self) -> str:
        return f"{self.name} {self.episodes.n_way}-way {self.episodes.k_shot}-shot"


def resolve_task_sets(config: RunConfig, data, official_runs=None) -> list[TaskSet]:
    """Generate (or load) every episode set of the config, in config order.

    `official_runs` is a callable returning the official runs as an EpisodeSet; it is only
    called when the config has an `official` task set, so other runs never need the zip.
    """
    resolved = []
    for name, task_set in config.task_sets.items():
        split = getattr(data, task_set.split)
        if task_set.protocol == "official":
            if task_set.split != "evaluation":
                raise EpisodeError(f"task set {name!r}: the official runs use evaluation images; "
                                   f"remove its split setting")
            resolved.append(TaskSet(name, "evaluation", official_runs()))
            continue
        for n_way in task_set.n_way:
            try:
                episodes = episode_sets.generate(
                    split.alphabet, split.sha256, task_set.protocol, n_way, task_set.k_shot,
                    task_set.n_query, task_set.episodes, task_set.seed)
            except EpisodeError as error:
                raise EpisodeError(f"task set {name!r}: {error}") from None
            resolved.append(TaskSet(name, task_set.split, episodes))
    return resolved


def frozen_path(directory: str | Path, name: str, task_set: TaskSetConfig, n_way: int) -> Path:
    """Where the frozen file of one (task set, N) lives."""
    return Path(directory) / f"{name}-{n_way}way-{task_set.k_shot}shot.json"

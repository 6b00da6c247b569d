"""run.json as typed data: the manifest of a run folder (benchmark/run_folder.py writes it).

The manifest says what a run is (its resolved config, the episodes of every task set by
hash, the data by hash, the machine) and what it has finished: one `Chunk` per (method,
seed, task set, N, k) whose records are in a file of their own, with its sha256.
This module alone maps it to and from JSON; everything else reads typed fields.
`RUN_FORMAT` is the version: a file of another format is refused, not guessed at.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from benchmark.config import RunConfig, config_from_dict
from benchmark.environment import Environment
from benchmark.errors import RunFolderError
from tasks.protocols import TRAINING_SPLIT

RUN_FORMAT = "oneshot-benchmark/run/v2"  # v1 held the records in one records.csv, by byte ranges


@dataclass(frozen=True)
class Chunk:
    """The records of one (method, seed, task set, N, k): a file of the run folder."""

    method: str
    seed: int
    task_set: str
    n_way: int
    k_shot: int
    rows: int
    file: str  # relative to the run folder
    sha256: str  # of the file's bytes

    @property
    def key(self) -> tuple:
        return chunk_key(self.method, self.seed, self.task_set, self.n_way, self.k_shot)

    def describe(self) -> str:
        return f"{self.method} seed {self.seed} on {self.task_set} {self.n_way}-way {self.k_shot}-shot"


def task_set_key(name: str, n_way: int, k_shot: int) -> str:
    """How run.json (and the golden file) name the episodes of one (task set, N, k)."""
    return f"{name}/{n_way}way/{k_shot}shot"


def task_set_hashes(task_sets) -> dict[str, str]:
    """{task-set key: sha256 of its episode ids}: two runs with equal hashes ran the same episodes."""
    return {task_set_key(t.name, t.episodes.n_way, t.episodes.k_shot): t.episodes.ids_sha256 for t in task_sets}


def _parts(key: str) -> tuple[str, int, int]:
    """'cross/5way/1shot' -> ('cross', 5, 1): the inverse of task_set_key."""
    name, ways, shots = key.split("/")
    return name, int(ways.removesuffix("way")), int(shots.removesuffix("shot"))


def fit_label(name: str, seed: int, seeds, training_split: str = "background") -> str:
    """How messages and run.json's failures name one fit of a method: with its seed when the
    run has several, and with its training split when that is not Lake's background."""
    label = name if len(seeds) == 1 else f"{name} (seed {seed})"
    return label if training_split == "background" else f"{label} on {training_split}"


def _training_split(config: RunConfig, key: str) -> str:
    """The split methods are fitted on for the task set of a task-set key."""
    return TRAINING_SPLIT[config.task_sets[_parts(key)[0]].protocol]


def chunk_key(method: str, seed: int, task_set: str, n_way: int, k_shot: int) -> tuple:
    """What identifies a chunk: a run holds at most one chunk per key."""
    return (method, seed, task_set, n_way, k_shot)


@dataclass
class MethodEntry:
    """Where a method came from, its hyperparameters and capabilities, and its times per seed."""

    source: str = "unknown"
    params: dict | None = None
    capabilities: dict[str, bool] = field(default_factory=dict)
    device: str | None = None  # where it was fitted and run (None in runs made before this field)
    # "SEED/TRAINING_SPLIT" (one fit) -> fit and predict seconds, peak RSS
    timing: dict[str, dict] = field(default_factory=dict)

    @property
    def needs_training(self) -> bool:
        return bool(self.capabilities.get("needs_training", True))


@dataclass(frozen=True)
class DataEntry:
    root: str
    background_sha256: str
    evaluation_sha256: str


@dataclass
class RunManifest:
    run_id: str
    config: dict  # the resolved config (RunConfig.to_dict), enough to resume without the YAML
    methods_requested: list[str]
    seeds: list[int]
    task_sets: dict[str, str]  # task-set key (task_set_key) -> sha256 of its episode ids
    data: DataEntry
    environment: Environment
    started: str
    methods: dict[str, MethodEntry] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)  # method label -> why it failed
    chunks: list[Chunk] = field(default_factory=list)
    # Parts methods share (FitContext.shared): "key (seed S)" -> seconds, and which fit built it.
    components: dict[str, dict] = field(default_factory=dict)
    format: str = RUN_FORMAT

    def run_config(self) -> RunConfig:
        """The config the run was made with, typed (ConfigError if it no longer loads)."""
        return config_from_dict(self.config, source="run.json")

    def done(self) -> set[tuple]:
        return {chunk.key for chunk in self.chunks}

    def missing(self) -> list[str]:
        """What the run was asked for and has not finished: one line per method and seed."""
        config, done, lines = self.run_config(), self.done(), []
        for name in self.methods_requested:
            entry = self.methods.get(name)
            if entry is None or entry.params is None:
                lines.append(f"{name}: not started")
                continue
            keys = [key for key in self.task_sets
                    if entry.needs_training or not config.task_sets[_parts(key)[0]].only_trained]
            for seed in self.seeds if entry.needs_training else self.seeds[:1]:
                for training_split in dict.fromkeys(_training_split(config, key) for key in keys):
                    of_split = [key for key in keys if _training_split(config, key) == training_split]
                    todo = [key for key in of_split if chunk_key(name, seed, *_parts(key)) not in done]
                    if todo:
                        label = fit_label(name, seed, self.seeds, training_split)
                        failure = self.failures.get(label)
                        lines.append(f"{label}: {len(todo)} of {len(of_split)} task sets missing "
                                     f"({', '.join(todo[:3])}{', ...' if len(todo) > 3 else ''})"
                                     + (f"; it failed: {failure}" if failure else ""))
        return lines

    def has_results(self, method: str) -> bool:
        return any(chunk.method == method for chunk in self.chunks)

    def to_json(self) -> dict:
        plain = dataclasses.asdict(self)
        return {"format": plain.pop("format"), **plain}

    @classmethod
    def from_json(cls, raw: Any, where: str) -> RunManifest:
        """The manifest of a parsed run.json, or RunFolderError naming `where` and the bad field."""
        if isinstance(raw, dict) and raw.get("format") == "oneshot-benchmark/run/v1":
            raise RunFolderError(f"{where} is a run of an earlier version of this harness (run format v1, one "
                                 f"records.csv): report it with that version, or run it again into a new --out folder")
        if not isinstance(raw, dict) or raw.get("format") != RUN_FORMAT:
            raise RunFolderError(f"{where} is not a run manifest of this project (format {RUN_FORMAT})")
        try:
            chunks = [Chunk(**entry) for entry in _field(raw, "chunks", list)]
            return cls(
                run_id=_field(raw, "run_id", str), config=_field(raw, "config", dict),
                methods_requested=[str(name) for name in _field(raw, "methods_requested", list)],
                seeds=[int(seed) for seed in raw.get("seeds", [])],
                task_sets=_field(raw, "task_sets", dict), data=DataEntry(**_field(raw, "data", dict)),
                environment=Environment(**raw.get("environment", {})), started=str(raw.get("started")),
                methods={name: MethodEntry(**entry) for name, entry in raw.get("methods", {}).items()},
                failures=dict(raw.get("failures", {})), chunks=chunks, components=dict(raw.get("components", {})))
        except (TypeError, ValueError, KeyError, AttributeError) as error:
            raise RunFolderError(f"{where} is malformed ({type(error).__name__}: {error}): it was not "
                                 f"written by this project; choose a new --out folder") from None

    def resume_problem(self, new: RunManifest) -> str | None:
        """Why a run of `new` cannot continue this one, naming the field that differs; None if it can.

        Method hyperparameters are compared per method when a method runs (adding a method to a
        run is a resume, not a new run).
        """
        difference = _first_difference(_without_methods(self.config), _without_methods(new.config), "config.")
        if difference:
            return f"another config ({difference})"
        for key in sorted(set(self.task_sets) | set(new.task_sets)):
            if self.task_sets.get(key) != new.task_sets.get(key):
                return (f"other episodes for task set {key} (ids sha256 {_short(self.task_sets.get(key))} there, "
                        f"{_short(new.task_sets.get(key))} now)")
        if (self.data.background_sha256, self.data.evaluation_sha256) != (
                new.data.background_sha256, new.data.evaluation_sha256):
            return "other Omniglot data (other sha256): point --data-dir at the data it used"
        return None


def _field(raw: dict, name: str, kind: type):
    value = raw[name]
    if not isinstance(value, kind) or isinstance(value, bool):
        raise TypeError(f"{name} must be of type {kind.__name__}")
    return value


def _without_methods(config: dict) -> dict:
    return {key: value for key, value in config.items() if key != "methods"}


def _first_difference(old, new, prefix: str) -> str | None:
    """The first dotted key where two plain values differ, with both values."""
    if isinstance(old, dict) and isinstance(new, dict):
        for key in [*old, *(k for k in new if k not in old)]:
            found = _first_difference(old.get(key, "(unset)"), new.get(key, "(unset)"), f"{prefix}{key}.")
            if found:
                return found
        return None
    if old != new:
        return f"{prefix.rstrip('.')} is {_shown(old)} there, {_shown(new)} now"
    return None


def _shown(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _short(digest: str | None) -> str:
    return f"{digest[:12]}..." if digest else "none"

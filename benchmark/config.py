"""Run configuration: YAML files and `--set key=value` overrides become frozen dataclasses.

Every field is typed and has its default here, in one place. Unknown keys and values of the
wrong type are errors that name the key, the expected type and, for typos, the closest key.
Method hyperparameters are checked later against the method's own constructor
(`registry.check_hyperparameters`), because only the registry knows which class a name means.
"""

from __future__ import annotations

import difflib
import re
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from benchmark.errors import ConfigError
from benchmark.limits import MAX_RESAMPLES, MAX_SEED
from tasks.protocols import ALL as PROTOCOLS
from tasks.protocols import EPISODE_SPLITS, SPLITS

DEVICES = ("auto", "cpu", "cuda")
# The config name becomes part of the run folder's name: no separators, no surprises.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,99}")


def check_seed(value: int, where: str) -> None:
    if not 0 <= value <= MAX_SEED:
        raise ConfigError(f"{where} must be between 0 and {MAX_SEED}, got {value}")


@dataclass(frozen=True)
class TaskSetConfig:
    """One named family of episodes; a sweep over `n_way` gives one episode set per N."""

    protocol: str
    n_way: tuple[int, ...] = (20,)
    k_shot: tuple[int, ...] = (1,)  # a sweep too: one episode set per (N, k)
    n_query: int = 1
    episodes: int = 1000
    seed: int = 0
    # Where the episodes are drawn from; unset: the protocol's test split (tasks/protocols.py).
    # A training split ("background", "vinyals_trainval") measures on the training classes, to
    # make overfitting visible.
    split: str | None = None
    # Run only methods that train (capabilities.needs_training): a background task set says
    # nothing about an untrained method but costs as much as an evaluation one.
    only_trained: bool = False

    def __post_init__(self):
        if self.protocol not in PROTOCOLS:
            raise ConfigError(f"protocol {self.protocol!r} is unknown: use one of {', '.join(PROTOCOLS)}")
        allowed = EPISODE_SPLITS[self.protocol]
        if self.split is None:
            object.__setattr__(self, "split", allowed[0])
        if self.split not in SPLITS:
            raise ConfigError(f"split {self.split!r} is unknown: use one of {', '.join(SPLITS)}")
        if self.split not in allowed:
            raise ConfigError(f"split {self.split!r} does not go with protocol {self.protocol!r}: "
                              f"use {' or '.join(allowed)}")
        if not self.n_way:
            raise ConfigError("n_way is empty: give at least one number of ways")
        if not self.k_shot:
            raise ConfigError("k_shot is empty: give at least one number of shots")
        check_seed(self.seed, "seed")


@dataclass(frozen=True)
class StatsConfig:
    resamples: int = 2000
    confidence: float = 0.95
    seed: int = 0

    def __post_init__(self):
        if not 1 <= self.resamples <= MAX_RESAMPLES:
            raise ConfigError(f"stats.resamples must be between 1 and {MAX_RESAMPLES}, got {self.resamples}")
        check_seed(self.seed, "stats.seed")
        if not 0 < self.confidence < 1:
            raise ConfigError(f"stats.confidence must be between 0 and 1, got {self.confidence}")


@dataclass(frozen=True)
class RunConfig:
    name: str = "default"
    seed: int = 0  # the training seed handed to every method
    device: str = "auto"
    task_sets: Mapping[str, TaskSetConfig] = field(default_factory=dict)
    # What `--methods all` runs, with each method's hyperparameters.
    methods: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    stats: StatsConfig = field(default_factory=StatsConfig)
    # A directory of frozen episode files (relative: to the project root) that the task sets
    # are loaded from instead of generated; written by `run_benchmark.py freeze`.
    frozen: str | None = None

    def __post_init__(self):
        if self.device not in DEVICES:
            raise ConfigError(f"device {self.device!r} is unknown: use one of {', '.join(DEVICES)}")
        if not NAME_PATTERN.fullmatch(self.name):
            raise ConfigError(f"name {self.name!r} must be 1-100 letters, digits, '_', '-' or '.', "
                              f"starting with a letter or digit (it names the run folder)")
        check_seed(self.seed, "seed")
        object.__setattr__(self, "task_sets", types.MappingProxyType(dict(self.task_sets)))
        object.__setattr__(self, "methods", types.MappingProxyType(
            {name: types.MappingProxyType(dict(params)) for name, params in self.methods.items()}))

    def to_dict(self) -> dict:
        """Plain data, for run.json and for hashing."""
        return {
            "name": self.name, "seed": self.seed, "device": self.device,
            "task_sets": {name: {f.name: _plain(getattr(ts, f.name)) for f in fields(ts)}
                          for name, ts in self.task_sets.items()},
            "methods": {name: {k: _plain(v) for k, v in params.items()} for name, params in self.methods.items()},
            "stats": {f.name: getattr(self.stats, f.name) for f in fields(self.stats)},
            # Only when set, so that run folders made before this field existed still resume.
            **({"frozen": self.frozen} if self.frozen is not None else {}),
        }


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


def load_config(path: str | Path, overrides: list[str] = ()) -> RunConfig:
    """Read a YAML config, apply `key=value` overrides, and type-check everything."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found: pass --config with an existing file "
                          f"(see configs/)") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"config file {path} cannot be read: {error}") from None
    except RecursionError:
        raise ConfigError(f"config file {path} is nested too deeply to be a config") from None
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        at = f" at line {where.line + 1}" if where else ""
        raise ConfigError(f"config file {path} is not valid YAML{at}: fix the syntax") from None
    except (ValueError, TypeError, OverflowError) as error:  # a tagged value that cannot be built: !!int abc
        raise ConfigError(f"config file {path} holds a value YAML cannot build ({_printable(str(error))}): "
                          f"fix it") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must be a mapping of keys to values")
    for override in overrides:
        apply_override(raw, override)
    return config_from_dict(raw, source=str(path))


def apply_override(raw: dict, override: str) -> None:
    """Set a dotted key (`task_sets.cross.episodes=100`) in the raw config dictionary."""
    key, sep, text = override.partition("=")
    parts = key.strip().split(".")
    if not sep or not all(parts):
        raise ConfigError(f"--set {override!r} is malformed: write --set key.subkey=value")
    try:
        value = yaml.safe_load(text)
    except (yaml.YAMLError, RecursionError, ValueError, TypeError, OverflowError):
        value = text  # not YAML, or a value YAML cannot build (a date in month 13): the text itself
    node = raw
    for depth, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"--set {override!r}: {'.'.join(parts[:depth + 1])} is a value, not a section")
        node = child
    node[parts[-1]] = value


def config_from_dict(raw: dict, source: str = "config") -> RunConfig:
    raw = dict(raw)
    task_sets = _mapping(raw.pop("task_sets", {}), "task_sets")
    methods = _mapping(raw.pop("methods", {}), "methods")
    stats = _mapping(raw.pop("stats", {}), "stats")
    top = _build(RunConfig, raw, "", skip={"task_sets", "methods", "stats"})
    built_sets = {}
    for name, entry in task_sets.items():
        if not isinstance(name, str) or not name.replace("_", "").replace("-", "").isalnum():
            raise ConfigError(f"task set name {name!r} must be letters, digits, '_' or '-'")
        kwargs = _build(TaskSetConfig, _mapping(entry, f"task_sets.{name}"), f"task_sets.{name}.")
        try:
            built_sets[name] = TaskSetConfig(**kwargs)
        except ConfigError as error:
            raise ConfigError(f"task_sets.{name}: {error}") from None
    built_methods = {}
    for name, params in methods.items():
        where = f"methods.{_printable(name)}"
        if not isinstance(name, str):  # YAML reads `1:` as a number: it would collide with '1'
            raise ConfigError(f"{where}: a method name must be a string, got {type(name).__name__}")
        params = _mapping(params, where) if params is not None else {}
        _check_plain(params, where)
        built_methods[name] = params
    return RunConfig(**top, task_sets=built_sets, methods=built_methods,
                     stats=StatsConfig(**_build(StatsConfig, stats, "stats.")))


def _check_plain(value, where: str, depth: int = 0) -> None:
    """Hyperparameters go into run.json and checkpoint keys: they must be plain JSON data."""
    if depth > 20:
        raise ConfigError(f"{where} is nested too deeply (or refers to itself)")
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ConfigError(f"{where}: key {key!r} must be a string")
            _check_plain(item, f"{where}.{key}", depth + 1)
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _check_plain(item, f"{where}[{index}]", depth + 1)
    elif not (value is None or isinstance(value, (bool, int, float, str))):
        raise ConfigError(f"{where} must be a number, string, true/false, list or mapping, "
                          f"got {type(value).__name__} {value!r}")


def _printable(value) -> str:
    """`value` as it is, or its repr when it holds a line break: a key read from a hostile file
    must not break the one-line error it appears in."""
    text = str(value)
    return repr(text) if "\n" in text or "\r" in text else text


def _mapping(value, where: str) -> dict:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"{where} must be a mapping of keys to values, got {type(value).__name__}")
    return value


def _build(cls, raw: dict, prefix: str, skip: set = frozenset()):
    """Check keys and types of `raw` against the dataclass `cls`; return constructor kwargs."""
    hints = typing.get_type_hints(cls)
    known = [f.name for f in fields(cls) if f.name not in skip]
    kwargs = {}
    for key, value in raw.items():
        if key not in known:
            raise ConfigError(f"unknown config key {_printable(f'{prefix}{key}')}{did_you_mean(str(key), known)}")
        kwargs[key] = coerce(value, hints[key], f"{prefix}{key}")
    # Every field has a default except a task set's protocol.
    if cls is TaskSetConfig and "protocol" not in kwargs:
        raise ConfigError(f"{prefix}protocol is missing: set it to one of {', '.join(PROTOCOLS)}")
    return kwargs


def did_you_mean(word: str, choices) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.6)
    return f": did you mean {close[0]!r}?" if close else f" (known: {', '.join(sorted(choices))})"


def coerce(value, annotation, where: str):
    """Return `value` as `annotation` (int, float, bool, str, optional, tuple[int, ...])."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(annotation)
        if value is None and type(None) in options:
            return None
        inner = [option for option in options if option is not type(None)]
        return coerce(value, inner[0], where)
    if origin in (tuple, list):
        item = typing.get_args(annotation)[0]
        values = value if isinstance(value, (list, tuple)) else [value]
        return origin(coerce(v, item, f"{where}[{i}]") for i, v in enumerate(values))
    if annotation is bool:
        if isinstance(value, bool):
            return value
    elif annotation is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
    elif annotation is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            try:
                return float(value)
            except OverflowError:  # an integer beyond any float
                raise ConfigError(f"{where} must be a number a float can hold, got an integer of "
                                  f"{len(str(abs(value)))} digits") from None
        if isinstance(value, str):  # YAML 1.1 reads 1e-3 as a string
            try:
                return float(value)
            except ValueError:
                pass
    elif annotation is str:
        if isinstance(value, str):
            return value
    else:  # Any, or a type this loader does not check
        return value
    raise ConfigError(f"{where} must be {_type_name(annotation)}, got {value!r}")


def _type_name(annotation) -> str:
    return {int: "an integer", float: "a number", bool: "true or false", str: "a string"}.get(
        annotation, getattr(annotation, "__name__", str(annotation)))

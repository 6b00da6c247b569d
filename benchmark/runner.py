"""Fit each method once, predict every task set, and write per-query records as they finish.

A run folder holds `records.csv` (one row per query) and `run.json` (the resolved config,
versions, device, data hashes, and one entry per finished chunk of records). A chunk is the
records of one (method, seed, task set, N); it is appended to `records.csv` and then listed
in `run.json` with its byte range and sha256. Rerunning into the same folder keeps the
chunks listed there (after checking their hashes), drops anything written after them, and
computes only what is missing, so an interrupted run resumed gives the same records.csv as
one never interrupted. One run at a time writes into a folder (`run_folder.RunLock`).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import resource
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from tqdm import tqdm

from benchmark import registry
from benchmark.api import EpisodeBatch, FitContext, checked_scores
from benchmark.checkpoints import CheckpointStore
from benchmark.config import RunConfig, check_hyperparameters
from benchmark.errors import BenchmarkError, ConfigError, MethodError
from benchmark.run_folder import RUN_FORMAT, RunLock, read_manifest, verify_records, write_atomically
from tasks.sets import TaskSet

RECORD_COLUMNS = ["run_id", "method", "seed", "task_set", "split", "protocol", "n_way", "k_shot",
                  "episode", "query", "label", "predicted", "correct"]


@dataclass
class RunOptions:
    device: str = "cpu"
    retrain: bool = False
    progress: bool = True
    checkpoint_dir: Path = Path("results/checkpoints")
    seeds: tuple[int, ...] | None = None  # None: the config's seed
    log: object = field(default=print, repr=False)


@dataclass
class RunOutcome:
    out_dir: Path
    failures: dict[str, str]  # method -> reason

    @property
    def exit_code(self) -> int:
        return 1 if self.failures else 0


def resolve_device(requested: str) -> str:
    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was asked for but no CUDA GPU is available: use --device cpu")
    return requested


def run_benchmark(config: RunConfig, method_names: list[str], data, task_sets: list[TaskSet],
                  out_dir: Path, options: RunOptions) -> RunOutcome:
    """Run every method on every task set into out_dir, resuming what is already there."""
    methods = {name: _instantiate(name, config) for name in method_names}
    out_dir.mkdir(parents=True, exist_ok=True)
    with RunLock(out_dir):  # before reading run.json: a second run must not truncate the first's
        return _run_locked(config, method_names, methods, data, task_sets, out_dir, options)


def _run_locked(config, method_names, methods, data, task_sets, out_dir, options) -> RunOutcome:
    records_path = out_dir / "records.csv"
    seeds = options.seeds or (config.seed,)
    manifest = _start_manifest(out_dir, config, method_names, data, task_sets, options, seeds)
    done = {_chunk_id(c) for c in manifest["chunks"]}
    failures = {}
    for name, seed in ((name, seed) for name in method_names for seed in _seeds_of(methods[name], seeds)):
        label = name if len(seeds) == 1 else f"{name} (seed {seed})"
        applicable = [t for t in task_sets if _runs_on(methods[name], config, t)]
        todo = [t for t in applicable if (name, seed, t.name, t.episodes.n_way, t.episodes.k_shot) not in done]
        if not todo:
            options.log(f"{label}: all its task sets already done" if applicable else
                        f"{label}: no task set of this config applies to it (only_trained task sets skip "
                        f"methods that do not train)")
            continue
        try:
            method = methods[name] if len(seeds) == 1 else _instantiate(name, config)
            _record_provenance(manifest, name, method, out_dir)
            timing = _run_method(method, label, seed, data, todo, records_path, manifest, out_dir, options)
            manifest["methods"][name].setdefault("timing", {})[str(seed)] = timing
            manifest["failures"].pop(label, None)  # it failed in an earlier attempt, not now
        except KeyboardInterrupt:
            raise
        except BenchmarkError as error:
            failures[label] = str(error)
        except Exception as error:  # a method's own bug: report it and let the others finish
            failures[label] = f"{type(error).__name__}: {error}"
        if label in failures:
            options.log(f"method {label} failed: {failures[label]}")
            manifest["failures"][label] = failures[label]
        _write_manifest(out_dir, manifest)
    return RunOutcome(out_dir, failures)


def _record_provenance(manifest: dict, name: str, method, out_dir: Path) -> None:
    """Where the method came from, its hyperparameters and capabilities, into run.json before
    it runs, so that a method that fails in fit or predict is traced as well as one that works.

    A folder holding results of the method under other hyperparameters is refused; one where
    it only failed before takes the new ones (fixing a hyperparameter is a resume).
    """
    params = _jsonable(method.get_params())
    entry = manifest["methods"].setdefault(name, {})
    recorded = entry.get("params")
    has_results = any(chunk["method"] == name for chunk in manifest["chunks"])
    if has_results and recorded is not None and recorded != params:
        raise ConfigError(f"{out_dir} holds results of {name!r} with other hyperparameters "
                          f"({recorded}): choose a new --out folder")
    entry.update({"source": registry.source_of(name), "params": params,
                  "capabilities": vars(method.capabilities)})


def _seeds_of(method, seeds: tuple[int, ...]) -> tuple[int, ...]:
    """Training seeds matter only to methods that train: the others run once, with the first."""
    return tuple(seeds) if method.capabilities.needs_training else tuple(seeds[:1])


def _runs_on(method, config: RunConfig, task_set: TaskSet) -> bool:
    """Whether a method runs a task set: `only_trained` task sets skip untrained methods."""
    settings = config.task_sets.get(task_set.name)
    return not getattr(settings, "only_trained", False) or method.capabilities.needs_training


def _instantiate(name: str, config: RunConfig):
    cls = registry.get_method(name)
    params = check_hyperparameters(name, cls, config.methods.get(name, {}))
    try:
        return cls(**params)
    except Exception as error:
        raise ConfigError(f"method {name!r} rejected its hyperparameters: {error}") from None


def _run_method(method, label, seed, data, task_sets, records_path, manifest, out_dir, options) -> dict:
    context = FitContext(device=options.device, seed=seed, progress=options.progress,
                         checkpoints=CheckpointStore(options.checkpoint_dir, log=options.log),
                         retrain=options.retrain, log=options.log)
    # Layer initialisation in plugins often uses torch's global generator: seeding it here
    # makes such methods reproducible and independent of the order methods run in.
    torch.manual_seed(seed)
    started = time.perf_counter()
    try:
        fitted = method.fit(data.background, context)
    except BenchmarkError:
        raise
    except Exception as error:
        raise MethodError(f"fit raised {type(error).__name__}: {error}") from error
    if fitted is not method:
        raise MethodError("fit must return self")
    fit_seconds = time.perf_counter() - started
    started = time.perf_counter()
    bar = tqdm(task_sets, desc=f"{label}: predicting", unit="set", disable=not options.progress,
               leave=False, file=sys.stderr)
    for task_set in bar:
        bar.set_postfix_str(task_set.label)
        episodes = task_set.episodes
        split = getattr(data, task_set.split)
        batch = EpisodeBatch(split.flat_images, episodes.support, episodes.query, split.sha256)
        scores = _checked_scores(method, batch)
        chunk = _records(manifest["run_id"], method.name, seed, task_set, scores)
        _append_chunk(records_path, chunk, manifest, out_dir)
    bar.close()
    return {"fit_seconds": round(fit_seconds, 3), "predict_seconds": round(time.perf_counter() - started, 3),
            "peak_rss_mb": round(peak_rss_mb(), 1)}


def _checked_scores(method, batch: EpisodeBatch) -> np.ndarray:
    try:
        scores = method.predict(batch)
    except BenchmarkError:
        raise
    except Exception as error:
        raise MethodError(f"predict raised {type(error).__name__}: {error}") from error
    return checked_scores(scores, batch)


def _records(run_id: str, method: str, seed: int, task_set: TaskSet, scores: np.ndarray) -> pd.DataFrame:
    episodes = task_set.episodes
    n_episodes, n_queries = episodes.query.shape
    predicted = scores.argmax(axis=-1)  # ties go to the lowest index; true positions are random
    labels = episodes.query_label
    return pd.DataFrame({
        "run_id": run_id, "method": method, "seed": seed, "task_set": task_set.name,
        "split": task_set.split, "protocol": episodes.protocol, "n_way": episodes.n_way,
        "k_shot": episodes.k_shot,
        "episode": np.repeat(np.arange(n_episodes), n_queries),
        "query": np.tile(np.arange(n_queries), n_episodes),
        "label": labels.reshape(-1), "predicted": predicted.reshape(-1),
        "correct": (predicted == labels).reshape(-1).astype(np.int8),
    }, columns=RECORD_COLUMNS)


def _append_chunk(records_path: Path, chunk: pd.DataFrame, manifest: dict, out_dir: Path) -> None:
    """Append a chunk's rows, then list it in run.json: a chunk not listed is not done."""
    text = chunk.to_csv(header=not manifest["chunks"], index=False, lineterminator="\n").encode()
    start = manifest["records_bytes"]
    with open(records_path, "ab") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    first = chunk.iloc[0]
    manifest["chunks"].append({
        "method": str(first["method"]), "seed": int(first["seed"]), "task_set": str(first["task_set"]),
        "n_way": int(first["n_way"]), "k_shot": int(first["k_shot"]), "rows": len(chunk),
        "bytes": [start, start + len(text)], "sha256": hashlib.sha256(text).hexdigest()})
    manifest["records_bytes"] = start + len(text)
    _write_manifest(out_dir, manifest)


def _chunk_id(chunk: dict) -> tuple:
    return (chunk["method"], chunk["seed"], chunk["task_set"], chunk["n_way"], chunk["k_shot"])


def _start_manifest(out_dir, config, method_names, data, task_sets, options, seeds) -> dict:
    """A new manifest, or the previous one of this folder when its config matches (resume)."""
    path = out_dir / "run.json"
    records_path = out_dir / "records.csv"
    config_dict = config.to_dict()
    task_hashes = {f"{t.name}/{t.episodes.n_way}way/{t.episodes.k_shot}shot": t.episodes.ids_sha256
                   for t in task_sets}
    if path.exists():
        previous = read_manifest(out_dir)
        # Method hyperparameters are checked per method (in run_benchmark): adding a
        # method to a run is a resume, not a new run.
        if (_without_methods(previous.get("config", {})) != _without_methods(config_dict)
                or previous.get("task_sets") != task_hashes):
            raise ConfigError(f"{out_dir} holds a run with another config or other episodes: "
                              f"choose a new --out folder")
        recorded = previous.get("data") or {}
        if (recorded.get("background_sha256"), recorded.get("evaluation_sha256")) != (
                data.background.sha256, data.evaluation.sha256):
            raise ConfigError(f"{out_dir} holds a run on other Omniglot data (other sha256): "
                              f"point --data-dir at the data it used, or choose a new --out folder")
        # Keep only chunks whose bytes are intact; drop rows appended after the last chunk
        # that was listed (an append the interruption cut short).
        _, unlisted = verify_records(out_dir, previous)
        if unlisted:
            with open(records_path, "r+b") as handle:
                handle.truncate(previous["records_bytes"])
        previous["methods_requested"] = list(dict.fromkeys([*previous["methods_requested"], *method_names]))
        previous["seeds"] = list(dict.fromkeys([*previous.get("seeds", []), *seeds]))
        options.log(f"resuming {out_dir}: {len(previous['chunks'])} chunks already done"
                    + (f", {unlisted} bytes of an unfinished chunk dropped" if unlisted else ""))
        return previous
    if records_path.exists():
        records_path.unlink()  # rows without a manifest cannot be trusted
    return {
        "format": RUN_FORMAT, "run_id": out_dir.name, "config": config_dict,
        "methods_requested": list(method_names), "seeds": list(seeds),
        "task_sets": task_hashes, "data": {"root": str(data.root), "background_sha256": data.background.sha256,
                                           "evaluation_sha256": data.evaluation.sha256},
        "environment": environment(options.device), "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "methods": {}, "failures": {}, "chunks": [], "records_bytes": 0,
    }


def _without_methods(config_dict: dict) -> dict:
    return {key: value for key, value in config_dict.items() if key != "methods"}


def _write_manifest(out_dir: Path, manifest: dict) -> None:
    write_atomically(out_dir / "run.json", json.dumps(manifest, indent=1) + "\n")


def environment(device: str) -> dict:
    versions = {}
    for package in ("numpy", "pandas", "torch", "matplotlib"):
        module = sys.modules.get(package) or __import__(package)
        versions[package] = module.__version__
    return {
        "python": platform.python_version(), "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(), "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(), "device": device,
        "gpu": torch.cuda.get_device_name() if device == "cuda" else None,
        "versions": versions, "git_commit": git_commit(),
    }


def git_commit() -> str | None:
    root = Path(__file__).resolve().parent.parent
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                                text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (commit + ("+dirty" if dirty else "")) if commit else None


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _jsonable(value):
    return json.loads(json.dumps(value, default=str))

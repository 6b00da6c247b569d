"""Fit each method once per training seed and training split, predict every task set, and save
records as they finish.

A method is fitted on the split its task sets' protocol trains on (tasks/protocols.py: Lake's
background alphabets, or the Vinyals trainval classes), once per split the run needs, and
predicts only the task sets of that split's protocol.

The run folder (benchmark/run_folder.py) is written through one `RunWriter`: each (method,
seed, task set, N) is written to a file of its own and listed in run.json as soon as it is
done, so rerunning into the same folder computes only what is missing, and an interrupted
run resumed gives the same records as one never interrupted.
"""

from __future__ import annotations

import json
import sys
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from benchmark import registry
from benchmark.api import FitContext, SharedComponents, checked_scores
from benchmark.checkpoints import CheckpointStore
from benchmark.shipped_weights import WEIGHTS_DIR, ShippedWeights
from benchmark.config import RunConfig
from benchmark.environment import Environment, peak_rss_mb
from benchmark.errors import BenchmarkError, ConfigError, MethodError
from benchmark.paths import CHECKPOINT_DIR
from benchmark.run_folder import RunFolder, RunWriter
from benchmark.run_manifest import DataEntry, RunManifest, chunk_key, fit_label, task_set_hashes
from tasks.sets import TaskSet, data_split


@dataclass
class RunOptions:
    device: str = "cpu"
    retrain: bool = False
    progress: bool = True
    checkpoint_dir: Path = CHECKPOINT_DIR
    shipped_weights_dir: Path | None = WEIGHTS_DIR  # None: never use shipped weights
    seeds: tuple[int, ...] | None = None  # None: the config's seed
    log: object = field(default=print, repr=False)


@dataclass
class RunOutcome:
    out_dir: Path
    failures: dict[str, str]  # method label -> reason

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
    methods = {name: registry.create_method(name, config.methods.get(name, {})) for name in method_names}
    seeds = tuple(options.seeds or (config.seed,))
    fresh = RunManifest(
        run_id=Path(out_dir).name, config=config.to_dict(), methods_requested=list(method_names),
        seeds=list(seeds), task_sets=task_set_hashes(task_sets),
        data=DataEntry(str(data.root), data.background.sha256, data.evaluation.sha256),
        environment=Environment.capture(options.device), started=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    failures, components = {}, SharedComponents()
    with RunFolder(out_dir).writer(fresh, options.log) as writer:
        for name in method_names:
            for seed in _seeds_of(methods[name], seeds):
                todo = _todo(methods[name], name, seed, config, task_sets, writer, fit_label(name, seed, seeds),
                             options.log)
                for index, (training_split, its_task_sets) in enumerate(_by_training_split(todo).items()):
                    # A fresh instance for each fit but a lone seed's first: nothing fitted for
                    # one seed or training split leaks into another.
                    reuse = len(seeds) == 1 and index == 0
                    method = methods[name] if reuse else registry.create_method(name, config.methods.get(name, {}))
                    label = fit_label(name, seed, seeds, training_split)
                    failure = _run_method(method, name, label, seed, data, training_split, its_task_sets, writer,
                                          options, components)
                    if failure is not None:
                        failures[label] = failure
    return RunOutcome(Path(out_dir), failures)


def _by_training_split(task_sets: list[TaskSet]) -> dict[str, list[TaskSet]]:
    """The task sets grouped by the split their methods are fitted on, in order of appearance."""
    groups: dict[str, list[TaskSet]] = {}
    for task_set in task_sets:
        groups.setdefault(task_set.training_split, []).append(task_set)
    return groups


def _todo(method, name: str, seed: int, config: RunConfig, task_sets, writer: RunWriter, label, log) -> list:
    """The task sets this (method, seed) still has to predict; says why when there are none."""
    applicable = [t for t in task_sets if _runs_on(method, config, t)]
    done = writer.manifest.done()
    todo = [t for t in applicable if chunk_key(name, seed, t.name, t.episodes.n_way, t.episodes.k_shot) not in done]
    if not todo:
        log(f"{label}: all its task sets already done" if applicable else
            f"{label}: no task set of this config applies to it (only_trained task sets skip "
            f"methods that do not train)")
    return todo


def _seeds_of(method, seeds: tuple[int, ...]) -> tuple[int, ...]:
    """Training seeds matter only to methods that train: the others run once, with the first."""
    return tuple(seeds) if method.capabilities.needs_training else tuple(seeds[:1])


def _runs_on(method, config: RunConfig, task_set: TaskSet) -> bool:
    """Whether a method runs a task set: `only_trained` task sets skip untrained methods."""
    settings = config.task_sets.get(task_set.name)
    return not getattr(settings, "only_trained", False) or method.capabilities.needs_training


def _device_of(method, run_device: str) -> str:
    """The run's device for a method that declares `uses_gpu`; the CPU for any other."""
    return run_device if method.capabilities.uses_gpu else "cpu"


def _run_method(method, name: str, label: str, seed: int, data, training_split: str, task_sets, writer: RunWriter,
                options: RunOptions, components: SharedComponents) -> str | None:
    """Fit one (method, seed) on `training_split` and predict its task sets into the run
    folder; the reason when it fails.

    A method's failure is reported and the others go on; Ctrl-C stops the run.
    """
    device = _device_of(method, options.device)
    try:
        writer.record_method(name, registry.source_of(name), _jsonable(method.get_params()),
                             {f.name: getattr(method.capabilities, f.name) for f in fields(method.capabilities)},
                             device)
        timing = _fit_and_predict(method, label, seed, data_split(data, training_split), data, task_sets, writer,
                                  options, device, components)
    except KeyboardInterrupt:
        raise
    except BenchmarkError as error:
        failure = str(error)
    except Exception as error:  # a method's own bug: report it and let the others finish
        failure = f"{type(error).__name__}: {error}"
    else:
        writer.record_outcome(name, label, timing_key(seed, training_split), timing, None)
        return None
    options.log(f"method {label} failed: {failure}")
    writer.record_outcome(name, label, timing_key(seed, training_split), None, failure)
    return failure


def timing_key(seed: int, training_split: str) -> str:
    """Where run.json keeps one fit's times: "SEED/TRAINING_SPLIT", e.g. "0/background"."""
    return f"{seed}/{training_split}"


def _fit_and_predict(method, label, seed, training_split, data, task_sets, writer: RunWriter, options, device,
                     components) -> dict:
    context = FitContext(device=device, seed=seed, progress=options.progress,
                         checkpoints=CheckpointStore(options.checkpoint_dir, log=options.log),
                         retrain=options.retrain, log=options.log, components=components,
                         training_split=training_split.name,
                         shipped_weights=ShippedWeights(options.shipped_weights_dir, log=options.log)
                         if options.shipped_weights_dir is not None else None)
    built_before = set(components.seconds)
    # Layer initialisation in plugins often uses torch's global generator: seeding it here
    # makes such methods reproducible and independent of the order methods run in.
    torch.manual_seed(seed)
    started = time.perf_counter()
    try:
        fitted = method.fit(training_split, context)
    except BenchmarkError:
        raise
    except Exception as error:
        raise MethodError(f"fit raised {type(error).__name__}: {error}") from error
    if fitted is not method:
        raise MethodError("fit must return self")
    built = {key: seconds for key, seconds in components.seconds.items() if key not in built_before}
    writer.record_components(built, label)
    fit_seconds = time.perf_counter() - started - sum(built.values())  # shared parts are timed apart
    started = time.perf_counter()
    bar = tqdm(task_sets, desc=f"{label}: predicting", unit="set", disable=not options.progress,
               leave=False, file=sys.stderr)
    for task_set in bar:
        bar.set_postfix_str(task_set.label)
        batch = task_set.batch(data)
        scores = _predicted(method, batch)
        writer.append(method.name, seed, task_set, scores)
    bar.close()
    timing = {"fit_seconds": round(fit_seconds, 3), "predict_seconds": round(time.perf_counter() - started, 3),
              "peak_rss_mb": round(peak_rss_mb(), 1)}
    weights = (getattr(method, "training_info_", None) or {}).get("weights")
    return dict(timing, weights=weights) if weights else timing  # "trained", "cached" or "shipped"


def _predicted(method, batch) -> np.ndarray:
    try:
        scores = method.predict(batch)
    except BenchmarkError:
        raise
    except Exception as error:
        raise MethodError(f"predict raised {type(error).__name__}: {error}") from error
    return checked_scores(scores, batch)


def _jsonable(value):
    return json.loads(json.dumps(value, default=str))

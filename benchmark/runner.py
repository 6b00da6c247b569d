"""Plan a run's jobs, hand them to an executor, and record what they give back.

A method is fitted on the split its task sets' protocol trains on (tasks/protocols.py: Lake's
background alphabets, or the Vinyals trainval classes), once per training seed and per split
the run needs, and predicts only the task sets of that split's protocol. Each such fit is a
`FitJob` (benchmark/jobs.py); an executor (benchmark/executors/: in this process, or on a Ray
cluster) fits it and predicts its task sets, and reports each result to the `RunRecorder`.

The run folder (benchmark/run_folder.py) is written by this process alone, through one
`RunWriter`: each (method, seed, task set, N) is written to a file of its own and listed in
run.json as soon as it is done, so rerunning into the same folder computes only what is
missing, whichever executor ran the first part, and an interrupted run resumed gives the same
records as one never interrupted.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field, fields
from pathlib import Path

from benchmark import registry
from benchmark.config import RunConfig
from benchmark.environment import Environment
from benchmark.errors import BenchmarkError
from benchmark.executors.local import LocalExecutor
from benchmark.jobs import FitJob, FitSettings, Fitted, device_for
from benchmark.paths import CHECKPOINT_DIR
from benchmark.run_folder import RunFolder, RunWriter
from benchmark.run_manifest import DataEntry, RunManifest, chunk_key, fit_label, task_set_hashes
from benchmark.shipped_weights import WEIGHTS_DIR
from tasks.sets import TaskSet


@dataclass
class RunOptions:
    device: str = "cpu"  # "cpu", "cuda", or "auto" (the executor decides: a GPU where there is one)
    retrain: bool = False
    progress: bool = True
    checkpoint_dir: Path = CHECKPOINT_DIR
    shipped_weights_dir: Path | None = WEIGHTS_DIR  # None: never use shipped weights
    seeds: tuple[int, ...] | None = None  # None: the config's seed
    log: object = field(default=print, repr=False)
    executor: object = None  # None: LocalExecutor(); or benchmark.executors.ray_cluster.RayExecutor


@dataclass
class RunOutcome:
    out_dir: Path
    failures: dict[str, str]  # method label -> reason

    @property
    def exit_code(self) -> int:
        return 1 if self.failures else 0


def run_benchmark(config: RunConfig, method_names: list[str], data, task_sets: list[TaskSet],
                  out_dir: Path, options: RunOptions) -> RunOutcome:
    """Run every method on every task set into out_dir, resuming what is already there."""
    seeds = tuple(options.seeds or (config.seed,))
    settings = FitSettings(checkpoint_dir=options.checkpoint_dir, shipped_weights_dir=options.shipped_weights_dir,
                           retrain=options.retrain, progress=options.progress, log=options.log)
    with options.executor or LocalExecutor() as executor:
        device = executor.resolve_device(options.device)
        fresh = RunManifest(
            run_id=Path(out_dir).name, config=config.to_dict(), methods_requested=list(method_names),
            seeds=list(seeds), task_sets=task_set_hashes(task_sets),
            data=DataEntry(str(data.root), data.background.sha256, data.evaluation.sha256),
            environment=Environment.capture(device, executor.description()),
            started=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
        with RunFolder(out_dir).writer(fresh, options.log) as writer:
            recorder = RunRecorder(writer, options.log)
            executor.run(plan_fits(config, method_names, task_sets, writer, seeds, device, options.log), data,
                         recorder, settings)
    return RunOutcome(Path(out_dir), recorder.failures)


def plan_fits(config: RunConfig, method_names: list[str], task_sets: list[TaskSet], writer: RunWriter,
              seeds: tuple[int, ...], device: str, log) -> list[FitJob]:
    """The fits the run still needs, in the order the in-process executor runs them: method by
    method, seed by seed, training split by training split."""
    jobs = []
    for name in method_names:
        first = registry.create_method(name, config.methods.get(name, {}))
        for seed in _seeds_of(first, seeds):
            todo = _todo(first, name, seed, config, task_sets, writer, fit_label(name, seed, seeds), log)
            for index, (training_split, its_task_sets) in enumerate(_by_training_split(todo).items()):
                # A fresh instance for each fit but a lone seed's first: nothing fitted for
                # one seed or training split leaks into another.
                reuse = len(seeds) == 1 and index == 0
                method = first if reuse else registry.create_method(name, config.methods.get(name, {}))
                jobs.append(FitJob(name, method, seed, training_split, fit_label(name, seed, seeds, training_split),
                                   its_task_sets, device_for(method, device)))
    return jobs


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


class RunRecorder:
    """The executors' one way into the run folder: a job started, built shared parts, scored a
    task set, finished or failed. A method's failure is recorded and the others go on."""

    def __init__(self, writer: RunWriter, log):
        self.writer, self.log = writer, log
        self.failures: dict[str, str] = {}  # fit label -> reason

    def start(self, job: FitJob) -> bool:
        """Record where the method came from and how it is set up, before it runs (so that a
        method that fails is traced as well as one that works); False, with the failure
        recorded, when the folder refuses it."""
        method = job.method
        try:
            self.writer.record_method(job.name, registry.source_of(job.name), _jsonable(method.get_params()),
                                      {f.name: getattr(method.capabilities, f.name)
                                       for f in fields(method.capabilities)}, job.device)
        except BenchmarkError as error:
            self.fail(job, str(error))
            return False
        return True

    def fitted(self, job: FitJob, fitted: Fitted) -> None:
        self.writer.record_components(fitted.components, job.label)

    def predicted(self, job: FitJob, task_set: TaskSet, scores) -> None:
        """Write one task set's records, once: a result an executor got twice is not written again."""
        episodes = task_set.episodes
        if chunk_key(job.method.name, job.seed, task_set.name, episodes.n_way, episodes.k_shot) \
                not in self.writer.manifest.done():
            self.writer.append(job.method.name, job.seed, task_set, scores)

    def finished(self, job: FitJob, timing: dict) -> None:
        self.writer.record_outcome(job.name, job.label, job.timing_key, timing, None)

    def fail(self, job: FitJob, reason: str) -> None:
        self.log(f"method {job.label} failed: {reason}")
        self.writer.record_outcome(job.name, job.label, job.timing_key, None, reason)
        self.failures[job.label] = reason


def _jsonable(value):
    return json.loads(json.dumps(value, default=str))

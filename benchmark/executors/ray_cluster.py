"""Run a run's jobs on a Ray cluster (`--executor ray`), or on a Ray instance started on this
machine and sized to it; only imported when asked for, so the local path never imports Ray.

Jobs: one per fit (method, seed, training split), then one per (fit, task set) prediction,
each submitted as soon as its fit has finished. What a job needs travels through Ray's object
store, never as a path that exists only here: the data (put once), each task set's episodes,
the method's checkpoints from this machine's cache and the shipped weights (weights/), and
the fitted method itself, from its fit to its predictions. Checkpoints a fit trains come back
to this machine's cache; records come back to this process, the run folder's one writer.

Each job asks for `capabilities.cpus` CPUs (at most the largest node's) and, when it runs on
CUDA, one GPU; it sets torch's threads to its CPUs, so jobs sharing a node never
oversubscribe it. A job whose worker process or node dies is run again (RETRIES), and an
object lost with a node is rebuilt by Ray from the job that made it; the run writes each
record once. Ctrl-C cancels this run's jobs on the cluster and leaves a folder to resume.
"""

from __future__ import annotations

import collections
import dataclasses
import os
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import ray
import ray.cloudpickle
import torch
from tqdm import tqdm

from benchmark import jobs
from benchmark.api import SharedComponents
from benchmark.environment import peak_rss_mb
from benchmark.errors import ConfigError
from benchmark.files import write_atomically
from benchmark.threads import usable_cpus

RETRIES = 3  # a job whose worker process or node died is run again, up to this many times
CACHED_METHODS = 8  # fitted methods a worker keeps between predictions (with their embeddings): a
# run's methods predict side by side, and fewer made each worker embed (and 1-NN tabulate) again
# and again (default run, 2 workers: 190 s with 2, against 72 s locally)


class RayExecutor:
    def __init__(self, address: str | None = None, threads: int | None = None, log=print):
        self.address = address or os.environ.get("RAY_ADDRESS") or None
        self.threads = threads  # every job's CPUs and torch threads (`--threads`); None: the method's `cpus`
        self.log = log
        self._connected_here = False

    def __enter__(self) -> RayExecutor:
        if not ray.is_initialized():
            settings = dict(logging_level="ERROR", log_to_driver=False, include_dashboard=False)
            try:
                if self.address:
                    ray.init(address=self.address, **settings)
                else:  # a local instance, sized to the CPUs this process may use
                    # Ray starts its workers at nice 15: beside any other busy process they
                    # would get a fraction of a core (1-NN's first task set: 126 s instead of 9.7 s).
                    os.environ.setdefault("RAY_worker_niceness", "0")
                    ray.init(num_cpus=usable_cpus(), **settings)
            except (ConnectionError, RuntimeError, ValueError) as error:
                where = f"the Ray cluster at {self.address}" if self.address else "a local Ray instance"
                hint = "; a cluster started with `ray start` wants its token and RAY_AUTH_MODE=token (README, " \
                       "Running on a cluster)" if self.address and not os.environ.get("RAY_AUTH_MODE") else ""
                raise ConfigError(f"cannot start or reach {where}: {str(error).splitlines()[0]}{hint}") from None
            self._connected_here = True
        return self

    def __exit__(self, *exc_info) -> None:
        if self._connected_here:
            ray.shutdown()  # stops a local instance; only disconnects from a cluster
            self._connected_here = False

    def description(self) -> str:
        resources = ray.cluster_resources()
        nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
        return (f"ray {self.address or 'local'}: {nodes} node(s), {resources.get('CPU', 0):g} CPUs, "
                f"{resources.get('GPU', 0):g} GPUs")

    def resolve_device(self, requested: str) -> str:
        """The cluster's GPUs decide, not this machine's: "auto" is CUDA where the cluster has one."""
        return jobs.resolve_device(requested, bool(ray.cluster_resources().get("GPU", 0)), "the Ray cluster has no GPU")

    def run(self, fit_jobs: list[jobs.FitJob], data, recorder, settings: jobs.FitSettings) -> None:
        _ship_plugin_code(fit_jobs)
        schedule = _Schedule(fit_jobs, data, recorder, settings, largest_node_cpus(), self.threads, self.log)
        try:
            schedule.run()
        except KeyboardInterrupt:
            schedule.cancel()
            raise
        finally:
            schedule.close()


def largest_node_cpus() -> int:
    return max((int(node["Resources"].get("CPU", 0)) for node in ray.nodes() if node.get("Alive")), default=1)


def _ship_plugin_code(fit_jobs) -> None:
    """Plugins loaded from a file (`--plugin FILE.py`) exist only on this machine: their code
    travels with the methods, by value."""
    for job in fit_jobs:
        module = sys.modules.get(type(job.method).__module__)
        if module is not None and module.__name__.startswith("oneshot_plugin_"):
            ray.cloudpickle.register_pickle_by_value(module)


# ---- what travels to the jobs: folders as {file name: bytes} ----------------------------------

def folder_files(folder: Path | None, pattern: str = "*") -> dict[str, bytes]:
    if folder is None or not Path(folder).is_dir():
        return {}
    return {path.name: path.read_bytes() for path in sorted(Path(folder).glob(pattern)) if path.is_file()}


def write_folder(folder: Path, files: dict[str, bytes]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (folder / name).write_bytes(content)
    return folder


def changed_files(folder: Path, before: dict[str, bytes]) -> dict[str, bytes]:
    return {name: content for name, content in folder_files(folder).items() if before.get(name) != content}


# ---- the jobs, as they run in a worker --------------------------------------------------------

@dataclass
class FitReport:
    fitted: jobs.Fitted | None = None  # without its method, which travels apart
    failure: str | None = None
    checkpoints: dict[str, bytes] = field(default_factory=dict)  # saved by this fit: for the driver's cache
    log: list[str] = field(default_factory=list)
    peak_rss_mb: float = 0.0


@dataclass
class PredictReport:
    scores: object = None
    seconds: float = 0.0
    failure: str | None = None
    peak_rss_mb: float = 0.0


def fit_remotely(job: jobs.FitJob, data, settings: jobs.FitSettings, checkpoints: dict[str, bytes],
                 shipped: dict[str, bytes], threads: int):
    """A fit job in a worker: its checkpoints and shipped weights in a folder of its own, the
    messages it logs and the checkpoints it saves sent back. Returns (fitted method, report)."""
    torch.set_num_threads(threads)
    lines: list[str] = []
    with tempfile.TemporaryDirectory(prefix="oneshot-fit-") as folder:
        cache = write_folder(Path(folder, "checkpoints"), checkpoints)
        weights = write_folder(Path(folder, "weights"), shipped) if shipped else None

        def log(message: str) -> None:  # the driver's paths in place of this worker's
            lines.append(str(message).replace(str(cache), str(settings.checkpoint_dir))
                         .replace(str(weights), str(settings.shipped_weights_dir)))

        here = dataclasses.replace(settings, checkpoint_dir=cache, shipped_weights_dir=weights, progress=False,
                                   log=log)
        try:
            fitted = jobs.fit(job.method, job.seed, job.training_split, data, job.device, here, SharedComponents())
            jobs.probe(fitted.method, job.task_sets[0], data)  # before any prediction job is submitted
        except Exception as error:
            return None, FitReport(failure=jobs.failure_reason(error), log=lines, peak_rss_mb=peak_rss_mb())
        method, fitted.method = fitted.method, None
        return method, FitReport(fitted, None, changed_files(cache, checkpoints), lines, peak_rss_mb())


_fitted_methods: collections.OrderedDict = collections.OrderedDict()  # in each worker process


def _fitted_method(reference):
    """The fitted method behind `reference`, kept for the next predictions in this worker: a
    method's embeddings and distance tables are then computed once per worker, not per task set."""
    key = reference.hex()
    if key not in _fitted_methods:
        _fitted_methods[key] = ray.get(reference)
        while len(_fitted_methods) > CACHED_METHODS:
            _fitted_methods.popitem(last=False)
    _fitted_methods.move_to_end(key)
    return _fitted_methods[key]


def predict_remotely(method_reference: list, task_set, data, threads: int) -> PredictReport:
    """A prediction job in a worker (the fitted method's reference comes in a list, so that Ray
    hands over the reference, not a fresh copy of the method)."""
    torch.set_num_threads(threads)
    try:
        scores, seconds = jobs.predict(_fitted_method(method_reference[0]), task_set, data)
    except Exception as error:
        return PredictReport(failure=jobs.failure_reason(error), peak_rss_mb=peak_rss_mb())
    return PredictReport(scores, seconds, None, peak_rss_mb())


# ---- the driver's side ------------------------------------------------------------------------

@dataclass
class _FitState:
    """One fit job as the driver follows it."""

    job: jobs.FitJob
    method: object = None  # the reference to the fitted method
    fitted: jobs.Fitted | None = None
    waiting: int = 0  # predictions not back yet
    predict_seconds: dict[str, float] = field(default_factory=dict)  # task-set key -> seconds
    peak_rss_mb: float = 0.0
    failed: bool = False


class _Schedule:
    """Submits the fits, then each fit's predictions when it is back; writes results as they come."""

    def __init__(self, fit_jobs, data, recorder, settings: jobs.FitSettings, node_cpus: int, threads, log):
        self.fit_jobs, self.recorder, self.settings, self.log = fit_jobs, recorder, settings, log
        self.node_cpus, self.threads = node_cpus, threads
        self.data = ray.put(data)
        self.shipped = ray.put(folder_files(settings.shipped_weights_dir))
        self.task_sets: dict[int, object] = {}  # id(task set) -> its object reference
        self.pending: dict = {}  # object reference -> (kind, fit state, task set)
        self.progress = _Progress(fit_jobs, settings.progress)

    def run(self) -> None:
        for job in self.fit_jobs:
            if self.recorder.start(job):
                self._submit_fit(_FitState(job))
            else:
                self.progress.skip(job)
        while self.pending:
            [reference], _ = ray.wait(list(self.pending), num_returns=1)
            kind, state, task_set = self.pending.pop(reference)
            try:
                report = ray.get(reference)
            except ray.exceptions.RayError as error:  # its worker or node died RETRIES + 1 times, or similar
                self._fail(state, f"its {kind} job was lost on the Ray cluster ({type(error).__name__}: "
                                  f"{str(error).splitlines()[0][:200]})")
                continue
            if kind == "fit":
                self._fitted(state, report)
            else:
                self._predicted(state, task_set, report)

    def _resources(self, job: jobs.FitJob) -> dict:
        cpus = min(self.threads or job.method.capabilities.cpus, self.node_cpus)
        return dict(num_cpus=cpus, num_gpus=1 if job.device == "cuda" else 0, max_retries=RETRIES)

    def _submit_fit(self, state: _FitState) -> None:
        job, settings = state.job, self.settings
        checkpoints = folder_files(settings.checkpoint_dir, f"{job.method.name}-*.pt")
        resources = self._resources(job)
        method, report = _FIT.options(num_returns=2, **resources).remote(
            dataclasses.replace(job, task_sets=job.task_sets[:1]),  # the first task set, for the probe
            self.data, dataclasses.replace(settings, log=None),  # its paths are this machine's
            checkpoints, self.shipped, resources["num_cpus"])
        state.method = method
        self.pending[report] = ("fit", state, None)

    def _fitted(self, state: _FitState, report: FitReport) -> None:
        for line in report.log:
            self.log(line)
        if report.failure is not None:
            self._fail(state, report.failure)
            return
        if self.settings.checkpoint_dir is not None:  # checkpoints land in this machine's cache
            for name, content in report.checkpoints.items():
                write_atomically(Path(self.settings.checkpoint_dir) / name, content)
        state.fitted, state.peak_rss_mb = report.fitted, report.peak_rss_mb
        self.recorder.fitted(state.job, report.fitted)
        self.progress.done(state.job)
        resources = self._resources(state.job)
        for task_set in state.job.task_sets:
            if id(task_set) not in self.task_sets:
                self.task_sets[id(task_set)] = ray.put(task_set)
            reference = _PREDICT.options(**resources).remote(
                [state.method], self.task_sets[id(task_set)], self.data, resources["num_cpus"])
            self.pending[reference] = ("predict", state, task_set)
            state.waiting += 1
        if not state.waiting:
            self._finish(state)

    def _predicted(self, state: _FitState, task_set, report: PredictReport) -> None:
        state.waiting -= 1
        if state.failed:
            return
        if report.failure is not None:
            self._fail(state, report.failure)
            return
        self.recorder.predicted(state.job, task_set, report.scores)
        state.predict_seconds[jobs.task_set_key(task_set)] = report.seconds
        state.peak_rss_mb = max(state.peak_rss_mb, report.peak_rss_mb)
        self.progress.done(state.job)
        if not state.waiting:
            self._finish(state)

    def _finish(self, state: _FitState) -> None:
        state.method = None  # the fitted method may leave the object store
        self.recorder.finished(state.job, state.fitted.timing(state.predict_seconds, state.peak_rss_mb))

    def _fail(self, state: _FitState, reason: str) -> None:
        """As the local executor does: the fit's remaining predictions are not run."""
        state.failed = True
        for reference, (_, other, _) in list(self.pending.items()):
            if other is state:
                ray.cancel(reference)
                del self.pending[reference]
        self.recorder.fail(state.job, reason)

    def cancel(self) -> None:
        """Ctrl-C: stop this run's jobs on the cluster (finished records stay in the folder)."""
        for reference in self.pending:
            ray.cancel(reference, force=True)
        self.pending.clear()

    def close(self) -> None:
        self.progress.close()


class _Progress:
    """One bar for the whole run: jobs done of all, and per method."""

    def __init__(self, fit_jobs, enabled: bool):
        self.total = collections.Counter()
        for job in fit_jobs:
            self.total[job.name] += 1 + len(job.task_sets)
        self.finished = collections.Counter()
        self.bar = tqdm(total=sum(self.total.values()), desc="jobs", unit="job", disable=not enabled,
                        file=sys.stderr)

    def done(self, job) -> None:
        self.finished[job.name] += 1
        self.bar.update(1)
        self.bar.set_postfix_str(", ".join(f"{name} {self.finished[name]}/{total}"
                                           for name, total in self.total.items()))

    def skip(self, job) -> None:
        self.total[job.name] -= 1 + len(job.task_sets)
        self.bar.total -= 1 + len(job.task_sets)

    def close(self) -> None:
        self.bar.close()


_FIT = ray.remote(fit_remotely)
_PREDICT = ray.remote(predict_remotely)

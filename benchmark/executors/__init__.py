"""Executors run a run's jobs (benchmark/jobs.py) and report each result to the run's
`RunRecorder`; the run folder is written by the driver process alone, whichever runs them.

    local  in this process, one fit after another (the default; never imports Ray)
    ray    on a Ray cluster, or a Ray instance started on this machine (benchmark/executors/ray_cluster.py)

An executor is a context manager (the Ray one connects on entry and disconnects on exit) with
`description()`, `resolve_device(requested)` and `run(jobs, data, recorder, settings)`.
"""

from __future__ import annotations

import importlib

from benchmark.errors import ConfigError

EXECUTORS = ("local", "ray")
RAY_EXTRA = "pip install -e '.[ray]'"


def make_executor(name: str, ray_address: str | None = None, threads: int | None = None, log=print):
    """The executor called `name`: a one-line ConfigError for an unknown one, or for Ray when
    it is not installed. `threads` (`--threads`) is, on Ray, every job's CPUs and torch threads."""
    if name == "local":
        if ray_address:
            raise ConfigError("--ray-address needs --executor ray")
        from benchmark.executors.local import LocalExecutor

        return LocalExecutor()
    if name == "ray":
        try:
            importlib.import_module("ray")
        except ImportError:
            raise ConfigError(f"--executor ray needs Ray, an optional extra: {RAY_EXTRA}") from None
        from benchmark.executors.ray_cluster import RayExecutor

        return RayExecutor(ray_address, threads, log=log)
    raise ConfigError(f"unknown executor {name!r}: use one of {', '.join(EXECUTORS)}")

"""The machine a run ran on: versions, CPU, device, commit and memory, for run.json."""

from __future__ import annotations

import os
import platform
import resource
import subprocess
import sys
from dataclasses import dataclass, field

from benchmark.paths import PROJECT_ROOT

PACKAGES = ("numpy", "pandas", "torch", "matplotlib")


@dataclass(frozen=True)
class Environment:
    python: str | None = None
    platform: str | None = None
    processor: str | None = None
    cpu_count: int | None = None
    torch_threads: int | None = None
    omp_wait_policy: str | None = None  # PASSIVE unless the user's environment said otherwise (threads.py)
    device: str | None = None
    gpu: str | None = None
    versions: dict[str, str] = field(default_factory=dict)
    git_commit: str | None = None
    executor: str | None = None  # "local", or the Ray cluster the jobs ran on (benchmark/executors/)

    @classmethod
    def capture(cls, device: str, executor: str = "local") -> Environment:
        import torch

        versions = {}
        for package in PACKAGES:
            module = sys.modules.get(package) or __import__(package)
            versions[package] = module.__version__
        return cls(python=platform.python_version(), platform=platform.platform(),
                   processor=platform.processor() or platform.machine(), cpu_count=os.cpu_count(),
                   torch_threads=torch.get_num_threads(),
                   omp_wait_policy=os.environ.get("OMP_WAIT_POLICY"), device=device,
                   gpu=torch.cuda.get_device_name() if device == "cuda" else None,
                   versions=versions, git_commit=git_commit(), executor=executor)


def git_commit() -> str | None:
    """The project's commit, with "+dirty" when tracked files were changed since."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=PROJECT_ROOT, capture_output=True,
                                text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=PROJECT_ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return (commit + ("+dirty" if dirty else "")) if commit else None


def peak_rss_mb() -> float:
    """The most memory this process has held so far, in MB."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

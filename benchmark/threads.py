"""How many threads the harness's torch runs, and how they wait.

Two rules, both measured on 2 cores (perf/README.md, "A busy machine"):

- **As many threads as CPUs this process may use**: the CPUs of its affinity mask, bounded by
  its cgroup's CPU quota (a container started with `--cpus=1` sees every core of the host in
  `os.cpu_count()` but gets one core's time), or an explicit `--threads`. More threads than
  that only take turns on the same cores.
- **Idle threads sleep when the CPUs are already busy.** torch's OpenMP threads wait by
  spinning for a while: on a quiet machine that is fastest, but beside other CPU-bound
  processes they burn the time slices the working threads need. Two protonet trainings side
  by side took 1.23 s a step each (about 0.17 s alone), 0.27 s each with
  `OMP_WAIT_POLICY=PASSIVE`: a fair share. On a quiet machine PASSIVE costs, though (siamese
  0.052-0.081 s a step against 0.032-0.037, softmax_transfer 1.2-1.4 times slower), so the
  command line sets it only when other processes are running when it starts (`busy_cpus`).
  OpenMP reads the variable when torch loads, so this happens first thing, and a value
  already in the environment is kept.
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")


def busy_cpus(samples: int = 3, interval: float = 0.01, loadavg: Path = Path("/proc/loadavg")) -> int:
    """Processes running now besides this one: the fewest of a few readings of the kernel's count
    of runnable tasks (/proc/loadavg's fourth field, "running/total"), less this process; 0 where
    there is no such file."""
    counts = []
    for _ in range(samples):
        try:
            counts.append(int(loadavg.read_text().split()[3].split("/")[0]))
        except (OSError, ValueError, IndexError):
            return 0
        time.sleep(interval)
    return max(0, min(counts) - 1)


def prefer_passive_waiting(busy: int | None = None) -> str | None:
    """Ask OpenMP to put idle threads to sleep when other processes are busy (`busy`, default
    `busy_cpus()`); only effective before torch is first imported. Returns the policy in force."""
    if "OMP_WAIT_POLICY" not in os.environ and (busy_cpus() if busy is None else busy) > 0:
        os.environ["OMP_WAIT_POLICY"] = "PASSIVE"
    return os.environ.get("OMP_WAIT_POLICY")


def cpu_quota(cgroup_root: Path = CGROUP_ROOT) -> float | None:
    """CPUs' worth of time the cgroup allows (cgroup v2 `cpu.max`, or v1's cfs files), None if unbounded."""
    try:
        v2 = cgroup_root / "cpu.max"
        if v2.exists():
            quota, period = v2.read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        quota = int((cgroup_root / "cpu" / "cpu.cfs_quota_us").read_text())
        period = int((cgroup_root / "cpu" / "cpu.cfs_period_us").read_text())
        return None if quota <= 0 else quota / period
    except (OSError, ValueError, ZeroDivisionError):
        return None  # no cgroup files, or unreadable ones: nothing bounds us


def usable_cpus(cgroup_root: Path = CGROUP_ROOT) -> int:
    """The CPUs of this process's affinity mask, bounded by the cgroup quota (rounded down, at least 1)."""
    try:
        cpus = len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity on this platform (macOS)
        cpus = os.cpu_count() or 1
    quota = cpu_quota(cgroup_root)
    if quota is not None:
        cpus = min(cpus, max(1, math.floor(quota)))
    return max(1, cpus)


def set_threads(requested: int | None = None) -> int:
    """Set torch's intra-op threads to `requested`, or to `usable_cpus()` when None; returns the count."""
    import torch

    threads = requested if requested is not None else usable_cpus()
    torch.set_num_threads(threads)
    return threads

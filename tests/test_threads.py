"""Thread discipline: torch's threads follow an explicit limit, the affinity mask and the cgroup quota."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from benchmark import threads

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture
def restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def test_an_explicit_limit_is_what_torch_runs(restore_threads):
    assert threads.set_threads(1) == 1 and torch.get_num_threads() == 1
    assert threads.set_threads(3) == 3 and torch.get_num_threads() == 3


def test_without_a_limit_torch_gets_the_usable_cpus(restore_threads, monkeypatch):
    monkeypatch.setattr(threads, "usable_cpus", lambda: 1)
    assert threads.set_threads() == 1 and torch.get_num_threads() == 1


@pytest.mark.parametrize("files,quota", [
    ({"cpu.max": "max 100000\n"}, None),
    ({"cpu.max": "150000 100000\n"}, 1.5),
    ({"cpu.max": "50000 100000\n"}, 0.5),
    ({"cpu/cpu.cfs_quota_us": "-1\n", "cpu/cpu.cfs_period_us": "100000\n"}, None),
    ({"cpu/cpu.cfs_quota_us": "300000\n", "cpu/cpu.cfs_period_us": "100000\n"}, 3.0),
    ({"cpu.max": "garbage\n"}, None),
    ({}, None),
])
def test_cgroup_quota_is_read_from_v2_and_v1_files(tmp_path, files, quota):
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    assert threads.cpu_quota(tmp_path) == quota


def test_usable_cpus_are_the_affinity_bounded_by_the_quota_rounded_down(tmp_path, monkeypatch):
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3})
    assert threads.usable_cpus(tmp_path) == 4  # no cgroup files: the affinity mask
    (tmp_path / "cpu.max").write_text("250000 100000\n")
    assert threads.usable_cpus(tmp_path) == 2  # 2.5 CPUs of time: 2 threads, not 3 taking turns
    (tmp_path / "cpu.max").write_text("20000 100000\n")
    assert threads.usable_cpus(tmp_path) == 1  # a fifth of a CPU: still one thread


def test_idle_threads_sleep_only_when_other_processes_are_busy(monkeypatch):
    monkeypatch.delenv("OMP_WAIT_POLICY", raising=False)
    assert threads.prefer_passive_waiting(busy=0) is None and "OMP_WAIT_POLICY" not in os.environ
    assert threads.prefer_passive_waiting(busy=2) == "PASSIVE" == os.environ["OMP_WAIT_POLICY"]
    monkeypatch.setenv("OMP_WAIT_POLICY", "ACTIVE")
    assert threads.prefer_passive_waiting(busy=2) == "ACTIVE"  # the user's choice is kept


@pytest.mark.parametrize("text,busy", [("0.5 0.4 0.3 1/120 999\n", 0), ("2.0 1.0 0.5 3/120 999\n", 2),
                                       ("garbage\n", 0)])
def test_busy_cpus_reads_the_runnable_count_less_this_process(tmp_path, text, busy):
    (tmp_path / "loadavg").write_text(text)
    assert threads.busy_cpus(samples=2, interval=0, loadavg=tmp_path / "loadavg") == busy


def test_a_run_records_its_threads_and_passive_waiting(omniglot_dir, tmp_path):
    out = tmp_path / "run"
    env = dict(os.environ, OMP_WAIT_POLICY="PASSIVE")  # kept as given (whether the CPUs were busy or not)
    result = subprocess.run(
        [sys.executable, str(ROOT / "run_benchmark.py"), "--methods", "random", "--threads", "1", "--quiet",
         "--data-dir", str(omniglot_dir), "--out", str(out), "--set", "task_sets.cross.episodes=5",
         "--set", "task_sets.cross.n_way=[5]", "--set", "task_sets.within.episodes=5",
         "--set", "task_sets.within.n_way=[5]"],
        cwd=ROOT, capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0, result.stderr
    environment = json.loads((out / "run.json").read_text())["environment"]
    assert environment["torch_threads"] == 1 and environment["omp_wait_policy"] == "PASSIVE"

"""What the hand-run benchmarks of issue 9 share: the machine's facts, the default task sets,
and a method fitted the way `run_benchmark.py` fits it (trained weights from the checkpoint
cache under results/checkpoints/ when they are there, as a default run would use them).

Not a benchmark itself; the scripts beside it import it.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmark.api import EpisodeBatch, FitContext  # noqa: E402
from benchmark.checkpoints import CheckpointStore  # noqa: E402
from benchmark.config import check_hyperparameters, load_config  # noqa: E402
from benchmark.data import load_omniglot, official_runs_zip  # noqa: E402
from benchmark.registry import get_method  # noqa: E402
from tasks.official import official_episode_set  # noqa: E402
from tasks.sets import resolve_task_sets  # noqa: E402

DEFAULT_CONFIG = ROOT / "configs" / "default.yaml"
# The evaluation task sets every method runs (cross_background is for trained methods only).
EVALUATION_TASK_SETS = ("cross", "within", "official")


def load_average() -> float:
    """The 1-minute load average: on a shared 2-core machine, read every timing beside it."""
    return round(os.getloadavg()[0], 2)


def machine() -> dict:
    """CPU model, cores, torch threads, versions and the commit: printed with every result."""
    model = platform.processor() or platform.machine()
    try:
        for line in subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout.splitlines():
            if line.startswith("Model name:"):
                model = line.split(":", 1)[1].strip()
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                                text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = None
    return {"cpu": model, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "torch": torch.__version__, "python": platform.python_version(), "commit": commit,
            "date": time.strftime("%Y-%m-%d %H:%M:%S %z")}


def load_data(data_dir: str | None):
    if not data_dir:
        sys.exit("error: set OMNIGLOT_DIR (or pass --data-dir) to the Omniglot folder")
    return load_omniglot(data_dir, download=False, progress=False)


def task_sets(config, data, names=EVALUATION_TASK_SETS) -> list:
    """The config's task sets of these names, generated exactly as the runner generates them."""
    def official_runs():
        return official_episode_set(official_runs_zip(data.root, download=False), data.evaluation)

    return [t for t in resolve_task_sets(config, data, official_runs) if t.name in names]


def batch_of(task_set, data) -> EpisodeBatch:
    """The EpisodeBatch the runner hands `predict` for this task set."""
    split = getattr(data, task_set.split)
    episodes = task_set.episodes
    return EpisodeBatch(split.flat_images, episodes.support, episodes.query, split.sha256)


def fitted_method(name: str, config, data, device: str = "cpu",
                  checkpoint_dir: Path = ROOT / "results" / "checkpoints"):
    """The method with the config's hyperparameters, fitted as the runner fits it.

    Trained methods load their weights from `checkpoint_dir` when a checkpoint of the same
    key is there (a default run leaves one), and otherwise train and save it, as the runner does.
    """
    cls = get_method(name)
    method = cls(**check_hyperparameters(name, cls, config.methods.get(name, {})))
    log = lambda message: print(message, file=sys.stderr)  # noqa: E731
    context = FitContext(device=device, seed=config.seed, progress=False,
                         checkpoints=CheckpointStore(checkpoint_dir, log=log), log=log)
    torch.manual_seed(config.seed)  # as the runner does before fit
    return method.fit(data.background, context)


def default_config(overrides=()):
    return load_config(DEFAULT_CONFIG, list(overrides))

"""What the hand-run benchmarks of issue 9 share: the machine's facts, the default task sets,
and a method fitted the way `run_benchmark.py` fits it (trained weights from the checkpoint
cache under results/checkpoints/ when they are there, as a default run would use them).

Not a benchmark itself; the scripts beside it import it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmark.api import EpisodeBatch, FitContext  # noqa: E402
from benchmark.checkpoints import CheckpointStore  # noqa: E402
from benchmark.config import check_hyperparameters, load_config  # noqa: E402
from benchmark.data import load_omniglot, official_runs_zip  # noqa: E402
from benchmark.registry import get_method  # noqa: E402
from tasks import episodes as episode_sets  # noqa: E402
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


def print_result(result: dict, json_path: str | None) -> int:
    """Print the result as one JSON line, and write the same line to `json_path` when given.

    Returns 0, the script's exit status.
    """
    text = json.dumps(result)
    print(text)
    if json_path:
        Path(json_path).write_text(text + "\n", encoding="utf-8")
    return 0


def accuracy(method, split, episodes) -> float:
    """Per cent of the episodes' queries `method` classifies right (2 decimals)."""
    batch = EpisodeBatch(split.flat_images, episodes.support, episodes.query, split.sha256)
    return round(float(np.mean(method.predict(batch).argmax(-1) == episodes.query_label)) * 100, 2)


def configured_method(name: str, config):
    """The method, unfitted, with the config's hyperparameters (checked as the runner checks them)."""
    cls = get_method(name)
    return cls(**check_hyperparameters(name, cls, config.methods.get(name, {})))


def load_data(data_dir: str | None):
    if not data_dir:
        sys.exit("error: set OMNIGLOT_DIR (or pass --data-dir) to the Omniglot folder")
    return load_omniglot(data_dir, download=False, progress=False)


def task_sets(config, data, names=EVALUATION_TASK_SETS) -> list:
    """The config's task sets of these names, generated exactly as the runner generates them."""
    def official_runs():
        return official_episode_set(official_runs_zip(data.root, download=False), data.evaluation)

    return [t for t in resolve_task_sets(config, data, official_runs) if t.name in names]


def evaluation_sets(config, data, n_way: int) -> dict:
    """The config's `cross` and `within` episodes at this N (1-shot) on the evaluation split, and
    the official runs: the same episodes `run_benchmark.py` scores at that N."""
    evaluation = data.evaluation
    sets = {}
    for name in ("cross", "within"):
        task = config.task_sets[name]
        sets[f"{name}_{n_way}way"] = episode_sets.generate(
            evaluation.alphabet, evaluation.sha256, task.protocol, n_way, 1, task.n_query,
            task.episodes, task.seed)
    sets["official"] = official_episode_set(official_runs_zip(data.root, download=False), evaluation)
    return sets


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
    method = configured_method(name, config)
    log = lambda message: print(message, file=sys.stderr)  # noqa: E731
    context = FitContext(device=device, seed=config.seed, progress=False,
                         checkpoints=CheckpointStore(checkpoint_dir, log=log), log=log)
    torch.manual_seed(config.seed)  # as the runner does before fit
    return method.fit(data.background, context)


def training_arguments(description: str) -> argparse.ArgumentParser:
    """The options every train-and-score script takes (it adds its own after these)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--data-dir", default=os.environ.get("OMNIGLOT_DIR"))
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the target machine has 2 cores)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=None, help="training seed (default: the config's)")
    parser.add_argument("--json", default=None, help="also write the result here")
    parser.add_argument("--quiet", action="store_true")
    return parser


def training_setup(args, method_name: str) -> tuple:
    """(config, unfitted method, training seed, data) from the options of `training_arguments`;
    sets torch's thread count first."""
    torch.set_num_threads(args.threads)
    config = load_config(args.config, args.overrides)
    method = configured_method(method_name, config)
    seed = config.seed if args.seed is None else args.seed
    return config, method, seed, load_omniglot(args.data_dir, download=False, progress=False)


def default_config(overrides=()):
    return load_config(DEFAULT_CONFIG, list(overrides))

"""What the hand-run perf/ scripts share: the machine's facts, the one-line result, the data
and the config (full size, or tiny), the default task sets, and a method fitted the way
`run_benchmark.py` fits it (trained weights from the checkpoint cache under
results/checkpoints/ when they are there, as a default run would use them).

The project is used through its public namespace only (`import benchmark`). Not a
measurement itself: the scripts beside it import it (`python perf/NAME.py` puts perf/ first
on sys.path).

Every script takes `--tiny`: a few seconds on a CPU (a few episodes, a few training steps,
small networks; checkpoints in a temporary folder), to check that the script still runs,
not to measure anything. `--synthetic` uses `benchmark.synthetic_omniglot()` instead of the
data in $OMNIGLOT_DIR (it has no official runs, so the `official` task set is left out).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

import benchmark

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = ROOT / "configs" / "default.yaml"
CHECKPOINTS = ROOT / "results" / "checkpoints"  # where a default run leaves its trained weights
# The evaluation task sets every method runs (cross_background is for trained methods only).
EVALUATION_TASK_SETS = ("cross", "within", "official")

# --tiny: every task set (but the official runs) shrunk to these, and each trained method to
# a few steps of a small network that still validates (one held-out alphabet).
TINY_WAYS = (2, 5)
TINY_EPISODES = 4
TINY_METHODS = {
    "siamese": {"architecture": "compact", "channels": 8, "steps": 4, "batch_images": 16, "warmup_steps": 0,
                "layer_learning_rates": [], "validation_alphabets": 1, "validation_episodes": 4,
                "validate_every": 2, "compile": False},
    "protonet": {"steps": 4, "train_ways": 5, "train_queries": 2, "channels": 8, "precision": "fp32",
                 "validation_alphabets": 1, "validation_episodes": 4, "validate_every": 2},
    "softmax_transfer": {"steps": 4, "channels": 8, "batch_size": 16, "validation_alphabets": 1,
                         "validate_every": 2, "finetune_steps": 2},
    "matching": {"steps": 4, "train_ways": 5, "train_queries": 2, "channels": 8, "precision": "fp32",
                 "validation_alphabets": 1, "validation_episodes": 4, "validate_every": 2},
    "relation": {"steps": 4, "train_ways": 5, "train_queries": 2, "channels": 8, "precision": "fp32",
                 "validation_alphabets": 1, "validation_episodes": 4, "validate_every": 2},
    "maml": {"steps": 4, "train_ways": 5, "meta_batch": 2, "channels": 8, "validation_alphabets": 1,
             "validation_episodes": 4, "validate_every": 2},
}
# Temporary folders (checkpoints of --tiny runs): removed when the process exits.
SCRATCH_FOLDERS: list[tempfile.TemporaryDirectory] = []


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
    """Print the result as one JSON line (with the machine's facts, when the script did not add
    them), and write the same line to `json_path` when given.

    Returns 0, the script's exit status.
    """
    text = json.dumps({**result, "machine": result.get("machine") or machine()})
    print(text)
    if json_path:
        Path(json_path).write_text(text + "\n", encoding="utf-8")
    return 0


def log(message: str) -> None:
    """Progress and method messages go to stderr: stdout holds the result line only."""
    print(message, file=sys.stderr, flush=True)


# ---- data and config -----------------------------------------------------------------------

def add_data_options(parser: argparse.ArgumentParser) -> None:
    """--data-dir, --synthetic and --tiny, which every script takes."""
    parser.add_argument("--data-dir", default=os.environ.get("OMNIGLOT_DIR"),
                        help="the Omniglot folder (default: $OMNIGLOT_DIR)")
    parser.add_argument("--synthetic", action="store_true",
                        help="benchmark.synthetic_omniglot() instead of the real data (no official runs)")
    parser.add_argument("--tiny", action="store_true",
                        help="a few seconds on a CPU: tiny task sets and training, checkpoints in a "
                             "temporary folder; checks the script, measures nothing (--set still wins)")


def load_data(args):
    """The real data (--data-dir or $OMNIGLOT_DIR), or synthetic data with --synthetic."""
    if args.synthetic:
        return benchmark.synthetic_omniglot()
    if not args.data_dir:
        sys.exit("error: set OMNIGLOT_DIR (or pass --data-dir) to the Omniglot folder, or pass --synthetic")
    return benchmark.load_omniglot(args.data_dir, download=False, progress=False)


def run_config(args, path=DEFAULT_CONFIG, overrides=()) -> benchmark.RunConfig:
    """The config with its overrides; shrunk by --tiny (where no override set the same key), and
    without the official runs on --synthetic data."""
    config = benchmark.load_config(path, list(overrides))
    if not (args.tiny or args.synthetic):
        return config
    raw = config.to_dict()
    if args.synthetic:
        raw["task_sets"] = {name: task for name, task in raw["task_sets"].items() if task["protocol"] != "official"}
    if args.tiny:
        overridden = {override.partition("=")[0].strip() for override in overrides}

        def shrink(section: dict, prefix: str, values: dict) -> None:
            section.update({k: v for k, v in values.items() if f"{prefix}.{k}" not in overridden})

        for name, task in raw["task_sets"].items():
            if task["protocol"] != "official":
                shrink(task, f"task_sets.{name}", {"n_way": list(TINY_WAYS), "episodes": TINY_EPISODES})
        for name, params in TINY_METHODS.items():
            raw["methods"][name] = dict(raw["methods"].get(name, {}))
            shrink(raw["methods"][name], f"methods.{name}", params)
    return benchmark.config_from_dict(raw, source=f"{path} ({'tiny' if args.tiny else 'synthetic'})")


def with_task_sets(config: benchmark.RunConfig, task_sets: dict) -> benchmark.RunConfig:
    """The same config with other task sets (name -> its settings as in the YAML file)."""
    return benchmark.config_from_dict(dict(config.to_dict(), task_sets=task_sets))


def task_sets(config, data, names=EVALUATION_TASK_SETS) -> list:
    """The config's task sets of these names, generated exactly as the runner generates them."""
    chosen = {name: task for name, task in config.to_dict()["task_sets"].items() if name in names}
    return benchmark.resolve_task_sets(with_task_sets(config, chosen), data, download=False)


def evaluation_sets(config, data, n_way: int) -> dict:
    """The config's `cross` and `within` task sets at this N and the official runs (when the
    config has them): the same episodes `run_benchmark.py` scores at that N. Keyed
    `cross_20way`, `within_20way`, `official`."""
    chosen = {}
    for name, task in config.to_dict()["task_sets"].items():
        if name in ("cross", "within"):
            chosen[name] = dict(task, n_way=[n_way])
        elif name == "official":
            chosen[name] = task
    resolved = benchmark.resolve_task_sets(with_task_sets(config, chosen), data, download=False)
    return {(t.name if t.name == "official" else f"{t.name}_{n_way}way"): t for t in resolved}


def accuracy(method, task_set, data) -> float:
    """Per cent of the task set's queries `method` classifies right (2 decimals)."""
    scores = method.predict(task_set.batch(data))
    return round(float(np.mean(scores.argmax(-1) == task_set.episodes.query_label)) * 100, 2)


# ---- methods -------------------------------------------------------------------------------

def scratch_folder(prefix: str) -> str:
    """A new temporary folder, removed when the process exits."""
    SCRATCH_FOLDERS.append(tempfile.TemporaryDirectory(prefix=prefix))
    return SCRATCH_FOLDERS[-1].name


def checkpoint_store(args) -> benchmark.CheckpointStore:
    """results/checkpoints/ (a default run's weights, reused as the runner reuses them), or with
    --tiny a temporary folder, removed when the process exits."""
    return benchmark.CheckpointStore(scratch_folder("perf-checkpoints-") if args.tiny else CHECKPOINTS, log=log)


def fit_context(device: str, seed: int, checkpoints=None, progress: bool = False, **fields) -> benchmark.FitContext:
    """The FitContext the runner builds; messages go to stderr unless `log` is given."""
    fields.setdefault("log", log)
    return benchmark.FitContext(device=device, seed=seed, progress=progress, checkpoints=checkpoints, **fields)


def fitted_method(name: str, config, data, checkpoints: benchmark.CheckpointStore, device: str = "cpu"):
    """The method with the config's hyperparameters, fitted as the runner fits it.

    Trained methods load their weights from `checkpoints` when a checkpoint of the same key is
    there (a default run leaves one in results/checkpoints/), and otherwise train and save it.
    """
    method = benchmark.create_method(name, config.methods.get(name, {}))
    torch.manual_seed(config.seed)  # as the runner does before fit
    return method.fit(data.background, fit_context(device, config.seed, checkpoints))


WARMUP_STEPS = 2


def fit_without_validation(name: str, params: dict, background, device: str, seed: int, steps: int) -> tuple:
    """(method, training seconds by the loop's own clock, CPU seconds of the fit) of a fit of
    `steps` steps without validation."""
    method = benchmark.create_method(name, dict(params, steps=steps, validation_alphabets=0))
    torch.manual_seed(seed)
    cpu_started = time.process_time()
    method.fit(background, fit_context(device, seed))
    info = method.training_info_
    return method, info["seconds_per_step"] * info["steps"], time.process_time() - cpu_started


def time_training_steps(name: str, params: dict, background, device: str, seed: int, steps: int) -> dict:
    """Seconds per training step of method `name`: a fit of 2 + `steps` steps minus a fit of 2.

    Without validation, so this is the cost of the steps alone; the difference cancels the
    fixed costs (building the model, warming up), and an untimed fit first takes the one-time
    costs of the process's first fit. `precision` is the trained method's (protonet picks bf16
    where the CPU computes it natively; the others train in fp32 on a CPU).
    """
    fit_without_validation(name, params, background, device, seed, WARMUP_STEPS)
    _, short_wall, short_cpu = fit_without_validation(name, params, background, device, seed, WARMUP_STEPS)
    method, long_wall, long_cpu = fit_without_validation(name, params, background, device, seed,
                                                          WARMUP_STEPS + steps)
    return {"steps_timed": steps, "wall_per_step": round((long_wall - short_wall) / steps, 4),
            "cpu_per_step": round((long_cpu - short_cpu) / steps, 4), "fixed_wall": round(short_wall, 3),
            "precision": getattr(method, "training_precision_", "fp32")}


def training_arguments(description: str) -> argparse.ArgumentParser:
    """The options every train-and-score script takes (it adds its own after these)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--config", default=str(DEFAULT_CONFIG.relative_to(ROOT)))
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    add_data_options(parser)
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
    config = run_config(args, args.config, args.overrides)
    method = benchmark.create_method(method_name, config.methods.get(method_name, {}))
    seed = config.seed if args.seed is None else args.seed
    return config, method, seed, load_data(args)

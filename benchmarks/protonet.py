"""Train `protonet` once (no checkpoint cache), time it, and score it on the default episodes.

    python benchmarks/protonet.py                                   # the default config, 2 threads
    python benchmarks/protonet.py --set methods.protonet.steps=500 --set methods.protonet.rotations=false
    python benchmarks/protonet.py --time-steps 30                   # time training steps only

Reports the wall-clock and CPU time of training and per step, the load average before and
after (the CPU may be shared: read times together with the load), the validation curve, and
accuracy on the default config's 20-way `cross` and `within` episodes (the same episodes
`run_benchmark.py` scores) and on the official runs. Prints one JSON object at the end (also
written to --json). Run by hand, not by pytest.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmark.api import EpisodeBatch, FitContext  # noqa: E402
from benchmark.config import check_hyperparameters, load_config  # noqa: E402
from benchmark.data import load_omniglot, official_runs_zip  # noqa: E402
from benchmark.registry import get_method  # noqa: E402
from tasks import episodes as episode_sets  # noqa: E402
from tasks.official import official_episode_set  # noqa: E402


def load_average() -> float:
    return round(os.getloadavg()[0], 2)


def accuracy(method, split, episodes) -> float:
    batch = EpisodeBatch(split.flat_images, episodes.support, episodes.query, split.sha256)
    return round(float(np.mean(method.predict(batch).argmax(-1) == episodes.query_label)) * 100, 2)


def time_steps(method, background, device: str, steps: int, seed: int) -> dict:
    """Seconds per training step (wall and CPU), after two warm-up steps, without validation."""
    from benchmark.training import split_background

    timed = type(method)(**dict(method.get_params(), steps=steps + 2, validation_alphabets=0))
    train, _ = split_background(background, method.validation_alphabets)
    marks = {}

    def log(message):
        pass

    original = timed._lr_factor

    def marking_factor(step):  # called once per optimizer step: the clock starts after warm-up
        if step == 2:
            marks["wall"], marks["cpu"] = time.perf_counter(), time.process_time()
        return original(step)

    timed._lr_factor = marking_factor
    timed.fit(train, FitContext(device=device, seed=seed, progress=False, checkpoints=None, log=log))
    wall, cpu = time.perf_counter() - marks["wall"], time.process_time() - marks["cpu"]
    return {"steps_timed": steps, "wall_per_step": round(wall / steps, 4),
            "cpu_per_step": round(cpu / steps, 4), "precision": timed.training_precision_}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--data-dir", default=os.environ.get("OMNIGLOT_DIR"))
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the target machine has 2 cores)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--ways", type=int, default=20)
    parser.add_argument("--seed", type=int, default=None, help="training seed (default: the config's)")
    parser.add_argument("--time-steps", type=int, default=0, help="only time this many training steps")
    parser.add_argument("--json", default=None, help="also write the result here")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = load_config(args.config, args.overrides)
    cls = get_method("protonet")
    params = check_hyperparameters("protonet", cls, config.methods.get("protonet", {}))
    method = cls(**params)
    seed = config.seed if args.seed is None else args.seed
    data = load_omniglot(args.data_dir, download=False, progress=False)
    result = {"params": method.get_params(), "threads": args.threads, "device": args.device,
              "seed": seed, "load_before": load_average()}
    if args.time_steps:
        result.update(time_steps(method, data.background, args.device, args.time_steps, seed))
        result["load_after"] = load_average()
        return report(result, args.json)

    evaluation = data.evaluation
    sets = {}
    for name in ("cross", "within"):
        task = config.task_sets[name]
        sets[f"{name}_{args.ways}way"] = episode_sets.generate(
            evaluation.alphabet, evaluation.sha256, task.protocol, args.ways, 1, task.n_query,
            task.episodes, task.seed)
    sets["official"] = official_episode_set(official_runs_zip(data.root, download=False), evaluation)
    context = FitContext(device=args.device, seed=seed, progress=not args.quiet, checkpoints=None,
                         log=lambda message: print(message, file=sys.stderr))
    torch.manual_seed(seed)  # as the runner does
    started_wall, started_cpu = time.perf_counter(), time.process_time()
    method.fit(data.background, context)
    fit_wall, fit_cpu = time.perf_counter() - started_wall, time.process_time() - started_cpu
    info = method.training_info_
    result.update(fit_seconds=round(fit_wall, 1), fit_cpu_seconds=round(fit_cpu, 1),
                  steps=info["steps"], wall_per_step=round(fit_wall / info["steps"], 4),
                  cpu_per_step=round(fit_cpu / info["steps"], 4), load_after_fit=load_average(),
                  precision=method.training_precision_, best_step=info.get("best_step"),
                  best_validation=info.get("best_validation_accuracy"),
                  validation_history=info.get("validation_history"))
    started = time.perf_counter()
    result["accuracy"] = {name: accuracy(method, evaluation, episodes) for name, episodes in sets.items()}
    result["predict_seconds"] = round(time.perf_counter() - started, 1)
    return report(result, args.json)


def report(result: dict, json_path: str | None) -> int:
    text = json.dumps(result)
    print(text)
    if json_path:
        Path(json_path).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())

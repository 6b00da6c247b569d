"""Train the `siamese` method once (no checkpoint cache) and score it on the default episodes.

Reports training time (wall and this process's CPU time), time per step, the machine's
load, and accuracy on the default config's 20-way `cross` and `within` episodes and on the
official runs (the same episodes `run_benchmark.py` scores), plus 5-shot within-alphabet
20-way under each k-shot aggregation.

    python benchmarks/siamese_cpu.py --threads 2                      # the default config
    python benchmarks/siamese_cpu.py --set methods.siamese.steps=500 --set methods.siamese.pairing=koch

Prints one JSON object at the end (also written to --json if given). Run by hand; the CPU
may be shared, so read the time per step together with the load printed beside it. On a
loaded machine two torch threads can be many times slower than one (each parallel operation
waits for a descheduled thread): `--threads 1` with `fit_cpu_seconds` close to `fit_seconds`
is then the cleanest timing, and an upper bound for a quiet 2-core machine.
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="configs/default.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--data-dir", default=os.environ.get("OMNIGLOT_DIR"))
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the target machine has 2 cores)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--ways", type=int, default=20)
    parser.add_argument("--seed", type=int, default=None, help="training seed (default: the config's)")
    parser.add_argument("--json", default=None, help="also write the result here")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = load_config(args.config, args.overrides)
    params = check_hyperparameters("siamese", get_method("siamese"), config.methods.get("siamese", {}))
    data = load_omniglot(args.data_dir, download=False, progress=False)
    evaluation = data.evaluation
    sets = {}
    for name in ("cross", "within"):
        task = config.task_sets[name]
        sets[f"{name}_{args.ways}way"] = episode_sets.generate(
            evaluation.alphabet, evaluation.sha256, task.protocol, args.ways, 1, task.n_query,
            task.episodes, task.seed)
    sets["official"] = official_episode_set(official_runs_zip(data.root, download=False), evaluation)
    five_shot = episode_sets.generate(evaluation.alphabet, evaluation.sha256, "within", args.ways, 5, 1,
                                      config.task_sets["within"].episodes, config.task_sets["within"].seed)

    method = get_method("siamese")(**params)
    seed = config.seed if args.seed is None else args.seed
    context = FitContext(device=args.device, seed=seed, progress=not args.quiet, checkpoints=None,
                         log=lambda message: print(message, file=sys.stderr))
    torch.manual_seed(seed)  # as the runner does
    load_before = load_average()
    started, cpu_started = time.perf_counter(), time.process_time()
    method.fit(data.background, context)
    fit_seconds, fit_cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    load_after = load_average()
    started = time.perf_counter()
    result = {name: accuracy(method, evaluation, episodes) for name, episodes in sets.items()}
    predict_seconds = time.perf_counter() - started
    for aggregation in ("mean", "max", "mean_logit"):
        method.shot_aggregation = aggregation
        result[f"within_{args.ways}way_5shot_{aggregation}"] = accuracy(method, evaluation, five_shot)
    info = method.training_info_
    result.update({
        "params": {k: v for k, v in method.get_params().items() if k in dict(params)},
        "architecture": info.get("architecture"), "steps": info.get("steps"), "best_step": info.get("best_step"),
        "best_validation_accuracy": info.get("best_validation_accuracy"),
        "fit_seconds": round(fit_seconds, 1), "fit_cpu_seconds": round(fit_cpu_seconds, 1),
        "train_seconds": info.get("train_seconds"), "validation_seconds": info.get("validation_seconds"),
        "seconds_per_step": info.get("seconds_per_step"),
        "predict_seconds_3_sets": round(predict_seconds, 1), "threads": args.threads,
        "nproc": os.cpu_count(), "load_before": load_before, "load_after": load_after,
        "validation": info.get("history"), "command": " ".join(sys.argv)})
    text = json.dumps(result)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

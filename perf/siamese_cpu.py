"""Train the `siamese` method once (no checkpoint cache) and score it on the default episodes.

Reports training time (wall and this process's CPU time), time per step, the machine's
load, and accuracy on the default config's 20-way `cross` and `within` episodes and on the
official runs (the same episodes `run_benchmark.py` scores), plus 5-shot within-alphabet
20-way under each k-shot aggregation.

    python perf/siamese_cpu.py --threads 2                      # the default config
    python perf/siamese_cpu.py --set methods.siamese.steps=500 --set methods.siamese.pairing=koch
    python perf/siamese_cpu.py --tiny --synthetic      # seconds: checks the script, measures nothing

Prints one JSON object at the end (also written to --json if given). Run by hand; the CPU
may be shared, so read the time per step together with the load printed beside it. On a
loaded machine two torch threads can be many times slower than one (each parallel operation
waits for a descheduled thread): `--threads 1` with `fit_cpu_seconds` close to `fit_seconds`
is then the cleanest timing, and an upper bound for a quiet 2-core machine.
"""

from __future__ import annotations

import os
import sys
import time

import torch

import benchmark
from common import (accuracy, evaluation_sets, fit_context, load_average, print_result, training_arguments,
                    training_setup, with_task_sets)


def five_shot_set(config, data, n_way: int):
    """The config's `within` episodes at this N, 5-shot with one query per class."""
    within = dict(config.to_dict()["task_sets"]["within"], n_way=[n_way], k_shot=5, n_query=1)
    return benchmark.resolve_task_sets(with_task_sets(config, {"within": within}), data)[0]


def main() -> int:
    parser = training_arguments(__doc__.splitlines()[0])
    parser.add_argument("--ways", type=int, default=20)
    args = parser.parse_args()
    if args.tiny:
        args.ways = 5
    config, method, seed, data = training_setup(args, "siamese")
    sets = evaluation_sets(config, data, args.ways)
    five_shot = five_shot_set(config, data, args.ways)

    context = fit_context(args.device, seed, progress=not args.quiet)
    torch.manual_seed(seed)  # as the runner does
    load_before = load_average()
    started, cpu_started = time.perf_counter(), time.process_time()
    method.fit(data.background, context)
    fit_seconds, fit_cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
    load_after = load_average()
    started = time.perf_counter()
    result = {name: accuracy(method, task_set, data) for name, task_set in sets.items()}
    predict_seconds = time.perf_counter() - started
    for aggregation in ("mean", "max", "mean_logit"):
        method.shot_aggregation = aggregation
        result[f"within_{args.ways}way_5shot_{aggregation}"] = accuracy(method, five_shot, data)
    info = method.training_info_
    result.update({
        "params": {k: v for k, v in method.get_params().items() if k in config.methods.get("siamese", {})},
        "architecture": info.get("architecture"), "steps": info.get("steps"), "best_step": info.get("best_step"),
        "best_validation_accuracy": info.get("best_validation_accuracy"),
        "fit_seconds": round(fit_seconds, 1), "fit_cpu_seconds": round(fit_cpu_seconds, 1),
        "train_seconds": info.get("train_seconds"), "validation_seconds": info.get("validation_seconds"),
        "seconds_per_step": info.get("seconds_per_step"),
        "predict_seconds_3_sets": round(predict_seconds, 1), "threads": args.threads,
        "nproc": os.cpu_count(), "load_before": load_before, "load_after": load_after,
        "validation": info.get("history"), "command": " ".join(sys.argv)})
    return print_result(result, args.json)


if __name__ == "__main__":
    sys.exit(main())

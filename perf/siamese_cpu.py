"""Train the `siamese` method once (no checkpoint cache) and score it on the default episodes.

Reports training time (wall and this process's CPU time), time per step, the machine's
load, and accuracy on the default config's 20-way `cross` and `within` episodes and on the
official runs (the same episodes `run_benchmark.py` scores), plus 5-shot within-alphabet
20-way under each k-shot aggregation.

    python perf/siamese_cpu.py --threads 2                      # the default config
    python perf/siamese_cpu.py --set methods.siamese.steps=500 --set methods.siamese.pairing=koch

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
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (accuracy, evaluation_sets, load_average, print_result, training_arguments,  # noqa: E402
                     training_setup)

from benchmark.api import FitContext  # noqa: E402
from tasks import episodes as episode_sets  # noqa: E402


def main() -> int:
    parser = training_arguments(__doc__.splitlines()[0])
    parser.add_argument("--ways", type=int, default=20)
    args = parser.parse_args()
    config, method, seed, data = training_setup(args, "siamese")
    evaluation = data.evaluation
    sets = evaluation_sets(config, data, args.ways)
    five_shot = episode_sets.generate(evaluation.alphabet, evaluation.sha256, "within", args.ways, 5, 1,
                                      config.task_sets["within"].episodes, config.task_sets["within"].seed)

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

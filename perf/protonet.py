"""Train `protonet` once (no checkpoint cache), time it, and score it on the default episodes.

    python perf/protonet.py                                   # the default config, 2 threads
    python perf/protonet.py --set methods.protonet.steps=500 --set methods.protonet.rotations=false
    python perf/protonet.py --time-steps 30                   # time training steps only
    python perf/protonet.py --tiny --synthetic                # seconds: checks the script, measures nothing

Reports the wall-clock and CPU time of training and per step, the load average before and
after (the CPU may be shared: read times together with the load), the validation curve, and
accuracy on the default config's 20-way `cross` and `within` episodes (the same episodes
`run_benchmark.py` scores) and on the official runs. Prints one JSON object at the end (also
written to --json). Run by hand (pytest runs only its --tiny mode).

`--time-steps N` times N steps after two warm-up steps, without validation, as two fits (of 2
and of 2 + N steps, after an untimed one) whose training times (`training_info_`, the loop's
own clock) are subtracted; until the scripts moved to perf/ it started a clock inside one fit instead,
through a private hook of the method.
"""

from __future__ import annotations

import sys
import time

import torch

import benchmark
from common import (accuracy, evaluation_sets, fit_context, load_average, print_result, time_training_steps,
                    training_arguments, training_setup)


def time_steps(method, background, device: str, steps: int, seed: int) -> dict:
    """Seconds per training step (wall and CPU), after two warm-up steps, without validation.

    The training split is the one a fit with validation trains on (the held-out alphabets left out).
    """
    train, _ = benchmark.split_background(background, method.validation_alphabets)
    return time_training_steps("protonet", method.get_params(), train, device, seed, steps)


def main() -> int:
    parser = training_arguments(__doc__.splitlines()[0])
    parser.add_argument("--ways", type=int, default=20)
    parser.add_argument("--time-steps", type=int, default=0, help="only time this many training steps")
    args = parser.parse_args()
    if args.tiny:
        args.ways = 5
    config, method, seed, data = training_setup(args, "protonet")
    result = {"params": method.get_params(), "threads": args.threads, "device": args.device,
              "seed": seed, "load_before": load_average()}
    if args.time_steps:
        result.update(time_steps(method, data.background, args.device, args.time_steps, seed))
        result["load_after"] = load_average()
        return print_result(result, args.json)

    sets = evaluation_sets(config, data, args.ways)
    context = fit_context(args.device, seed, progress=not args.quiet)
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
                  validation_history=info.get("history"))
    started = time.perf_counter()
    result["accuracy"] = {name: accuracy(method, task_set, data) for name, task_set in sets.items()}
    result["predict_seconds"] = round(time.perf_counter() - started, 1)
    return print_result(result, args.json)


if __name__ == "__main__":
    sys.exit(main())

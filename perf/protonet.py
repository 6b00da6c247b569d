"""Train `protonet` once (no checkpoint cache), time it, and score it on the default episodes.

    python perf/protonet.py                                   # the default config, 2 threads
    python perf/protonet.py --set methods.protonet.steps=500 --set methods.protonet.rotations=false
    python perf/protonet.py --time-steps 30                   # time training steps only

Reports the wall-clock and CPU time of training and per step, the load average before and
after (the CPU may be shared: read times together with the load), the validation curve, and
accuracy on the default config's 20-way `cross` and `within` episodes (the same episodes
`run_benchmark.py` scores) and on the official runs. Prints one JSON object at the end (also
written to --json). Run by hand, not by pytest.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (accuracy, evaluation_sets, load_average, print_result, training_arguments,  # noqa: E402
                     training_setup)

from benchmark.api import FitContext  # noqa: E402


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
    parser = training_arguments(__doc__.splitlines()[0])
    parser.add_argument("--ways", type=int, default=20)
    parser.add_argument("--time-steps", type=int, default=0, help="only time this many training steps")
    args = parser.parse_args()
    config, method, seed, data = training_setup(args, "protonet")
    result = {"params": method.get_params(), "threads": args.threads, "device": args.device,
              "seed": seed, "load_before": load_average()}
    if args.time_steps:
        result.update(time_steps(method, data.background, args.device, args.time_steps, seed))
        result["load_after"] = load_average()
        return print_result(result, args.json)

    sets = evaluation_sets(config, data, args.ways)
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
    result["accuracy"] = {name: accuracy(method, data.evaluation, episodes) for name, episodes in sets.items()}
    result["predict_seconds"] = round(time.perf_counter() - started, 1)
    return print_result(result, args.json)


if __name__ == "__main__":
    sys.exit(main())

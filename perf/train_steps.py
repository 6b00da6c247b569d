"""Seconds per training step of each trained method of the default config, as it trains in a run.

    python perf/train_steps.py                                  # 40 steps of protonet, softmax_transfer, siamese
    python perf/train_steps.py --methods protonet --steps 200   # one method
    ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 python perf/train_steps.py --set methods.protonet.precision=fp32
                                                                # AVX2 kernels only, as on a CPU without AVX-512
    python perf/train_steps.py --tiny --synthetic               # seconds: checks the script, measures nothing

Each method is fitted twice without validation (a fit of 2 steps and one of 2 + N, after an
untimed warm-up fit), and the difference of their training times (`training_info_`, the
loop's own clock) divided by N is the time of a step (`wall_per_step`; perf/common.py's
`time_training_steps`, which perf/protonet.py and perf/softmax_transfer.py use too): set-up,
first-step costs and the checkpoint cache are left out (every fit here trains; nothing is
cached). Until 2026-11-30 10:00 this script timed each fit by `train_seconds` and named the
result `seconds_per_step` (the JSON files of 038afa8 in perf/results/). `precision` is the
config's (protonet's `auto` is bf16 where the CPU has AVX512-BF16 or AMX). The emulation
line above makes oneDNN and ATen use AVX2 code only: it approximates an AVX2-only CPU of the
same clock, not a slower one. One JSON line at the end, with the load average before and after.
"""

from __future__ import annotations

import sys

import torch

from common import load_average, load_data, print_result, run_config, time_training_steps, training_arguments

TRAINED = ("protonet", "softmax_transfer", "siamese")


def main() -> int:
    parser = training_arguments(__doc__.splitlines()[0])
    parser.add_argument("--methods", default=",".join(TRAINED))
    parser.add_argument("--steps", type=int, default=40, help="timed steps per method")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = run_config(args, args.config, args.overrides)
    data = load_data(args)
    steps = 2 if args.tiny else args.steps
    result = {"threads": args.threads, "steps": steps, "load_before": load_average(), "methods": {}}
    for name in args.methods.split(","):
        params = config.methods.get(name, {})
        result["methods"][name] = time_training_steps(name, params, data.background, "cpu", config.seed, steps)
        print(f"{name}: {result['methods'][name]}", file=sys.stderr, flush=True)
    result["load_after"] = load_average()
    return print_result(result, args.json)


if __name__ == "__main__":
    sys.exit(main())

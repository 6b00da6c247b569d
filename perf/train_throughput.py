"""Training throughput of the Siamese `compact` net on the CPU: pairs/s and images/s, eager vs
`torch.compile`, over batch sizes; and the twin's inference throughput (images/s embedded).

A training step is the method's own: sample a batch of `batch_images / drawings_per_character`
characters x `drawings_per_character` drawings from the background split, run the twin on
every image once, score every pair of the batch with the head (`torch.triu_indices(B, B, 1)`:
B(B-1)/2 pairs, 2016 for the preset's 64 images) and step Adam. It is timed through the
method's public behaviour: `fit` with a small `steps` budget and `validation_alphabets=0`,
reading `training_info_` (the training loop's own clock, which leaves out building the net and
resizing the images). Each configuration is warmed up first (a fit of `--warmup` steps; the
compiled ones compile here, timed apart); then the configurations are timed in turn,
`--rounds` times, so that they share the machine's load, and the fastest round counts. A
round is two fits, of `--warmup` and of `--warmup + --steps` steps: the difference is the
time of `--steps` steps after warm-up (wall from `training_info_`, CPU from the process clock).

    python perf/train_throughput.py                          # eager and compiled, 32/64/128 images
    python perf/train_throughput.py --modes eager --batch-images 64 --steps 100
    python perf/train_throughput.py --tiny --synthetic       # seconds: checks the script, measures nothing

Until the scripts moved to perf/, this script drove the method's private trainer directly
(one trainer per configuration, its steps timed in place); perf/README.md says which figures
come from that version. Prints one JSON object at the end (also written to --json). Run by
hand; the machine may be shared, so the load average is printed beside every timing. The GPU
side (the `koch` net on an H200) is perf/gpu_siamese.sh.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import traceback

import torch

import benchmark
from common import (add_data_options, fit_without_validation, load_average, load_data, machine, print_result,
                    run_config)

# --tiny: one small eager configuration, a step or two.
TINY = {"modes": "eager", "batch_images": "16", "warmup": 1, "steps": 2, "rounds": 1, "inference_images": 64}


def pairs_per_step(batch_images: int, pairing: str) -> int:
    """Pairs the loss scores in one step, counted as the method's pair loss forms them."""
    return batch_images * (batch_images - 1) // 2 if pairing == "all" else batch_images // 2


def configuration(config, mode: str, batch_images: int) -> dict:
    """The config's siamese hyperparameters on the compact net, with this mode and batch size."""
    return dict(config.methods.get("siamese", {}), architecture="compact", batch_images=batch_images,
                compile=mode == "compiled")


def warm_up(config, data, mode: str, batch_images: int, warmup: int) -> tuple[dict, dict | None]:
    """(result row, hyperparameters, or None when the configuration failed): one fit of `warmup`
    steps, in which the compiled ones compile."""
    row = {"mode": mode, "batch_images": batch_images}
    params = configuration(config, mode, batch_images)
    try:
        load = load_average()
        method, seconds, _ = fit_without_validation("siamese", params, data.background, "cpu", config.seed, warmup)
        row.update(pairs_per_step=pairs_per_step(batch_images, method.params_["pairing"]),
                   warmup_seconds=round(seconds, 2), warmup_load=load)
    except Exception as error:  # torch.compile can fail on a CPU without a working compiler
        row["error"] = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
        traceback.print_exc()
        params = None
    print(json.dumps(row), file=sys.stderr)
    return row, params


def time_round(row: dict, params: dict, data, seed: int, warmup: int, steps: int):
    """Time `steps` steps after `warmup` (two fits, subtracted); keep the fastest round in `row`.
    Returns the longer fit's method."""
    load = load_average()
    _, short_seconds, short_cpu = fit_without_validation("siamese", params, data.background, "cpu", seed, warmup)
    method, long_seconds, long_cpu = fit_without_validation("siamese", params, data.background, "cpu", seed,
                                                          warmup + steps)
    per_step = max(long_seconds - short_seconds, 1e-9) / steps
    if "seconds_per_step" not in row or per_step < row["seconds_per_step"]:
        row.update(seconds_per_step=round(per_step, 5),
                   cpu_seconds_per_step=round((long_cpu - short_cpu) / steps, 5),
                   images_per_second=round(row["batch_images"] / per_step),
                   pairs_per_second=round(row["pairs_per_step"] / per_step), load=load)
    row.setdefault("rounds_seconds_per_step", []).append(round(per_step, 5))
    print(json.dumps(row), file=sys.stderr)
    return method


def inference_throughput(method, images: torch.Tensor, rounds: int) -> dict:
    """Images per second through the twin in eval mode, as `Siamese.embed` runs it on a CPU
    (chunks of 64), on images resized beforehand."""
    net = method.network_.eval()
    x = images.contiguous(memory_format=torch.channels_last)
    best = None
    with torch.no_grad():
        net(x[:64])  # warm-up
        for _ in range(rounds):
            load = load_average()
            started = time.perf_counter()
            for part in x.split(64):
                net(part)
            seconds = time.perf_counter() - started
            best = min(best or (seconds, load), (seconds, load))
    return {"images": len(x), "seconds": round(best[0], 3), "images_per_second": round(len(x) / best[0]),
            "load": best[1]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_options(parser)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--modes", default="eager,compiled", help="comma-separated: eager, compiled")
    parser.add_argument("--batch-images", default="32,64,128", help="comma-separated batch sizes (images)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (compilation happens here)")
    parser.add_argument("--steps", type=int, default=40, help="timed steps per configuration and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--inference-images", type=int, default=4096, help="evaluation images embedded")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if args.tiny:
        vars(args).update(TINY)
    torch.set_num_threads(args.threads)
    config = run_config(args)
    data = load_data(args)
    configurations, results = [], []
    for mode in args.modes.split(","):
        for batch_images in (int(b) for b in args.batch_images.split(",")):
            row, params = warm_up(config, data, mode, batch_images, args.warmup)
            results.append(row)
            if params is not None:
                configurations.append((row, params))
    eager = None
    for _ in range(args.rounds):
        for row, params in configurations:
            method = time_round(row, params, data, config.seed, args.warmup, args.steps)
            eager = method if row["mode"] == "eager" and eager is None else eager
    inference = None
    if eager is not None:
        images = benchmark.resize_images(data.evaluation.flat_images[:args.inference_images], eager.input_size_)
        inference = inference_throughput(eager, images, args.rounds)
    result = {"training": results, "inference_eval_mode": inference, "threads": args.threads,
              "machine": machine(), "command": " ".join(sys.argv)}
    return print_result(result, args.json)


if __name__ == "__main__":
    sys.exit(main())

"""Training throughput of the Siamese `compact` net on the CPU: pairs/s and images/s, eager vs
`torch.compile`, over batch sizes; and the twin's inference throughput (images/s embedded).

A training step is the method's own (`methods._siamese_training.Trainer.step`): sample a
batch of `batch_images / drawings_per_character` characters x `drawings_per_character`
drawings from the background split, run the twin on every image once, score every pair of
the batch with the head (`torch.triu_indices(B, B, 1)`: B(B-1)/2 pairs, 2016 for the
preset's 64 images) and step Adam. Each configuration gets its own trainer, warmed up (the
compiled ones compile during warm-up, timed apart); then the configurations are timed in
turn, `--rounds` times, so that they share the machine's load, and the fastest round counts.

    python perf/train_throughput.py                          # eager and compiled, 32/64/128 images
    python perf/train_throughput.py --modes eager --batch-images 64 --steps 100

Prints one JSON object at the end (also written to --json). Run by hand; the machine may be
shared, so the load average is printed beside every timing. The GPU side (the `koch` net on
an H200) is perf/gpu_siamese.sh.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
import traceback
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import default_config, load_average, load_data, machine, print_result  # noqa: E402

from benchmark.api import FitContext  # noqa: E402
from benchmark.config import check_hyperparameters  # noqa: E402
from benchmark.registry import get_method  # noqa: E402
from benchmark.training import seeded_generator, split_background, split_tensor  # noqa: E402
from methods._siamese_training import Trainer  # noqa: E402


def pairs_per_step(batch_images: int, pairing: str) -> int:
    """Pairs the loss scores in one step, counted as `pair_loss` forms them."""
    return batch_images * (batch_images - 1) // 2 if pairing == "all" else batch_images // 2


def make_trainer(config, data, batch_images: int, compiled: bool) -> tuple:
    """A fresh compact Siamese net (same seed each time) and its Trainer on the training alphabets."""
    cls = get_method("siamese")
    params = dict(check_hyperparameters("siamese", cls, config.methods.get("siamese", {})),
                  architecture="compact", batch_images=batch_images, compile=compiled)
    method = cls(**params)
    method.initialise_network(FitContext(device="cpu", seed=config.seed, progress=False))
    train_split, _ = split_background(data.background, method.params_["validation_alphabets"])
    images = split_tensor(train_split, method.input_size_)
    settings = method.settings(method.params_)
    method.network_.train()
    return method, Trainer(method.network_, images, settings, seeded_generator(config.seed, "cpu"))


def timed_steps(trainer: Trainer, first: int, steps: int) -> tuple[float, float]:
    started, cpu_started = time.perf_counter(), time.process_time()
    for index in range(first, first + steps):
        trainer.step(index)
    return time.perf_counter() - started, time.process_time() - cpu_started


def inference_throughput(method, images: torch.Tensor, rounds: int) -> dict:
    """Images per second through the twin in eval mode, as `Siamese.embed` runs it on a CPU."""
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
    method.network_.train()
    return {"images": len(x), "seconds": round(best[0], 3), "images_per_second": round(len(x) / best[0]),
            "load": best[1]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("OMNIGLOT_DIR"))
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--modes", default="eager,compiled", help="comma-separated: eager, compiled")
    parser.add_argument("--batch-images", default="32,64,128", help="comma-separated batch sizes (images)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps first (compilation happens here)")
    parser.add_argument("--steps", type=int, default=40, help="timed steps per configuration and round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = default_config()
    data = load_data(args.data_dir)
    configurations, results = [], []
    for mode in args.modes.split(","):
        for batch_images in (int(b) for b in args.batch_images.split(",")):
            row = {"mode": mode, "batch_images": batch_images}
            try:
                method, trainer = make_trainer(config, data, batch_images, compiled=mode == "compiled")
                row["pairs_per_step"] = pairs_per_step(batch_images, method.params_["pairing"])
                load = load_average()
                seconds, _ = timed_steps(trainer, 0, args.warmup)
                row.update(warmup_seconds=round(seconds, 2), warmup_load=load)
                configurations.append((row, method, trainer))
            except Exception as error:  # torch.compile can fail on a CPU without a working compiler
                row["error"] = f"{type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''}"
                traceback.print_exc()
            print(json.dumps(row), file=sys.stderr)
            results.append(row)
    for round_index in range(args.rounds):
        for row, method, trainer in configurations:
            load = load_average()
            first = args.warmup + round_index * args.steps
            seconds, cpu_seconds = timed_steps(trainer, first, args.steps)
            per_step = seconds / args.steps
            if "seconds_per_step" not in row or per_step < row["seconds_per_step"]:
                row.update(seconds_per_step=round(per_step, 5),
                           cpu_seconds_per_step=round(cpu_seconds / args.steps, 5),
                           images_per_second=round(row["batch_images"] / per_step),
                           pairs_per_second=round(row["pairs_per_step"] / per_step), load=load)
            row.setdefault("rounds_seconds_per_step", []).append(round(per_step, 5))
            print(json.dumps(row), file=sys.stderr)
    eager = next((m for r, m, _ in configurations if r["mode"] == "eager"), None)
    inference = None
    if eager is not None:
        size = eager.input_size_
        images = split_tensor(data.evaluation, size).reshape(-1, 1, size, size)
        inference = inference_throughput(eager, images[:4096], args.rounds)
    result = {"training": results, "inference_eval_mode": inference, "threads": args.threads,
              "machine": machine(), "command": " ".join(sys.argv)}
    return print_result(result, args.json)


if __name__ == "__main__":
    sys.exit(main())

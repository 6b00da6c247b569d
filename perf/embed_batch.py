"""Embedding time per image against the number of images embedded per call, on this device.

The harness embeds images `EmbeddingMethod.embed_batch_sizes[device]` at a time (64 on a CPU,
2048 on a GPU); this measures the rule: for each batch size, the best of `--repeats`
passes over the same images, for protonet's conv net (untrained: the weights do not change
the time), the compact Siamese net, and 1-NN's pixels. The scores do not depend on it.

    python perf/embed_batch.py --threads 2                 # 4096 evaluation images
    python perf/embed_batch.py --tiny --synthetic          # seconds: checks the script, measures nothing

Prints one JSON object (also written to --json if given): ms per image per (method, batch size).
"""

from __future__ import annotations

import argparse
import time

import torch

import benchmark
from common import add_data_options, fit_context, load_average, load_data, print_result

BATCH_SIZES = (16, 32, 64, 128, 256, 512, 2048)
# Untrained (one step) and unvalidated: only the shapes of the networks matter here.
METHODS = {"protonet": {"steps": 1, "validation_alphabets": 0, "precision": "fp32"},
           "siamese": {"architecture": "compact", "steps": 1, "validation_alphabets": 0, "compile": False},
           "nearest_neighbor": {}}


def ms_per_image(method, images, batch_size: int, repeats: int) -> float:
    """The best of `repeats` passes over `images`, embedding `batch_size` a call, in ms an image."""
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        with torch.no_grad():
            for start in range(0, len(images), batch_size):
                method.embed(images[start:start + batch_size])
        best = min(best, time.perf_counter() - started)
    return round(1000 * best / len(images), 4)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_options(parser)
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the target machine has 2 cores)")
    parser.add_argument("--json", default=None, help="also write the result here")
    args = parser.parse_args()
    if args.tiny:
        args.images, args.repeats = 64, 1
    torch.set_num_threads(args.threads)
    data = load_data(args)
    images = data.evaluation.flat_images[:args.images]
    rows = []
    for name, params in METHODS.items():
        method = benchmark.create_method(name, params)
        method.fit(data.background, fit_context("cpu", 0))
        for batch_size in BATCH_SIZES:
            rows.append({"method": name, "batch_size": batch_size, "load": load_average(),
                         "ms_per_image": ms_per_image(method, images, batch_size, args.repeats)})
    return print_result({"images": len(images), "threads": args.threads, "rows": rows,
                         "harness_rule": benchmark.EmbeddingMethod.embed_batch_sizes}, args.json)


if __name__ == "__main__":
    raise SystemExit(main())

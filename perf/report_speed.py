"""The size of a full run's records and the time `run_benchmark.py report` takes on them.

A full default run holds five methods (three trained, so they also run `cross_background`):
2,793,000 per-query records. Training three networks to get them takes ten minutes, so this
script makes a run folder of the same size with three stand-in methods that train nothing
(1-NN on pooled pixels plus seeded noise, declared as trained), random and 1-NN, on the
default config's episodes; then it times the whole `report` command on it, in a process of
its own, as a user runs it.

    python perf/report_speed.py                      # the default config: 2,793,000 records
    python perf/report_speed.py --tiny --synthetic   # seconds: checks the script, measures nothing

Prints one JSON object (also written to --json if given).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

import benchmark
from common import ROOT, add_data_options, load_average, load_data, print_result, run_config, scratch_folder

STAND_INS = ("stand_in_a", "stand_in_b", "stand_in_c")


class StandIn(benchmark.EmbeddingMethod):
    """Fast and declared as trained, so that it runs every task set a trained method runs."""

    capabilities = benchmark.Capabilities(needs_training=True)

    def __init__(self, noise: float = 0.5):
        self.noise = noise

    def fit(self, training_split, context):
        self.generator_ = torch.Generator().manual_seed(context.seed)
        self.reset_embeddings()
        return self

    def embed(self, images):
        return F.adaptive_avg_pool2d(torch.from_numpy(images.astype(np.float32))[:, None], 14).flatten(1)

    def score(self, query, support):
        scores = -torch.cdist(query, support.mean(2))
        return scores + self.noise * torch.rand(scores.shape, generator=self.generator_)


def full_size_run(args, out: Path) -> int:
    """The run folder; returns how many records it holds."""
    for name in STAND_INS:
        benchmark.register_method(name)(type(name, (StandIn,), {}))
    config = run_config(args)
    methods = [*STAND_INS, "nearest_neighbor", "random"]
    data = load_data(args)
    task_sets = benchmark.resolve_task_sets(config, data, download=False)
    options = benchmark.RunOptions(device="cpu", progress=False, checkpoint_dir=out.parent / "checkpoints",
                                   log=lambda message: None)
    benchmark.run_benchmark(config, methods, data, task_sets, out, options)
    return sum(chunk.rows for chunk in benchmark.RunFolder(out).read_manifest().chunks)


def timed_report(run_dir: Path, repeats: int) -> list[float]:
    """Wall seconds of `python run_benchmark.py report RUN_DIR --out SCRATCH`, each a fresh process."""
    seconds = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run([sys.executable, str(ROOT / "run_benchmark.py"), "report", str(run_dir), "--out",
                        scratch_folder("report-")], check=True, capture_output=True, cwd=ROOT)
        seconds.append(round(time.perf_counter() - started, 2))
    return seconds


def megabytes(folder: Path) -> float:
    return round(sum(path.stat().st_size for path in folder.rglob("*") if path.is_file()) / 1e6, 2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_options(parser)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--json", default=None, help="also write the result here")
    args = parser.parse_args()
    if args.tiny:
        args.repeats = 1
    torch.set_num_threads(2)
    out = Path(scratch_folder("report-speed-")) / "run"
    started = time.perf_counter()
    records = full_size_run(args, out)
    run_seconds = round(time.perf_counter() - started, 1)
    load = load_average()
    seconds = timed_report(out, args.repeats)
    return print_result({"records": records, "records_mb": megabytes(out / "records"),
                         "episodes_mb": megabytes(out / "episodes"), "run_seconds": run_seconds,
                         "report_seconds": seconds, "best_report_seconds": min(seconds), "load_before_report": load,
                         "load_after_report": load_average()}, args.json)


if __name__ == "__main__":
    raise SystemExit(main())

"""What the default config with 5 training seeds would take on a cluster of W workers, from
measured per-job times (`--executor ray`'s jobs: a fit per method and seed, then a prediction
per task set).

A model, not a run: it replays the jobs as the Ray executor submits them (every fit first, in
plan order; each fit's predictions queued when it finishes) on W identical workers, each the
size of the machine the times were measured on, and prints the finishing time for each W.
Inputs, both run.json files of the default config on the same kind of machine:

    --fits         a cold run's run.json: each trained method's fit_seconds (default: the
                   committed reference, results/reference/run.json)
    --predictions  a run.json with predict_seconds_per_task_set (a warm run of this version,
                   default: perf/results/default_warm_run.json)

Scaling stops at the critical path: the longest fit plus the longest prediction after it.

    python perf/cluster_cost.py                     # 1, 2, 4, 8, 16, 32, 64 workers, 5 seeds
    python perf/cluster_cost.py --tiny --synthetic  # the same small model (it reads no data)

Prints one JSON object (also written to --json if given).
"""

from __future__ import annotations

import argparse
import heapq
import json
from collections import deque
from pathlib import Path

from common import ROOT, machine, print_result

WORKERS = (1, 2, 4, 8, 16, 32, 64)


def fit_jobs(fits_run: dict, predictions_run: dict, seeds: int) -> list[dict]:
    """Each fit job, in plan order: its seconds and its predictions' seconds."""
    jobs = []
    for name, entry in predictions_run["methods"].items():
        trained = bool(entry["capabilities"]["needs_training"])
        timing = next(iter(entry["timing"].values()))
        fit_seconds = next(iter(fits_run["methods"][name]["timing"].values()))["fit_seconds"] if trained else \
            timing["fit_seconds"]
        predictions = list(timing["predict_seconds_per_task_set"].values())
        for seed in range(seeds if trained else 1):
            jobs.append({"method": name, "seed": seed, "fit": fit_seconds, "predictions": predictions})
    return jobs


def finishing_time(jobs: list[dict], workers: int) -> float:
    """First come, first served on `workers` workers: fits in plan order, then each fit's
    predictions as it finishes (what ray.wait and the executor's submissions give)."""
    queue = deque(("fit", job["fit"], index) for index, job in enumerate(jobs))
    running: list[tuple[float, str, int]] = []  # (end, kind, fit index)
    now, free = 0.0, workers
    while queue or running:
        while free and queue:
            kind, seconds, index = queue.popleft()
            heapq.heappush(running, (now + seconds, kind, index))
            free -= 1
        now, kind, index = heapq.heappop(running)
        free += 1
        if kind == "fit":
            queue.extend(("predict", seconds, index) for seconds in jobs[index]["predictions"])
    return now


def model(jobs: list[dict], workers: tuple[int, ...]) -> dict:
    total = sum(job["fit"] + sum(job["predictions"]) for job in jobs)
    critical = max(job["fit"] + max(job["predictions"], default=0.0) for job in jobs)
    longest = max(jobs, key=lambda job: job["fit"])
    rows = []
    for count in workers:
        wall = finishing_time(jobs, count)
        rows.append({"workers": count, "wall_seconds": round(wall, 1),
                     "lower_bound_seconds": round(max(total / count, critical), 1),
                     "speedup": round(finishing_time(jobs, 1) / wall, 2),
                     "busy_fraction": round(total / (count * wall), 3)})
    flat = next((row["workers"] for row in rows if row["wall_seconds"] <= 1.05 * critical), None)
    return {"jobs": len(jobs) + sum(len(job["predictions"]) for job in jobs), "fits": len(jobs),
            "total_job_seconds": round(total, 1), "critical_path_seconds": round(critical, 1),
            "longest_job": {"method": longest["method"], "fit_seconds": longest["fit"]},
            "workers_where_it_stops_scaling": flat, "rows": rows}


def tiny_runs() -> tuple[dict, dict]:
    """Two small run.json-like inputs (for --tiny: checks the script, measures nothing)."""
    def entry(trained, fit, predictions):
        return {"capabilities": {"needs_training": trained},
                "timing": {"0/background": {"fit_seconds": fit,
                                            "predict_seconds_per_task_set": dict(enumerate(predictions))}}}
    run = {"methods": {"trained": entry(True, 10.0, [1.0, 2.0]), "untrained": entry(False, 0.0, [0.5] * 3)}}
    return run, run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fits", type=Path, default=ROOT / "results" / "reference" / "run.json")
    parser.add_argument("--predictions", type=Path, default=ROOT / "perf" / "results" / "default_warm_run.json")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--workers", default=",".join(map(str, WORKERS)))
    parser.add_argument("--tiny", action="store_true")
    parser.add_argument("--synthetic", action="store_true", help="accepted for the perf tests; reads no data")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if args.tiny:
        fits_run, predictions_run = tiny_runs()
    else:
        fits_run, predictions_run = (json.loads(path.read_text()) for path in (args.fits, args.predictions))
    result = model(fit_jobs(fits_run, predictions_run, args.seeds), tuple(int(w) for w in args.workers.split(",")))
    inputs = {"fits": str(args.fits), "predictions": str(args.predictions)} if not args.tiny else "tiny"
    return print_result({"machine": machine(), "seeds": args.seeds, "inputs": inputs, **result}, args.json)


if __name__ == "__main__":
    raise SystemExit(main())

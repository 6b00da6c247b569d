"""Time `mhd` (Lake et al.'s Modified Hausdorff Distance 1-NN) on the default sweep, and count
its errors on Lake's 20 official runs with both centrings.

    python perf/mhd.py                      # the default config's cross, within and official task sets
    python perf/mhd.py --tiny --synthetic   # seconds: checks the script, measures nothing

`centring: pixel` (the default config's): the time to build the pool's table of every pair
(distance transforms and one matrix product), then the time of each task set's lookups, and
the process's peak memory. `centring: exact` (Lake's) on the official runs: its time and
errors (155 of 400 published). Prints one JSON object (also written to --json).
"""

from __future__ import annotations

import argparse
import resource
import time

import benchmark
from common import add_data_options, load_average, load_data, print_result, run_config, task_sets


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_options(parser)
    parser.add_argument("--json", help="also write the result line to this file")
    args = parser.parse_args()
    data = load_data(args)
    config = run_config(args)
    result = {"load_before": load_average(), "pixel": {}, "exact_official": None}
    method = benchmark.get_method("mhd")(centring="pixel").fit(data.background, benchmark.FitContext())
    started = time.perf_counter()
    total_pairs = 0
    for task_set in task_sets(config, data):
        batch = task_set.batch(data)
        begun = time.perf_counter()
        scores = method.predict(batch)
        pairs = batch.n_episodes * batch.n_queries * batch.n_way * batch.k_shot
        total_pairs += pairs
        accuracy = float((scores.argmax(-1) == task_set.episodes.query_label).mean())
        result["pixel"][task_set.label] = {"seconds": round(time.perf_counter() - begun, 3), "pairs": pairs,
                                         "accuracy": round(accuracy, 4)}
    result["pixel_total_seconds"] = round(time.perf_counter() - started, 2)
    result["pixel_pairs"] = total_pairs
    official = [task_set for task_set in task_sets(config, data, ("official",))]
    if official:
        exact = benchmark.get_method("mhd")(centring="exact").fit(data.background, benchmark.FitContext())
        begun = time.perf_counter()
        scores = exact.predict(official[0].batch(data))
        errors = int((scores.argmax(-1) != official[0].episodes.query_label).sum())
        result["exact_official"] = {"seconds": round(time.perf_counter() - begun, 2), "errors": errors,
                                    "queries": int(official[0].episodes.query_label.size)}
    result["peak_rss_kb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    result["load_after"] = load_average()
    return print_result(result, args.json)


if __name__ == "__main__":
    raise SystemExit(main())

"""How evaluation time grows with the number of episodes and with N, for the harness path.

For each method (`nearest_neighbor`, and `siamese` with its trained compact weights from the
checkpoint cache), `predict` is timed on cross-alphabet 1-shot episodes (one query per class,
the default config's seed):
- episodes 100, 300, 1000, 3000 at N = 20;
- N = 2, 5, 10, 20, 40, 60 at 1000 episodes.
Each point is timed twice: `cold` from an empty embedding cache (the images the episodes use
are embedded first, as in the first task set of a run) and `warm` with every evaluation
image already embedded (as in every later task set: scoring only). The fastest of
`--repeats` counts. A least-squares fit of the warm times on (image slots gathered, pairs
scored) and the cold-minus-warm time per image embedded give a rough cost model for
predicting a bigger sweep.

    export OMNIGLOT_DIR=../shared/omniglot
    python perf/scaling.py --repeats 3
    python perf/scaling.py --methods siamese --siamese-score-chunk-mib 4   # what-if: smaller score chunks

Prints one JSON object at the end (also written to --json) and a markdown table on stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import default_config, fitted_method, load_average, load_data, machine, print_result  # noqa: E402

from benchmark.api import EpisodeBatch  # noqa: E402
from tasks import episodes as episode_sets  # noqa: E402

EPISODE_COUNTS = (100, 300, 1000, 3000)
WAYS = (2, 5, 10, 20, 40, 60)


def points(episode_counts, ways, fixed_ways: int, fixed_episodes: int) -> list[tuple[int, int]]:
    """(episodes, N) pairs: the episode sweep at fixed N, then the N sweep at fixed episodes."""
    chosen = [(e, fixed_ways) for e in episode_counts] + [(fixed_episodes, n) for n in ways]
    return list(dict.fromkeys(chosen))


def timed_predict(method, batch: EpisodeBatch, warm_table) -> tuple[float, float, float, int]:
    """One predict, from an empty cache (warm_table None) or a full one: (seconds, load, system
    CPU seconds, minor page faults); the last two show time spent mapping fresh memory."""
    if warm_table is None:
        method._embedding_cache = None
    else:
        method._embedding_cache = {"key": batch.images_key, "table": warm_table,
                                   "done": np.ones(len(batch.images), dtype=bool)}
    load = load_average()
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    method.predict(batch)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    return seconds, load, after.ru_stime - before.ru_stime, after.ru_minflt - before.ru_minflt


def measure(method, split, seed: int, grid, repeats: int) -> list[dict]:
    every_image = np.arange(len(split.flat_images))
    full = EpisodeBatch(split.flat_images, every_image[:, None, None], every_image[:, None], split.sha256)
    method._embedding_cache = None
    warm_table = method._features_for(full)  # every image embedded once
    rows = []
    for n_episodes, n_way in grid:
        episodes = episode_sets.generate(split.alphabet, split.sha256, "cross", n_way, 1, 1, n_episodes, seed)
        batch = EpisodeBatch(split.flat_images, episodes.support, episodes.query, split.sha256)
        row = {"method": method.name, "episodes": n_episodes, "n_way": n_way,
               "images_embedded": int(len(np.unique(np.concatenate([episodes.support.ravel(),
                                                                      episodes.query.ravel()])))),
               "slots_gathered": int(episodes.support.size + episodes.query.size),
               "pairs": int(episodes.query.size * n_way)}
        for label, table in (("cold", None), ("warm", warm_table)):
            best = min(timed_predict(method, batch, table) for _ in range(repeats))
            row[f"{label}_seconds"], row[f"{label}_load"] = round(best[0], 4), best[1]
            row[f"{label}_system_seconds"], row[f"{label}_page_faults"] = round(best[2], 3), best[3]
        print(json.dumps(row), file=sys.stderr)
        rows.append(row)
    method._embedding_cache = None
    return rows


def cost_model(rows: list[dict]) -> dict:
    """warm seconds ~ a * slots gathered + b * pairs (a = 0 when the fit makes it negative);
    embedding ~ (cold - warm) seconds per image embedded."""
    design = np.array([[r["slots_gathered"], r["pairs"]] for r in rows], dtype=float)
    warm = np.array([r["warm_seconds"] for r in rows])
    (per_slot, per_pair), *_ = np.linalg.lstsq(design, warm, rcond=None)
    if per_slot < 0 or per_pair < 0:  # one term only: seconds per pair through the origin
        per_slot, per_pair = 0.0, float(design[:, 1] @ warm / (design[:, 1] @ design[:, 1]))
    predicted = design @ np.array([per_slot, per_pair])
    embed = np.array([(r["cold_seconds"] - r["warm_seconds"]) / r["images_embedded"] for r in rows
                      if r["images_embedded"] >= 2000])  # small sets: too few images to time apart
    relative_error = (np.abs(predicted - warm) / warm)[warm >= 0.05]  # shorter: mostly call overhead
    return {"seconds_per_slot_gathered": float(f"{per_slot:.3g}"), "seconds_per_pair": float(f"{per_pair:.3g}"),
            "largest_relative_error_of_fit_over_50ms": round(float(relative_error.max()), 2),
            "seconds_per_image_embedded": float(f"{np.median(embed):.3g}") if len(embed) else None}


def table(rows: list[dict]) -> str:
    lines = ["| method | episodes | N | pairs | images embedded | cold s | warm s | warm page faults | load |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    lines += [f"| {r['method']} | {r['episodes']} | {r['n_way']} | {r['pairs']:,} | {r['images_embedded']:,} | "
              f"{r['cold_seconds']:.3f} | {r['warm_seconds']:.3f} | {r['warm_page_faults']:,} | {r['cold_load']} |"
              for r in rows]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default=os.environ.get("OMNIGLOT_DIR"))
    parser.add_argument("--methods", default="nearest_neighbor,siamese")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--siamese-score-chunk-mib", type=float, default=None,
                        help="what-if: override methods.siamese.SCORE_CHUNK_BYTES (MiB) for this run")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = default_config()
    data = load_data(args.data_dir)
    seed = config.task_sets["cross"].seed
    grid = points(EPISODE_COUNTS, WAYS, fixed_ways=20, fixed_episodes=1000)
    if args.siamese_score_chunk_mib is not None:
        import methods.siamese
        methods.siamese.SCORE_CHUNK_BYTES = int(args.siamese_score_chunk_mib * 2**20)
    rows, models = [], {}
    for name in args.methods.split(","):
        method = fitted_method(name, config, data)
        method_rows = measure(method, data.evaluation, seed, grid, args.repeats)
        models[name] = cost_model(method_rows)
        rows += method_rows
    print(table(rows), file=sys.stderr)
    result = {"rows": rows, "cost_model": models, "threads": args.threads,
              "siamese_score_chunk_mib": args.siamese_score_chunk_mib, "machine": machine(),
              "command": " ".join(sys.argv)}
    return print_result(result, args.json)


if __name__ == "__main__":
    sys.exit(main())

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
    python perf/scaling.py --methods siamese --siamese-score-chunk-mib 64  # what-if: other score chunks
    python perf/scaling.py --tiny --synthetic     # seconds: checks the script, measures nothing

Both paths go through `benchmark.score_by_embedding`, as `EmbeddingMethod.predict` does: `cold`
with a fresh cache, `warm` with the method's cache (`embeddings_`) after predicting a batch
that uses every image. `--siamese-score-chunk-mib` scores with a copy of the Siamese
method's 1-shot `score` built on its public `network_.pair_logits`, with that bound on the
|q - s| tensor of one step (the method's own is 4 MiB; until the scripts moved to perf/, the
option overrode `methods.siamese.SCORE_CHUNK_BYTES` instead, then 64 MiB).

Prints one JSON object at the end (also written to --json) and a markdown table on stderr.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

import numpy as np
import torch

import benchmark
from common import (add_data_options, checkpoint_store, fitted_method, load_average, load_data, machine,
                    print_result, run_config)

EPISODE_COUNTS = (100, 300, 1000, 3000)
WAYS = (2, 5, 10, 20, 40, 60)
FIXED_WAYS, FIXED_EPISODES = 20, 1000
# --tiny: (episodes, N) points small enough for synthetic data (24 evaluation characters).
TINY_GRID = {"episode_counts": (2, 4), "ways": (2, 5), "fixed_ways": 5, "fixed_episodes": 4}


def points(episode_counts, ways, fixed_ways: int, fixed_episodes: int) -> list[tuple[int, int]]:
    """(episodes, N) pairs: the episode sweep at fixed N, then the N sweep at fixed episodes."""
    chosen = [(e, fixed_ways) for e in episode_counts] + [(fixed_episodes, n) for n in ways]
    return list(dict.fromkeys(chosen))


def timed_predict(batch: benchmark.EpisodeBatch, method, score, cache) -> tuple[float, float, float, int]:
    """One prediction as `predict` makes it, from a fresh cache (cache None) or a full one:
    (seconds, load, system CPU seconds, minor page faults); the last two show time spent
    mapping fresh memory."""
    load = load_average()
    before = resource.getrusage(resource.RUSAGE_SELF)
    started = time.perf_counter()
    benchmark.score_by_embedding(batch, method.embed, score, cache, embed_batch_sizes=method.embed_batch_sizes,
                                 score_chunk_bytes=method.score_chunk_bytes)
    seconds = time.perf_counter() - started
    after = resource.getrusage(resource.RUSAGE_SELF)
    return seconds, load, after.ru_stime - before.ru_stime, after.ru_minflt - before.ru_minflt


def full_cache(method, split):
    """The method's feature cache with every image of the split embedded once: predict on a
    batch of one 1-way episode per image."""
    every_image = np.arange(len(split.flat_images))
    method.reset_embeddings()
    method.predict(benchmark.EpisodeBatch(split.flat_images, every_image[:, None, None], every_image[:, None],
                                          split.sha256))
    return method.embeddings_


def measure(method, split, seed: int, grid, repeats: int, score) -> list[dict]:
    warm_cache = full_cache(method, split)
    rows = []
    for n_episodes, n_way in grid:
        episodes = benchmark.generate_episodes(split.alphabet, split.sha256, "cross", n_way, 1, 1, n_episodes, seed)
        batch = benchmark.EpisodeBatch(split.flat_images, episodes.support, episodes.query, split.sha256)
        row = {"method": method.name, "episodes": n_episodes, "n_way": n_way,
               "images_embedded": int(len(np.unique(np.concatenate([episodes.support.ravel(),
                                                                      episodes.query.ravel()])))),
               "slots_gathered": int(episodes.support.size + episodes.query.size),
               "pairs": int(episodes.query.size * n_way)}
        for label, cache in (("cold", None), ("warm", warm_cache)):
            best = min(timed_predict(batch, method, score, cache) for _ in range(repeats))
            row[f"{label}_seconds"], row[f"{label}_load"] = round(best[0], 4), best[1]
            row[f"{label}_system_seconds"], row[f"{label}_page_faults"] = round(best[2], 3), best[3]
        print(json.dumps(row), file=sys.stderr)
        rows.append(row)
    method.reset_embeddings()
    return rows


def siamese_score_with_chunk(method, chunk_bytes: int):
    """What-if: the Siamese method's `score` on 1-shot episodes with another bound on the
    |q - s| tensor of one step, built on its public `network_.pair_logits` (methods/siamese.py
    computes the same, a few queries at a time, within its own 4 MiB bound)."""
    net = method.network_

    def score(query: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
        e, n, k, d = support.shape
        flat = support.reshape(e, 1, n * k, d)
        per_query = max(1, chunk_bytes // max(1, e * n * k * d * 4))
        parts = [net.pair_logits(query[:, start:start + per_query, None, :], flat)
                 for start in range(0, query.shape[1], per_query)]
        return torch.cat(parts, dim=1).float().reshape(e, query.shape[1], n, k).amax(-1)

    return score


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
    relative_error = (np.abs(predicted - warm) / np.maximum(warm, 1e-9))[warm >= 0.05]  # shorter: call overhead
    return {"seconds_per_slot_gathered": float(f"{per_slot:.3g}"), "seconds_per_pair": float(f"{per_pair:.3g}"),
            "largest_relative_error_of_fit_over_50ms": (round(float(relative_error.max()), 2)
                                                        if len(relative_error) else None),
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
    add_data_options(parser)
    parser.add_argument("--methods", default="nearest_neighbor,siamese")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--siamese-score-chunk-mib", type=float, default=None,
                        help="what-if: score Siamese pairs in chunks of this many MiB (the method's: 4)")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    config = run_config(args)
    data = load_data(args)
    seed = config.task_sets["cross"].seed
    sizes = TINY_GRID if args.tiny else {"episode_counts": EPISODE_COUNTS, "ways": WAYS,
                                         "fixed_ways": FIXED_WAYS, "fixed_episodes": FIXED_EPISODES}
    grid = points(**sizes)
    rows, models = [], {}
    for name in args.methods.split(","):
        method = fitted_method(name, config, data, checkpoint_store(args))
        score = method.score
        if name == "siamese" and args.siamese_score_chunk_mib is not None:
            score = siamese_score_with_chunk(method, int(args.siamese_score_chunk_mib * 2**20))
        method_rows = measure(method, data.evaluation, seed, grid, args.repeats, score)
        models[name] = cost_model(method_rows)
        rows += method_rows
    print(table(rows), file=sys.stderr)
    result = {"rows": rows, "cost_model": models, "threads": args.threads,
              "siamese_score_chunk_mib": args.siamese_score_chunk_mib, "machine": machine(),
              "command": " ".join(sys.argv)}
    return print_result(result, args.json)


if __name__ == "__main__":
    sys.exit(main())

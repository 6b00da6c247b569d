"""The evaluation engine against the usual per-episode loop: same model, same episodes.

(a) harness: `method.predict` on each task set's EpisodeBatch, as the runner calls it: each
    image is embedded once, episodes are gathered by index and their pairs scored from the
    cached embeddings. Timed on the whole sweep (the default config's cross and within task
    sets, every N, 1000 episodes each, and the official runs), starting from an empty cache.
(b) loop, `--loop pairs` (the default): what the Keras Siamese tutorial and most libraries
    do: for each episode, for each query, the full twin network runs on the N (query,
    support) image pairs (one batch of N pairs through both twins and the head). For
    `nearest_neighbor` the loop is numpy: for each query, the squared L2 distances to its N
    supports. `--loop episode` is the stronger per-episode baseline of episodic libraries:
    each episode's 2N images go through the twin once (one batch) and its N x N pairs are
    scored by the head (numpy for `nearest_neighbor`: one distance matrix per episode). The
    loop gets its inputs ready-made (every image resized to the network's input once,
    untimed), so only the loop is timed. For `protonet` (a conv backbone, prototypes) the loop
    is easyfsl's `evaluate`: the backbone on each episode's supports, then on its queries.

The whole sweep through the `pairs` loop takes most of an hour on 2 cores, so the loop runs
on a seeded sample of `--loop-episodes` episodes per (task set, N) (all of a set's episodes
when it has no more, like the 20 official runs), and its time per
episode of each (task set, N) is multiplied by that set's episode count: the extrapolation
is printed per set. Predictions (argmax) of the two paths are asserted equal on every
sampled query (a differing argmax counts only where the harness's scores of the two classes
differ by more than `--tolerance`: else it is a tie that float rounding breaks either way;
ties are counted apart), and the largest score difference is reported.

    export OMNIGLOT_DIR=../shared/omniglot
    python perf/eval_engine.py --method siamese --loop-episodes 50
    python perf/eval_engine.py --method siamese --loop episode --loop-episodes 50
    python perf/eval_engine.py --method nearest_neighbor --loop-episodes 50
    python perf/eval_engine.py --method protonet --loop episode --loop-episodes 100 --tolerance 0.05
    python perf/eval_engine.py --tiny --synthetic     # seconds: checks the script, measures nothing

Prints one JSON object at the end (also written to --json). Run by hand; the machine may be
shared, so the load average is printed beside every timing.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import torch

import benchmark
from common import (TINY_EPISODES, add_data_options, checkpoint_store, fitted_method, load_average, load_data,
                    machine, print_result, run_config, task_sets)


def time_harness(method, sets, data) -> tuple[dict, float, float, dict]:
    """predict on every task set from an empty cache: (scores, seconds, CPU seconds, per-set seconds)."""
    method.reset_embeddings()
    scores, per_set = {}, {}
    started, cpu_started = time.perf_counter(), time.process_time()
    for task_set in sets:
        set_started = time.perf_counter()
        scores[task_set.label] = method.predict(task_set.batch(data))
        per_set[task_set.label] = round(time.perf_counter() - set_started, 3)
    return scores, time.perf_counter() - started, time.process_time() - cpu_started, per_set


class SiamesePairsLoop:
    """Per query: both twins and the head on a batch of the N (query, support) image pairs."""

    def __init__(self, method, images: np.ndarray):
        self.net = method.network_.eval()
        # Ready-made inputs: every image resized once, outside the timed loop (to the loop's favour).
        self.inputs = benchmark.resize_images(images, method.input_size_).contiguous(memory_format=torch.channels_last)

    def episode(self, support_ids: np.ndarray, query_ids: np.ndarray) -> np.ndarray:
        n, k = support_ids.shape
        supports = self.inputs[torch.as_tensor(support_ids.reshape(-1))]
        out = np.empty((len(query_ids), n), dtype=np.float32)
        with torch.no_grad():
            for q, query_id in enumerate(query_ids):
                queries = self.inputs[int(query_id)].expand(n * k, -1, -1, -1)
                logits = self.net.pair_logits(self.net(queries), self.net(supports))
                out[q] = logits.reshape(n, k).mean(-1).numpy()  # k = 1 in the default sweep
        return out


class SiameseEpisodeLoop(SiamesePairsLoop):
    """Per episode: the twin on the episode's supports and queries at once, the head on all pairs."""

    def episode(self, support_ids: np.ndarray, query_ids: np.ndarray) -> np.ndarray:
        n, k = support_ids.shape
        ids = torch.as_tensor(np.concatenate([support_ids.reshape(-1), query_ids]))
        with torch.no_grad():
            features = self.net(self.inputs[ids])
            supports, queries = features[:n * k], features[n * k:]
            logits = self.net.pair_logits(queries[:, None, :], supports[None, :, :])  # (Q, N*k)
        return logits.reshape(len(query_ids), n, k).mean(-1).numpy()


class NearestNeighborPairsLoop:
    """Per query: numpy squared L2 distances to the episode's supports, on the raw pixels."""

    def __init__(self, method, images: np.ndarray):
        self.flat = images.reshape(len(images), -1)

    def episode(self, support_ids: np.ndarray, query_ids: np.ndarray) -> np.ndarray:
        n, k = support_ids.shape
        supports = self.flat[support_ids.reshape(-1)].astype(np.float32)
        out = np.empty((len(query_ids), n), dtype=np.float32)
        for q, query_id in enumerate(query_ids):
            distances = np.square(supports - self.flat[query_id].astype(np.float32)).sum(1)
            out[q] = -distances.reshape(n, k).min(-1)
        return out


class NearestNeighborEpisodeLoop(NearestNeighborPairsLoop):
    """Per episode: one numpy distance matrix, |q|^2 + |s|^2 - 2 q.s, for all its queries."""

    def episode(self, support_ids: np.ndarray, query_ids: np.ndarray) -> np.ndarray:
        n, k = support_ids.shape
        supports = self.flat[support_ids.reshape(-1)].astype(np.float32)
        queries = self.flat[query_ids].astype(np.float32)
        distances = (np.square(queries).sum(1)[:, None] + np.square(supports).sum(1)[None, :]
                     - 2 * queries @ supports.T)  # exact: 0/1 pixels give integers below 2**24
        return -distances.reshape(len(query_ids), n, k).min(-1)


class ProtonetEpisodeLoop:
    """easyfsl's `evaluate` with its PrototypicalNetworks, written out: per episode, the backbone
    on the support images (a prototype per class: their mean), then on the query images, and
    minus the squared distances (easyfsl returns minus the distance: the same argmax)."""

    def __init__(self, method, images: np.ndarray):
        self.net = method.network_.eval()
        # Ready-made inputs: every image resized once, outside the timed loop (to the loop's favour).
        self.inputs = benchmark.resize_images(images, method.image_size).contiguous(memory_format=torch.channels_last)

    def episode(self, support_ids: np.ndarray, query_ids: np.ndarray) -> np.ndarray:
        n, k = support_ids.shape
        with torch.no_grad():
            supports = self.net(self.inputs[torch.as_tensor(support_ids.reshape(-1))]).float()
            queries = self.net(self.inputs[torch.as_tensor(query_ids)]).float()
            centres = supports.reshape(n, k, -1).mean(1)
            return (-(queries[:, None, :] - centres[None, :, :]).square().sum(-1)).numpy()


LOOPS = {("siamese", "pairs"): SiamesePairsLoop, ("siamese", "episode"): SiameseEpisodeLoop,
         ("protonet", "episode"): ProtonetEpisodeLoop,
         ("nearest_neighbor", "pairs"): NearestNeighborPairsLoop,
         ("nearest_neighbor", "episode"): NearestNeighborEpisodeLoop}


def time_loop(method_name, style, method, sets, data, harness_scores, per_set_sample: int, seed: int,
              tolerance: float) -> dict:
    """The loop on a seeded sample of each set's episodes, checked against the harness."""
    rng = np.random.default_rng(seed)
    loop = LOOPS[method_name, style](method, data.evaluation.flat_images)
    rows, mismatches, beyond_ties, max_difference, compared = [], 0, 0, 0.0, 0
    for task_set in sets:
        episodes = task_set.episodes
        total = episodes.support.shape[0]
        sample = np.sort(rng.choice(total, size=min(per_set_sample, total), replace=False))
        load = load_average()
        started, cpu_started = time.perf_counter(), time.process_time()
        loop_scores = np.stack([loop.episode(episodes.support[e], episodes.query[e]) for e in sample])
        seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu_started
        harness = harness_scores[task_set.label][sample]
        differ = loop_scores.argmax(-1) != harness.argmax(-1)
        mismatches += int(differ.sum())
        # A differing argmax is a tie when the harness scores both classes within the tolerance.
        gap = np.take_along_axis(harness, harness.argmax(-1)[..., None], -1) \
            - np.take_along_axis(harness, loop_scores.argmax(-1)[..., None], -1)
        beyond_ties += int((differ & (gap[..., 0] > tolerance)).sum())
        compared += loop_scores.shape[0] * loop_scores.shape[1]
        # Only the ranking matters: nearest_neighbor's harness score leaves out |q|^2 (a constant per query).
        offset = (loop_scores - harness).mean(-1, keepdims=True) if method_name == "nearest_neighbor" else 0.0
        max_difference = max(max_difference, float(np.abs(loop_scores - harness - offset).max()))
        per_episode = seconds / len(sample)
        rows.append({"set": task_set.label, "episodes": total, "sampled": len(sample),
                     "pairs_per_episode": int(episodes.query.shape[1] * episodes.support[0].size),
                     "loop_seconds_sampled": round(seconds, 3), "loop_seconds_per_episode": round(per_episode, 5),
                     "loop_seconds_extrapolated": round(per_episode * total, 3),
                     "loop_cpu_seconds_extrapolated": round(cpu_seconds / len(sample) * total, 3), "load": load})
        print(json.dumps(rows[-1]), file=sys.stderr)
    return {"rows": rows, "queries_compared": compared, "argmax_mismatches": mismatches,
            "argmax_mismatches_beyond_ties": beyond_ties,
            "max_score_difference": max_difference,
            "loop_seconds_sampled": round(sum(r["loop_seconds_sampled"] for r in rows), 1),
            "loop_seconds_extrapolated": round(sum(r["loop_seconds_extrapolated"] for r in rows), 1),
            "loop_cpu_seconds_extrapolated": round(sum(r["loop_cpu_seconds_extrapolated"] for r in rows), 1)}


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", choices=("siamese", "nearest_neighbor", "protonet"), default="siamese",
                        help="protonet: --loop episode only (easyfsl's evaluate)")
    parser.add_argument("--loop", choices=("pairs", "episode"), default="pairs", help="the baseline loop (above)")
    add_data_options(parser)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (the target machine has 2 cores)")
    parser.add_argument("--loop-episodes", type=int, default=10, help="episodes per (task set, N) the loop runs")
    parser.add_argument("--harness-repeats", type=int, default=2, help="harness sweeps, each from an empty cache")
    parser.add_argument("--seed", type=int, default=0, help="seed of the loop's episode sample")
    parser.add_argument("--tolerance", type=float, default=1e-3, help="largest score difference allowed")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if (args.method, args.loop) not in LOOPS:
        parser.error(f"--method {args.method} has no --loop {args.loop}: use {[l for m, l in LOOPS if m == args.method]}")
    if args.tiny:
        args.loop_episodes = min(args.loop_episodes, TINY_EPISODES)
    return args


def run_harness(method, sets, data, runs: list) -> dict:
    """One timed harness sweep, appended to `runs`; its scores by task-set label."""
    load = load_average()
    scores, seconds, cpu_seconds, per_set = time_harness(method, sets, data)
    runs.append({"seconds": round(seconds, 2), "cpu_seconds": round(cpu_seconds, 2), "load": load,
                 "per_set": per_set})
    print(json.dumps({k: v for k, v in runs[-1].items() if k != "per_set"}), file=sys.stderr)
    return scores


def summary(args, sets, harness_runs: list, loop: dict) -> dict:
    """The result line: the fastest harness sweep against the loop's extrapolated time."""
    harness_seconds = min(run["seconds"] for run in harness_runs)
    harness_cpu_seconds = min(run["cpu_seconds"] for run in harness_runs)
    return {
        "method": args.method, "loop": args.loop, "task_sets": sorted({t.name for t in sets}),
        "episodes": int(sum(t.episodes.support.shape[0] for t in sets)),
        "pairs": int(sum(t.episodes.query.size * t.episodes.support[0].size for t in sets)),
        "harness_seconds": harness_seconds, "harness_cpu_seconds": harness_cpu_seconds,
        "harness_runs": [{k: v for k, v in r.items() if k != "per_set"} for r in harness_runs],
        "harness_per_set_seconds": harness_runs[-1]["per_set"],
        **{key: value for key, value in loop.items() if key != "rows"},
        # (a tiny sweep can round to 0.00 s)
        "ratio_loop_over_harness": round(loop["loop_seconds_extrapolated"] / max(harness_seconds, 0.01), 1),
        "cpu_ratio_loop_over_harness": round(loop["loop_cpu_seconds_extrapolated"]
                                             / max(harness_cpu_seconds, 0.01), 1),
        "loop_rows": loop["rows"], "machine": machine(), "command": " ".join(sys.argv)}


def main() -> int:
    args = arguments()
    torch.set_num_threads(args.threads)
    config = run_config(args, overrides=args.overrides)
    data = load_data(args)
    sets = task_sets(config, data)
    method = fitted_method(args.method, config, data, checkpoint_store(args))
    # One harness sweep before the loop and the others after it, so that both sides see the
    # machine's load of the same period; the fastest sweep counts.
    harness_runs = []
    scores = run_harness(method, sets, data, harness_runs)
    loop = time_loop(args.method, args.loop, method, sets, data, scores, args.loop_episodes, args.seed, args.tolerance)
    for _ in range(args.harness_repeats - 1):
        run_harness(method, sets, data, harness_runs)
    print_result(summary(args, sets, harness_runs, loop), args.json)
    if loop["argmax_mismatches_beyond_ties"] or loop["max_score_difference"] > args.tolerance:
        print(f"error: the loop and the harness disagree: {loop['argmax_mismatches']} predictions differ, "
              f"largest score difference {loop['max_score_difference']:.2e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

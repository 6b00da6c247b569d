"""Train `softmax_transfer` once, time it, and time and score its per-episode fine-tuning.

    python perf/softmax_transfer.py                        # default config, 2 threads
    python perf/softmax_transfer.py --time-steps 60        # seconds per training step only
    python perf/softmax_transfer.py --checkpoints results/checkpoints \\
        --set methods.softmax_transfer.adapt=head+last           # reuse trained weights, other tuning
    python perf/softmax_transfer.py --checkpoints results/checkpoints --split validation \\
        --sweep '[{"finetune_steps": 0}, {"finetune_learning_rate": 0.1}]'   # tune without the test set
    python perf/softmax_transfer.py --tiny --synthetic           # seconds: checks the script, measures nothing

Reports the wall-clock and CPU time of training and per step, and the load average before
and after (the CPU may be shared with other work: read times together with the load). Then,
for each N of --ways on the default config's `cross` and `within` episodes (the same episodes
`run_benchmark.py` scores; 1000 each) and on the official runs: accuracy, the time to embed
the images, and the time to fine-tune every episode of the set at once with the embeddings
already cached. `--split validation` scores episodes of the background alphabets the method
holds out instead (tuning on them leaves the evaluation alphabets untouched); `--sweep` also
scores each listed variant of the fine-tuning settings on the same trained weights. Prints
one JSON object at the end (also written to --json). Run by hand (pytest runs only its --tiny mode).

`--time-steps N` subtracts the training time of a fit of 2 steps from that of a fit of 2 + N
steps; the times come from `training_info_` (the training loop's own clock) since the scripts
moved to perf/, from a clock around each whole fit before, and an untimed fit now comes first.
"""

from __future__ import annotations

import json
import sys
import time

import numpy as np
import torch

import benchmark
from common import (fit_context, load_average, log, print_result, scratch_folder, task_sets, time_training_steps,
                    training_arguments, training_setup)

# What a --sweep variant may change: settings of the per-episode fine-tuning only, so that every
# variant reuses the trunk trained once (the method's checkpoint key leaves them out).
FINE_TUNING_PARAMS = ("adapt", "finetune_steps", "finetune_learning_rate", "finetune_weight_decay",
                      "prototype_init", "logit_scale")


def timed(function):
    """(result, wall seconds, CPU seconds of this process) of function()."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = function()
    return result, round(time.perf_counter() - wall, 3), round(time.process_time() - cpu, 3)


def score_sets(method, split, sets: dict) -> dict:
    """Accuracy, embedding time and fine-tuning time (embeddings cached) of each episode set."""
    results = {}
    for name, episodes in sets.items():
        batch = benchmark.EpisodeBatch(split.flat_images, episodes.support, episodes.query, split.sha256)
        method.reset_embeddings()  # cold: embed every image the set uses, into the method's cache
        _, embed_wall, _ = timed(lambda: method.embeddings_.features_for(batch, method.embed,
                                                                         method.embed_batch_sizes))
        scores, wall, cpu = timed(lambda: method.predict(batch))
        correct = float(np.mean(scores.argmax(-1) == episodes.query_label))
        results[name] = {"accuracy": round(correct * 100, 2), "episodes": batch.n_episodes,
                         "embed_seconds": embed_wall,
                         "finetune_seconds": wall, "finetune_cpu_seconds": cpu}
        print(name, results[name], file=sys.stderr, flush=True)
    return results


def max_n_way(split, protocol: str) -> int:
    """The most ways an episode of this protocol can have on the split."""
    if protocol == "within":
        return int(np.unique(split.alphabet, return_counts=True)[1].max())
    return len(split.alphabet)


def episode_sets_of(config, split, ways: list[int], official) -> dict:
    """The config's cross and within episodes at each N the split allows (and the official runs)."""
    sets = {}
    for n_way in ways:
        for name in ("cross", "within"):
            task = config.task_sets[name]
            if max_n_way(split, task.protocol) >= n_way:
                sets[f"{name}_{n_way}way"] = benchmark.generate_episodes(
                    split.alphabet, split.sha256, task.protocol, n_way, 1, task.n_query, task.episodes,
                    task.seed)
    if official is not None:
        sets["official"] = official
    return sets


def check_sweep(parser, variants: list[dict]) -> None:
    training = sorted(key for variant in variants for key in variant if key not in FINE_TUNING_PARAMS)
    if training:
        parser.error(f"--sweep changes training settings {training}: use --set to train another trunk "
                     f"(a variant may change {', '.join(FINE_TUNING_PARAMS)})")


def scoring_sets(args, config, data, method) -> tuple:
    """(split, episode sets) that --split and --ways ask for."""
    ways = [int(n) for n in args.ways.split(",")]
    if args.split == "validation":
        split = benchmark.split_background(data.background, method.validation_alphabets)[1]
        return split, episode_sets_of(config, split, ways, None)
    official = [t.episodes for t in task_sets(config, data, ("official",))]
    return data.evaluation, episode_sets_of(config, data.evaluation, ways, official[0] if official else None)


def sweep(method, variants: list[dict], data, context, split, sets) -> list[dict]:
    """Each variant of the fine-tuning settings, on the trunk the first fit trained (from the
    checkpoint store), scored on the same episode sets."""
    results = []
    for variant in variants:
        print("variant", variant, file=sys.stderr, flush=True)
        tuned = benchmark.create_method("softmax_transfer", {**method.get_params(), **variant})
        tuned.fit(data.background, context)
        if "from_checkpoint" not in tuned.training_info_:
            raise SystemExit(f"error: sweep variant {variant} trained a new trunk: it changes training settings")
        results.append({"settings": variant, "sets": score_sets(tuned, split, sets)})
    return results


def main() -> int:
    parser = training_arguments(__doc__.splitlines()[0])
    parser.add_argument("--ways", default="20,60",
                        help="comma-separated N of the cross and within sets (within: N <= 40)")
    parser.add_argument("--time-steps", type=int, default=0, help="only time this many training steps")
    parser.add_argument("--checkpoints", default=None, help="a checkpoint folder to reuse (default: train)")
    parser.add_argument("--split", choices=["evaluation", "validation"], default="evaluation",
                        help="score evaluation episodes, or episodes of the held-out background alphabets")
    parser.add_argument("--sweep", default="[]", help="JSON list of fine-tuning settings to score as well")
    args = parser.parse_args()
    if args.tiny:
        args.ways = "2,5"
    config, method, seed, data = training_setup(args, "softmax_transfer")
    result = {"params": method.get_params(), "threads": args.threads, "device": args.device,
              "seed": seed, "load_before": load_average()}
    if args.time_steps:
        result.update(time_training_steps("softmax_transfer", method.get_params(), data.background, args.device,
                                          seed, args.time_steps))
        result["load_after"] = load_average()
        return print_result(result, args.json)

    variants = json.loads(args.sweep)
    check_sweep(parser, variants)
    # The sweep's fits load the trunk the first fit trained, from this folder.
    folder = args.checkpoints or scratch_folder("softmax_transfer-")
    context = fit_context(args.device, seed, benchmark.CheckpointStore(folder, log=log), progress=not args.quiet)
    torch.manual_seed(seed)  # as the runner does
    _, fit_wall, fit_cpu = timed(lambda: method.fit(data.background, context))
    info = method.training_info_
    result.update(fit_seconds=fit_wall, fit_cpu_seconds=fit_cpu, training=info, load_after_fit=load_average())
    if "from_checkpoint" not in info:
        result.update(wall_per_step=round(fit_wall / info["steps"], 4),
                      cpu_per_step=round(fit_cpu / info["steps"], 4))
    split, sets = scoring_sets(args, config, data, method)
    result["split"] = split.name
    result["sets"] = score_sets(method, split, sets)
    result["sweep"] = sweep(method, variants, data, context, split, sets)
    result["load_after"] = load_average()
    return print_result(result, args.json)


if __name__ == "__main__":
    sys.exit(main())

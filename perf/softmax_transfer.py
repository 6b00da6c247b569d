"""Train `softmax_transfer` once, time it, and time and score its per-episode fine-tuning.

    python perf/softmax_transfer.py                        # default config, 2 threads
    python perf/softmax_transfer.py --time-steps 60        # seconds per training step only
    python perf/softmax_transfer.py --checkpoints results/checkpoints \\
        --set methods.softmax_transfer.adapt=head+last           # reuse trained weights, other tuning
    python perf/softmax_transfer.py --checkpoints results/checkpoints --split validation \\
        --sweep '[{"finetune_steps": 0}, {"finetune_learning_rate": 0.1}]'   # tune without the test set

Reports the wall-clock and CPU time of training and per step, and the load average before
and after (the CPU may be shared with other work: read times together with the load). Then,
for each N of --ways on the default config's `cross` and `within` episodes (the same episodes
`run_benchmark.py` scores; 1000 each) and on the official runs: accuracy, the time to embed
the images, and the time to fine-tune every episode of the set at once with the embeddings
already cached. `--split validation` scores episodes of the background alphabets the method
holds out instead (tuning on them leaves the evaluation alphabets untouched); `--sweep` also
scores each listed variant of the fine-tuning settings on the same trained weights. Prints
one JSON object at the end (also written to --json). Run by hand, not by pytest.
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import load_average, print_result, training_arguments, training_setup  # noqa: E402

from benchmark.api import EpisodeBatch, FitContext  # noqa: E402
from benchmark.checkpoints import CheckpointStore  # noqa: E402
from benchmark.data import official_runs_zip  # noqa: E402
from benchmark.training import split_background  # noqa: E402
from methods.softmax_transfer import TRAINING_PARAMS  # noqa: E402
from tasks import episodes as episode_sets  # noqa: E402
from tasks.official import official_episode_set  # noqa: E402


def timed(function):
    """(result, wall seconds, CPU seconds of this process) of function()."""
    wall, cpu = time.perf_counter(), time.process_time()
    result = function()
    return result, round(time.perf_counter() - wall, 3), round(time.process_time() - cpu, 3)


def time_steps(cls, params: dict, background, device: str, steps: int, seed: int) -> dict:
    """Seconds per training step: a fit of 2 + `steps` steps minus a fit of 2 steps.

    Without validation, so this is the cost of the steps alone; the difference cancels
    the fixed costs (resizing the images, building the model, warming up).
    """
    quiet = FitContext(device=device, seed=seed, progress=False, checkpoints=None, log=lambda message: None)
    short = dict(params, steps=2, validation_alphabets=0)
    _, wall_short, cpu_short = timed(lambda: cls(**short).fit(background, quiet))
    _, wall_long, cpu_long = timed(lambda: cls(**dict(short, steps=steps + 2)).fit(background, quiet))
    return {"steps_timed": steps, "wall_per_step": round((wall_long - wall_short) / steps, 4),
            "cpu_per_step": round((cpu_long - cpu_short) / steps, 4), "fixed_wall": wall_short}


def score_sets(method, split, sets: dict) -> dict:
    """Accuracy, embedding time and fine-tuning time (embeddings cached) of each episode set."""
    results = {}
    for name, episodes in sets.items():
        batch = EpisodeBatch(split.flat_images, episodes.support, episodes.query, split.sha256)
        method._embedding_cache = None
        _, embed_wall, _ = timed(lambda: method._features_for(batch))
        scores, wall, cpu = timed(lambda: method.predict(batch))
        correct = float(np.mean(scores.argmax(-1) == episodes.query_label))
        results[name] = {"accuracy": round(correct * 100, 2), "episodes": batch.n_episodes,
                         "embed_seconds": embed_wall,
                         "finetune_seconds": wall, "finetune_cpu_seconds": cpu}
        print(name, results[name], file=sys.stderr, flush=True)
    return results


def episode_sets_of(config, split, ways: list[int], official) -> dict:
    """The config's cross and within episodes at each N the split allows (and the official runs)."""
    sets = {}
    for n_way in ways:
        for name in ("cross", "within"):
            task = config.task_sets[name]
            if episode_sets.max_n_way(split.alphabet, task.protocol) >= n_way:
                sets[f"{name}_{n_way}way"] = episode_sets.generate(
                    split.alphabet, split.sha256, task.protocol, n_way, 1, task.n_query, task.episodes,
                    task.seed)
    if official is not None:
        sets["official"] = official
    return sets


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
    config, method, seed, data = training_setup(args, "softmax_transfer")
    cls = type(method)
    result = {"params": method.get_params(), "threads": args.threads, "device": args.device,
              "seed": seed, "load_before": load_average()}
    if args.time_steps:
        result.update(time_steps(cls, method.get_params(), data.background, args.device, args.time_steps,
                                 seed))
        result["load_after"] = load_average()
        return print_result(result, args.json)

    variants = json.loads(args.sweep)
    training = sorted(key for variant in variants for key in variant if key in TRAINING_PARAMS)
    if training:
        parser.error(f"--sweep changes training settings {training}: use --set to train another trunk")
    # The sweep's fits load the trunk the first fit trained, from this folder.
    store = CheckpointStore(args.checkpoints or tempfile.mkdtemp(prefix="softmax_transfer-"))
    context = FitContext(device=args.device, seed=seed, progress=not args.quiet, checkpoints=store,
                         log=lambda message: print(message, file=sys.stderr))
    torch.manual_seed(seed)  # as the runner does
    _, fit_wall, fit_cpu = timed(lambda: method.fit(data.background, context))
    info = method.training_info_
    result.update(fit_seconds=fit_wall, fit_cpu_seconds=fit_cpu, training=info, load_after_fit=load_average())
    if "from_checkpoint" not in info:
        result.update(wall_per_step=round(fit_wall / info["steps"], 4),
                      cpu_per_step=round(fit_cpu / info["steps"], 4))

    ways = [int(n) for n in args.ways.split(",")]
    if args.split == "validation":
        split = split_background(data.background, method.validation_alphabets)[1]
        sets = episode_sets_of(config, split, ways, None)
    else:
        split = data.evaluation
        sets = episode_sets_of(config, split, ways,
                               official_episode_set(official_runs_zip(data.root, download=False), split))
    result["split"] = split.name
    result["sets"] = score_sets(method, split, sets)
    result["sweep"] = []
    for variant in variants:
        print("variant", variant, file=sys.stderr, flush=True)
        tuned = cls(**{**method.get_params(), **variant}).fit(data.background, context)
        result["sweep"].append({"settings": variant, "sets": score_sets(tuned, split, sets)})
    result["load_after"] = load_average()
    return print_result(result, args.json)


if __name__ == "__main__":
    sys.exit(main())

"""The Siamese method on a GPU, in one call: throughput, a timed training run, and the probe.

1. Throughput of the `koch` net (105x105, 38.9M parameters) with the method's own training
   step (batches sampled and distorted on the device, bf16 autocast, channels_last): eager
   against `torch.compile`, over batch sizes, for both pairings. Reported as images/s,
   Koch pairs/s (one pair per two images), all-pairs pairs/s, TFLOP/s and the fraction of
   the H200's dense bf16 peak (about 790 TFLOP/s; a forward pass is about 0.91 GMAC per image
   and forward plus backward about three forward passes). Timed through the method's public
   behaviour: `fit` without validation, once with `--warmup` steps (compilation and cuDNN
   autotuning happen here, timed apart) and once with `--warmup + --throughput-steps` steps,
   each timed around the whole fit up to a device synchronisation; the difference is the time
   of the extra steps. (Until the scripts moved to perf/, it drove the method's private trainer
   directly for `--throughput-seconds`; no GPU figure was measured with that version.)
2. A timed training run of the config's `siamese` (default configs/koch2015.yaml) that scores
   the official runs (Lake et al., 20 x 20-way) at every validation, as it goes (through
   `FitContext(on_validation=...)`). These scores are reported only: the kept weights are
   chosen by the held-out background alphabets, as always. At the end: the default 20-way
   cross and within episodes too.
3. The reference probe (../shared/probes/siamese_probe.py), run side by side with the
   flags of its published figures, so both sets of numbers come from the same machine.

The GPU machine sees only the checkout, so copy the data and the probe into `.device/`
(ignored by git) first, then run (see README, "Siamese network"):

    mkdir -p .device/omniglot && cp ../shared/omniglot/omniglot.npz ../shared/omniglot/all_runs.zip .device/omniglot/
    cp ../shared/probes/siamese_probe.py .device/
    bash perf/gpu_siamese.sh            # = python perf/gpu_siamese.py --data .device/omniglot --probe .device/siamese_probe.py

Every stage prints JSON lines and all of them are written to OUT/gpu_siamese.jsonl. A stage
that fails is reported and the next one runs. `--tiny` (or `--smoke`) runs every stage with
tiny settings on any device (the CPU too), the compact net instead of koch, results in a
temporary folder unless --out is given, to check the script itself:

    python perf/gpu_siamese.py --tiny --synthetic
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

import benchmark
from common import fit_context, load_average, load_data, machine, run_config, scratch_folder, with_task_sets

MAC_PER_IMAGE = 0.9086e9  # koch forward at 105x105
FLOP_PER_IMAGE = 3 * 2 * MAC_PER_IMAGE  # forward + backward ~ 3 forwards; 2 flop per MAC
H200_BF16_PEAK = 790e12
RESULTS = {"path": None}
VARIANTS = [("koch", 128, False), ("koch", 512, False), ("koch", 512, True), ("all", 128, False), ("all", 256, True)]
FINAL_WAYS = 20
# --tiny: the variants, steps, final episodes and ways of a check on any device.
TINY = {"variants": [("koch", 8, False), ("all", 8, False)], "warmup": 1, "throughput_steps": 2,
        "final_episodes": 4, "final_ways": 5}


def emit(**fields) -> None:
    """Print one JSON line and append it to the results file at once (a run cut short keeps its lines)."""
    line = json.dumps(fields)
    print(line, flush=True)
    if RESULTS["path"] is not None:
        with open(RESULTS["path"], "a", encoding="utf-8") as handle:
            handle.write(line + "\n")


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed_fit(params: dict, data, device: torch.device, steps: int) -> float:
    """Seconds of a fit of `steps` steps without validation, up to a device synchronisation."""
    method = benchmark.create_method("siamese", dict(params, steps=steps, validation_alphabets=0))
    torch.manual_seed(0)
    started = time.perf_counter()
    method.fit(data.background, fit_context(str(device), 0))
    synchronize(device)
    return time.perf_counter() - started


def variant_row(pairing: str, batch: int, steps: int, seconds: float, warm_seconds: float, device) -> dict:
    images_per_second = steps * batch / seconds
    flops = images_per_second * FLOP_PER_IMAGE
    return dict(images_per_s=round(images_per_second), koch_pairs_per_s=round(images_per_second / 2),
                all_pairs_per_s=round(images_per_second * (batch - 1) / 2) if pairing == "all" else None,
                tflop_per_s=round(flops / 1e12, 1), fraction_of_bf16_peak=round(flops / H200_BF16_PEAK, 3),
                warmup_seconds=round(warm_seconds, 1), steps=steps, load=load_average(),
                peak_memory_gb=(round(torch.cuda.max_memory_allocated() / 2**30, 1)
                                if device.type == "cuda" else None))


def throughput(data, device, base: dict, variants, steps: int, warmup: int) -> None:
    """Images per second of the method's training step for each (pairing, batch, compile)."""
    for pairing, batch, compiled in variants:
        params = {**base, "pairing": pairing, "batch_images": batch, "compile": compiled}
        try:
            warm_seconds = timed_fit(params, data, device, warmup)  # compiles, autotunes
            short = timed_fit(params, data, device, warmup)
            long = timed_fit(params, data, device, warmup + steps)
            seconds = max(long - short, 1e-9)
            emit(stage="throughput", pairing=pairing, batch_images=batch, compiled=compiled,
                 **variant_row(pairing, batch, steps, seconds, warm_seconds, device))
        except Exception as error:  # keep going: a failed variant is a result too
            emit(stage="throughput", pairing=pairing, batch_images=batch, compiled=compiled,
                 failed=f"{type(error).__name__}: {str(error)[:300]}")
        finally:
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()


def accuracy(method, batch: benchmark.EpisodeBatch, labels: np.ndarray) -> float:
    """Per cent right, scored by the method's current weights without its feature cache."""
    scores = benchmark.score_by_embedding(batch, method.embed, method.score)
    return round(float(np.mean(scores.argmax(-1) == labels)) * 100, 2)


def final_sets(config, data, ways: int, episodes: int) -> dict:
    """The config's cross and within task sets at this N with this many episodes, and the
    official runs (when the config has them), by name."""
    chosen = {}
    for name, task in config.to_dict()["task_sets"].items():
        if name in ("cross", "within"):
            chosen[name] = dict(task, n_way=[ways], episodes=episodes)
        elif task["protocol"] == "official":
            chosen["official"] = task
    resolved = benchmark.resolve_task_sets(with_task_sets(config, chosen), data, download=False)
    return {(t.name if t.name == "official" else f"{t.name}_{ways}way"): t for t in resolved}


def timed_training(data, params: dict, device, seed: int, sets: dict) -> None:
    """Train with the method's own loop; score the official runs at each validation."""
    method = benchmark.create_method("siamese", params)
    official = sets.get("official")
    started = time.perf_counter()

    def on_validation(step: int, validation_accuracy: float) -> None:
        emit(stage="training", step=step, wall_seconds=round(time.perf_counter() - started, 1),
             validation_accuracy=round(validation_accuracy * 100, 2),
             official=(accuracy(method, official.batch(data), official.episodes.query_label)
                       if official is not None else None))

    context = fit_context(str(device), seed, log=lambda message: emit(stage="log", message=message),
                          on_validation=on_validation)
    torch.manual_seed(seed)  # as the runner does
    method.fit(data.background, context)
    info = dict(method.training_info_)
    history = info.pop("history", [])
    images = info["steps"] * method.params_["batch_images"]
    emit(stage="trained", **info, images_per_s=round(images / max(info["train_seconds"], 1e-9)),
         last_validations=history[-3:])
    results = {name: accuracy(method, task_set.batch(data), task_set.episodes.query_label)
               for name, task_set in sets.items()}
    emit(stage="final", architecture=method.architecture_, steps=info["steps"],
         train_seconds=info["train_seconds"], **results)


def run_probe(probe: Path, data_dir: Path, seconds: float, smoke: bool) -> None:
    """The reference probe, with the flags of its published figures (compiled, no distortions)."""
    if smoke:  # its evaluation embeds all 13,180 images at 105x105: minutes on a CPU
        command = [sys.executable, str(probe), "--help"]
    else:
        command = [sys.executable, str(probe), "--data", str(data_dir), "--train-seconds", str(seconds),
                   "--compile", "--no-aug", "--batch", "128", "--lr", "1e-4", "--eval-every", "30"]
    emit(stage="probe", command=" ".join(command))
    result = subprocess.run(command, capture_output=True, text=True)
    for line in result.stdout.splitlines():
        try:
            emit(stage="probe", **json.loads(line))
        except (json.JSONDecodeError, TypeError):
            emit(stage="probe", output=line[:300])
    if result.returncode != 0:
        emit(stage="probe", failed=f"exit code {result.returncode}", stderr=result.stderr[-1500:])


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", dest="data_dir", default=".device/omniglot",
                        help="folder with omniglot.npz and all_runs.zip")
    parser.add_argument("--synthetic", action="store_true",
                        help="benchmark.synthetic_omniglot() instead of --data (no official runs)")
    parser.add_argument("--probe", type=Path, default=Path(".device/siamese_probe.py"))
    parser.add_argument("--config", default="configs/koch2015.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config overrides for the timed run, e.g. methods.siamese.steps=20000")
    parser.add_argument("--out", type=Path, default=None, help="default: $OUT or results/gpu")
    parser.add_argument("--stages", default="throughput,train,probe")
    parser.add_argument("--warmup", type=int, default=5, help="throughput: untimed steps first")
    parser.add_argument("--throughput-steps", type=int, default=100, help="throughput: timed steps per variant")
    parser.add_argument("--probe-seconds", type=float, default=120.0)
    parser.add_argument("--final-episodes", type=int, default=1000)
    parser.add_argument("--final-ways", type=int, default=FINAL_WAYS)
    parser.add_argument("--tiny", "--smoke", dest="tiny", action="store_true",
                        help="tiny settings, any device: checks the script, measures nothing")
    args = parser.parse_args()
    args.variants = VARIANTS  # each compiled variant compiles anew (about a minute): few of them
    if args.tiny:
        vars(args).update(TINY)
    if args.out is None:
        args.out = Path(scratch_folder("gpu_siamese-") if args.tiny else os.environ.get("OUT", "results/gpu"))
    return args


def start(args) -> torch.device:
    """The device, with its fast settings; the results file, emptied; the environment line."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    args.out.mkdir(parents=True, exist_ok=True)
    RESULTS["path"] = args.out / "gpu_siamese.jsonl"
    RESULTS["path"].write_text("")
    emit(stage="environment", device=str(device), torch=torch.__version__,
         gpu=torch.cuda.get_device_name() if device.type == "cuda" else None, smoke=args.tiny,
         machine=machine(), load=load_average())
    return device


def main() -> int:
    args = arguments()
    stages = set(args.stages.split(","))
    device = start(args)
    started = time.perf_counter()
    data = load_data(args)
    config = run_config(args, args.config, args.overrides)
    params = dict(config.methods.get("siamese", {}))
    try:
        if "throughput" in stages:
            base = dict(params, architecture=params["architecture"] if args.tiny else "koch")
            throughput(data, device, base, args.variants, args.throughput_steps, args.warmup)
        if "train" in stages:
            try:
                sets = final_sets(config, data, args.final_ways, args.final_episodes)
                timed_training(data, params, device, config.seed, sets)
            except Exception as error:
                emit(stage="final", failed=f"{type(error).__name__}: {str(error)[:500]}")
        if "probe" in stages:
            if args.probe.is_file():
                run_probe(args.probe, Path(args.data_dir), args.probe_seconds, args.tiny)
            else:
                emit(stage="probe", failed=f"{args.probe} not found: copy siamese_probe.py there")
    finally:
        emit(stage="done", wall_seconds=round(time.perf_counter() - started, 1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The Siamese method on a GPU, in one call: throughput, a timed training run, and the probe.

1. Throughput of the `koch` net (105x105, 38.9M parameters) with the method's own training
   step (batches sampled and distorted on the device, bf16 autocast, channels_last): eager
   against `torch.compile`, over batch sizes, for both pairings. Reported as images/s,
   Koch pairs/s (one pair per two images), all-pairs pairs/s, TFLOP/s and the fraction of
   the H200's dense bf16 peak (about 790 TFLOP/s; a forward pass is about 0.91 GMAC per image
   and forward plus backward about three forward passes).
2. A timed training run of the config's `siamese` (default configs/koch2015.yaml) that scores
   the official runs (Lake et al., 20 x 20-way) at every validation, as it goes. These
   scores are reported only: the kept weights are chosen by the held-out background
   alphabets, as always. At the end: the default 20-way cross and within episodes too.
3. The reference probe (../shared/probes/siamese_probe.py), run side by side with the
   flags of its published figures, so both sets of numbers come from the same machine.

The GPU machine sees only the checkout, so copy the data and the probe into `.device/`
(ignored by git) first, then run (see README, "Siamese network"):

    mkdir -p .device/omniglot && cp ../shared/omniglot/omniglot.npz ../shared/omniglot/all_runs.zip .device/omniglot/
    cp ../shared/probes/siamese_probe.py .device/
    bash perf/gpu_siamese.sh            # = python perf/gpu_siamese.py --data .device/omniglot --probe .device/siamese_probe.py

Every stage prints JSON lines and all of them are written to OUT/gpu_siamese.jsonl. A stage
that fails is reported and the next one runs. `--smoke` runs every stage with tiny settings
on any device (the CPU too), to check the script itself.
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

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmark.api import EpisodeBatch, FitContext  # noqa: E402
from benchmark.config import check_hyperparameters, load_config  # noqa: E402
from benchmark.data import load_omniglot, official_runs_zip  # noqa: E402
from benchmark.registry import get_method  # noqa: E402
from benchmark.training import seeded_generator, split_tensor  # noqa: E402
from methods import _siamese_training as training  # noqa: E402
from methods._siamese_nets import SiameseNet  # noqa: E402
from tasks import episodes as episode_sets  # noqa: E402
from tasks.official import official_episode_set  # noqa: E402

MAC_PER_IMAGE = 0.9086e9  # koch forward at 105x105
FLOP_PER_IMAGE = 3 * 2 * MAC_PER_IMAGE  # forward + backward ~ 3 forwards; 2 flop per MAC
H200_BF16_PEAK = 790e12
RESULTS = {"path": None}


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


def throughput(background, device, base: dict, variants, seconds: float, warmup: int) -> None:
    """Images per second of the method's training step for each (pairing, batch, compile)."""
    data = split_tensor(background, 105, device)
    for pairing, batch, compiled in variants:
        try:
            torch.manual_seed(0)
            net = SiameseNet("koch", 105).to(device)
            if device.type == "cuda":
                net = net.to(memory_format=torch.channels_last)
            method = get_method("siamese")(**{**base, "pairing": pairing, "batch_images": batch,
                                              "compile": compiled})
            settings = method.settings(method.resolved_params(str(device)))
            trainer = training.Trainer(net, data, settings, seeded_generator(0, device))
            started = time.perf_counter()
            for index in range(warmup):  # compilation and cuDNN autotuning happen here
                trainer.step(index)
            synchronize(device)
            warm_seconds = time.perf_counter() - started
            steps, started = 0, time.perf_counter()
            while time.perf_counter() - started < seconds or steps < 2:
                trainer.step(warmup + steps)
                steps += 1
                if steps % 10 == 0:
                    synchronize(device)
            synchronize(device)
            images_per_second = steps * batch / (time.perf_counter() - started)
            flops = images_per_second * FLOP_PER_IMAGE
            emit(stage="throughput", pairing=pairing, batch_images=batch, compiled=compiled,
                 images_per_s=round(images_per_second), koch_pairs_per_s=round(images_per_second / 2),
                 all_pairs_per_s=round(images_per_second * (batch - 1) / 2) if pairing == "all" else None,
                 tflop_per_s=round(flops / 1e12, 1), fraction_of_bf16_peak=round(flops / H200_BF16_PEAK, 3),
                 warmup_seconds=round(warm_seconds, 1), steps=steps,
                 peak_memory_gb=(round(torch.cuda.max_memory_allocated() / 2**30, 1)
                                 if device.type == "cuda" else None))
        except Exception as error:  # keep going: a failed variant is a result too
            emit(stage="throughput", pairing=pairing, batch_images=batch, compiled=compiled,
                 failed=f"{type(error).__name__}: {str(error)[:300]}")
        finally:
            net = trainer = None
            if device.type == "cuda":
                torch.cuda.empty_cache()
                torch.cuda.reset_peak_memory_stats()


def accuracy(method, split, episodes) -> float:
    batch = EpisodeBatch(split.flat_images, episodes.support, episodes.query, f"eval:{split.sha256}")
    return round(float(np.mean(method.predict(batch).argmax(-1) == episodes.query_label)) * 100, 2)


def timed_training(data, params: dict, device, seed: int, final_episodes: int, config) -> None:
    """Train with the method's own loop; score the official runs at each validation."""
    evaluation = data.evaluation
    official = official_episode_set(official_runs_zip(data.root, download=False), evaluation)
    method = get_method("siamese")(**params)
    context = FitContext(device=str(device), seed=seed, progress=False, checkpoints=None,
                         log=lambda message: emit(stage="log", message=message))
    started = time.perf_counter()
    method.initialise_network(context)

    def observe(fitted, step: int, validation_accuracy: float) -> None:
        fitted._embedding_cache = None  # features of earlier weights are stale
        emit(stage="training", step=step, wall_seconds=round(time.perf_counter() - started, 1),
             validation_accuracy=round(validation_accuracy * 100, 2),
             official=accuracy(fitted, evaluation, official))
        fitted._embedding_cache = None

    info = method.train_network(data.background, context, observe=observe)
    method.training_info_ = info
    method._embedding_cache = None
    history = info.pop("history")
    images = info["steps"] * method.params_["batch_images"]
    emit(stage="trained", **info, images_per_s=round(images / max(info["train_seconds"], 1e-9)),
         last_validations=history[-3:])
    results = {"official": accuracy(method, evaluation, official)}
    for name in ("cross", "within"):
        task = config.task_sets[name]
        episodes = episode_sets.generate(evaluation.alphabet, evaluation.sha256, task.protocol, 20, 1,
                                         task.n_query, final_episodes, task.seed)
        results[f"{name}_20way"] = accuracy(method, evaluation, episodes)
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path(".device/omniglot"),
                        help="folder with omniglot.npz and all_runs.zip")
    parser.add_argument("--probe", type=Path, default=Path(".device/siamese_probe.py"))
    parser.add_argument("--config", default="configs/koch2015.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="config overrides for the timed run, e.g. methods.siamese.steps=20000")
    parser.add_argument("--out", type=Path, default=Path(os.environ.get("OUT", "results/gpu")))
    parser.add_argument("--stages", default="throughput,train,probe")
    parser.add_argument("--throughput-seconds", type=float, default=4.0)
    parser.add_argument("--probe-seconds", type=float, default=120.0)
    parser.add_argument("--final-episodes", type=int, default=1000)
    parser.add_argument("--smoke", action="store_true", help="tiny settings, any device: checks the script")
    args = parser.parse_args()
    stages = set(args.stages.split(","))
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    args.out.mkdir(parents=True, exist_ok=True)
    RESULTS["path"] = args.out / "gpu_siamese.jsonl"
    RESULTS["path"].write_text("")
    emit(stage="environment", device=str(device), torch=torch.__version__,
         gpu=torch.cuda.get_device_name() if device.type == "cuda" else None, smoke=args.smoke)
    started = time.perf_counter()
    data = load_omniglot(args.data, download=False, progress=False)
    config = load_config(args.config, args.overrides)
    params = dict(check_hyperparameters("siamese", get_method("siamese"), config.methods.get("siamese", {})))
    if args.smoke:
        params.update(steps=4, batch_images=8, validate_every=2, validation_episodes=5, compile=False)
    try:
        if "throughput" in stages:
            variants = ([("koch", 4, False), ("all", 4, False)] if args.smoke else
                        # each compiled variant compiles anew (about a minute): few of them
                        [("koch", 128, False), ("koch", 512, False), ("koch", 512, True),
                         ("all", 128, False), ("all", 256, True)])
            throughput(data.background, device, params, variants,
                       0.5 if args.smoke else args.throughput_seconds, 1 if args.smoke else 5)
        if "train" in stages:
            try:
                final_episodes = 5 if args.smoke else args.final_episodes
                timed_training(data, params, device, config.seed, final_episodes, config)
            except Exception as error:
                emit(stage="final", failed=f"{type(error).__name__}: {str(error)[:500]}")
        if "probe" in stages:
            if args.probe.is_file():
                run_probe(args.probe, args.data, args.probe_seconds, args.smoke)
            else:
                emit(stage="probe", failed=f"{args.probe} not found: copy siamese_probe.py there")
    finally:
        emit(stage="done", wall_seconds=round(time.perf_counter() - started, 1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

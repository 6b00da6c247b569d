"""The harness beside busy processes: quiet, then with `--busy` CPU-bound processes running.

    python perf/busy_machine.py                            # quiet, then beside two `while True: pass`
    python perf/busy_machine.py --wait-policy ACTIVE       # OpenMP's spinning threads (torch's default)
    python perf/busy_machine.py --tiny --synthetic         # seconds: checks the script, measures nothing

Two measurements, each in a fresh process, first on a quiet machine and then beside the busy
processes: (1) the random + 1-NN default run, the whole `run_benchmark.py` command (skipped
with --synthetic: the command reads real data), and (2) `--steps` protonet training steps
(perf/train_steps.py). The ratio busy/quiet of each is what issue 19's target bounds (at most
3); with two busy processes on 2 cores a fair share of the CPU is half, a ratio of 2.
`--wait-policy` sets OMP_WAIT_POLICY for the measured processes: `auto` (the default) does
what the command line does for itself (benchmark/threads.py): nothing on the quiet machine,
PASSIVE beside the busy processes; PASSIVE or ACTIVE set it for both measurements.
One JSON line at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import ROOT, add_data_options, load_average, print_result

BUSY = "while True: pass"


def timed(command: list[str], env: dict) -> tuple[float, str]:
    started = time.perf_counter()
    result = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        sys.exit(f"error: {' '.join(command)} failed:\n{result.stderr[-2000:]}")
    return time.perf_counter() - started, result.stdout


def measure(args, env: dict) -> dict:
    """Seconds of the random + 1-NN run (None with --synthetic) and of the protonet steps."""
    load = load_average()
    run_seconds = None
    if not args.synthetic:
        with tempfile.TemporaryDirectory(prefix="busy-run-") as folder:
            extra = ["--config", "configs/smoke.yaml"] if args.tiny else []
            run_seconds, _ = timed([sys.executable, "run_benchmark.py", "--methods", "random,nearest_neighbor",
                                    "--quiet", "--no-download", "--data-dir", args.data_dir,
                                    "--out", str(Path(folder) / "run"), *extra], env)
    data = ["--synthetic"] if args.synthetic else ["--data-dir", args.data_dir]
    steps_command = [sys.executable, "perf/train_steps.py", "--methods", "protonet", "--steps", str(args.steps),
                     *data, *(["--tiny"] if args.tiny else [])]
    _, output = timed(steps_command, env)
    per_step = json.loads(output.strip().splitlines()[-1])["methods"]["protonet"]["wall_per_step"]
    return {"run_seconds": None if run_seconds is None else round(run_seconds, 2),
            "protonet_seconds_per_step": per_step, "protonet_seconds": round(per_step * args.steps, 2),
            "load_before": load, "load_after": load_average()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_data_options(parser)
    parser.add_argument("--busy", type=int, default=2, help="CPU-bound processes beside the harness")
    parser.add_argument("--steps", type=int, default=200, help="protonet training steps timed")
    parser.add_argument("--wait-policy", choices=["auto", "PASSIVE", "ACTIVE"], default="auto")
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    if args.tiny:
        args.steps, args.busy = 2, min(args.busy, 1)
    env = {key: value for key, value in os.environ.items() if key != "OMP_WAIT_POLICY"}
    if args.wait_policy != "auto":
        env["OMP_WAIT_POLICY"] = args.wait_policy
    quiet = measure(args, env)
    busy = [subprocess.Popen([sys.executable, "-c", BUSY]) for _ in range(args.busy)]
    try:
        time.sleep(1)
        loaded = measure(args, env if args.wait_policy != "auto" else dict(env, OMP_WAIT_POLICY="PASSIVE"))
    finally:
        for process in busy:
            process.kill()
            process.wait()
    ratios = {key: round(loaded[key] / quiet[key], 2) for key in ("run_seconds", "protonet_seconds")
              if quiet[key] and loaded[key] is not None}
    return print_result({"busy_processes": args.busy, "wait_policy": args.wait_policy,
                         "steps": args.steps, "quiet": quiet, "busy": loaded, "ratios": ratios}, args.json)


if __name__ == "__main__":
    sys.exit(main())

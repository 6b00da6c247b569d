#!/usr/bin/env bash
# The Siamese GPU benchmark in one call (see perf/gpu_siamese.py for what it measures).
# Needs the data and the reference probe copied into the ignored folder .device/ first:
#   mkdir -p .device/omniglot && cp ../shared/omniglot/omniglot.npz ../shared/omniglot/all_runs.zip .device/omniglot/
#   cp ../shared/probes/siamese_probe.py .device/
# Results: JSON lines on stdout and in ${OUT:-results/gpu}/gpu_siamese.jsonl.
# Extra arguments go to the Python script, e.g. --tiny (or --smoke: tiny, any device) or
# --set methods.siamese.steps=20000.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONWARNINGS="${PYTHONWARNINGS:-ignore::UserWarning}"
exec python perf/gpu_siamese.py --data .device/omniglot --probe .device/siamese_probe.py \
    --out "${OUT:-results/gpu}" "$@"

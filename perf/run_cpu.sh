#!/usr/bin/env bash
# Every CPU figure of perf/README.md in one call (about 15 minutes on a quiet 2-core machine):
#   OMNIGLOT_DIR=../shared/omniglot bash perf/run_cpu.sh
# Writes JSON results and logs (with the load average before and after each step) to
# ${OUT:-perf/results}. The trained Siamese weights come from results/checkpoints/ (a
# default run leaves them there; without them the first step trains them, about 4 minutes).
set -euo pipefail
cd "$(dirname "$0")/.."
: "${OMNIGLOT_DIR:?set OMNIGLOT_DIR to the Omniglot folder}"
export OMNIGLOT_DIR
OUT=${OUT:-perf/results}
mkdir -p "$OUT"

step() {  # step NAME COMMAND...: run it, its JSON line to OUT/NAME.json, its log to OUT/NAME.log
    local name=$1; shift
    { echo "# $(date -u +%FT%TZ) $*"; echo "# before: $(cat /proc/loadavg)"; } > "$OUT/$name.log"
    "$@" > "$OUT/$name.json" 2>> "$OUT/$name.log"
    echo "# after: $(cat /proc/loadavg)" >> "$OUT/$name.log"
    echo "$name done"
}

step eval_engine_siamese_pairs python perf/eval_engine.py --method siamese --loop pairs --loop-episodes 50
step eval_engine_siamese_episode python perf/eval_engine.py --method siamese --loop episode --loop-episodes 1000
step eval_engine_nearest_neighbor_pairs python perf/eval_engine.py --method nearest_neighbor --loop pairs \
    --loop-episodes 50
step eval_engine_nearest_neighbor_episode python perf/eval_engine.py --method nearest_neighbor --loop episode \
    --loop-episodes 1000

# 1-NN through the runner, the whole process timed: everything `run_benchmark.py` does for it.
run_dir=$(mktemp -d)
{ echo "# $(date -u +%FT%TZ) commit $(git rev-parse --short HEAD)"; echo "# before: $(cat /proc/loadavg)"; } \
    > "$OUT/nearest_neighbor_run.log"
/usr/bin/time -v python run_benchmark.py --methods nearest_neighbor --quiet --out "$run_dir/run" \
    >> "$OUT/nearest_neighbor_run.log" 2>&1
echo "# after: $(cat /proc/loadavg)" >> "$OUT/nearest_neighbor_run.log"
python -c "import json, sys; m = json.load(open(sys.argv[1])); print(json.dumps(m['methods']['nearest_neighbor']['timing']))" \
    "$run_dir/run/run.json" > "$OUT/nearest_neighbor_run.json"
rm -rf "$run_dir"
echo "nearest_neighbor_run done"

step scaling python perf/scaling.py --repeats 3
# A fresh inductor cache, so that the compile time reported is a cold one.
inductor_cache=$(mktemp -d)
step train_throughput env TORCHINDUCTOR_CACHE_DIR="$inductor_cache" python perf/train_throughput.py
rm -rf "$inductor_cache"
step train_throughput_1thread python perf/train_throughput.py --modes eager --threads 1

# Issue 19 (2026-11-30): busy machine, training steps natively and with AVX2 kernels only,
# and protonet's conv backbone against easyfsl's per-episode evaluate loop.
step busy_machine python perf/busy_machine.py
step train_steps python perf/train_steps.py --steps 40
step train_steps_avx2_emulated env ONEDNN_MAX_CPU_ISA=AVX2 ATEN_CPU_CAPABILITY=avx2 \
    python perf/train_steps.py --steps 40 --set methods.protonet.precision=fp32
step eval_engine_protonet_episode python perf/eval_engine.py --method protonet --loop episode \
    --loop-episodes 100 --tolerance 0.05

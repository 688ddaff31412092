#!/usr/bin/env bash
# Every GPU check of the fast path (issue 7) in one run, for a session lent an H100/H200:
#   bash benchmarks/gpu_checks.sh [OUT_DIR]          (about 8 minutes; the device budget is 15)
# Each step's output goes to OUT_DIR (default $OUT, else /tmp/gpu_checks) and to the terminal;
# a failing step does not stop the others. Set RECIPE_EPOCHS=50 for the full paper recipe
# (50 epochs over 15 000 pre-augmented images) instead of the 4-epoch short run.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT_DIR=${1:-${OUT:-/tmp/gpu_checks}}
mkdir -p "$OUT_DIR"
PY=${PYTHON:-python}
step() { local name=$1; shift; echo "=== $name: $*"; ( time "$@" ) 2>&1 | tee "$OUT_DIR/$name.txt"; }

step gpu nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
step tests "$PY" -m pytest -q -p no:cacheprovider tests/test_fastpath.py tests/test_dataset.py tests/test_push_prune.py
step train_step "$PY" benchmarks/train_step.py --push-images 20000
step train_step_compile "$PY" benchmarks/train_step.py --compile --steps 20 --push-images 2000
step memory_fit "$PY" benchmarks/memory_fit.py --memory-gib 15 6
step recipe "$PY" benchmarks/train_step.py --steps 5 --push-images 2000 --short-run \
     --short-epochs "${RECIPE_EPOCHS:-4}" --short-per-class 5000 --short-patients 240
echo "=== done: $OUT_DIR"

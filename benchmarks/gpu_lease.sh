#!/usr/bin/env bash
# Everything one 15-minute GPU lease of the device tool runs, in one command: issue 4's
# benchmarks/gpu_train.sh, then issue 6's bundled models trained on with
# benchmarks/gpu_train_bundled.sh for what is left of DEADLINE seconds (default 540).
#
#   DEADLINE=540 bash benchmarks/gpu_lease.sh KIT_DIR        (OUT must name the output folder)
#
# KIT_DIR holds what the GPU machine lacks, prepared on the development machine (see
# docs/benchmarks.md, "Training on one GPU"): whl/ (ml_collections, and the flax, optax and
# orbax-checkpoint wheels the tests ran with), data/train/ (the training images in
# ../shared/data's layout) and models/mracnn-bundled-q2.mracnn.xz (the start of all three runs:
# q1 and q3 are forked from it, since the call carries at most 64 MiB). SKIP_BENCH=1 leaves out
# the benchmark; LR (default 1e-4) and MARGIN (seconds kept for export, default 80) are passed on.
# The benchmark's log goes into WORK (gpu_train_bundled.sh's, default /tmp/bundled), so that it
# travels in OUT/logs.tar.gz; gpu_train_bundled.sh prints the GPU and the package versions.
set -u
T0=$(date +%s)
KIT=$(readlink -f "${1:?usage: gpu_lease.sh KIT_DIR}")
DEADLINE=${DEADLINE:-540}
: "${OUT:?OUT must name the folder the models and logs are written to}"
cd "$(dirname "$0")/.."
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
  --target /tmp/site "$KIT"/whl/*.whl || exit 1
export PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 WORK=${WORK:-/tmp/bundled}
mkdir -p /tmp/init "$WORK"
xz -dc "$KIT/models/mracnn-bundled-q2.mracnn.xz" > /tmp/init/mracnn-bundled-q2.mracnn || exit 1
ln -sf mracnn-bundled-q2.mracnn /tmp/init/mracnn-bundled-q1.mracnn
ln -sf mracnn-bundled-q2.mracnn /tmp/init/mracnn-bundled-q3.mracnn
sha256sum /tmp/init/mracnn-bundled-q2.mracnn
date -u

if [ "${SKIP_BENCH:-0}" != 1 ]; then
  echo "== benchmarks/gpu_train.sh ($(( $(date +%s) - T0 )) s in)"
  timeout "${BENCH_TIMEOUT:-230}" benchmarks/gpu_train.sh 2>&1 | tee "$WORK/gpu_train.log" | tail -30
  echo "gpu_train.sh exit status ${PIPESTATUS[0]}"
fi

BUDGET=$(( DEADLINE - ($(date +%s) - T0) - ${MARGIN:-80} ))
echo "== benchmarks/gpu_train_bundled.sh, budget $BUDGET s ($(( $(date +%s) - T0 )) s in)"
INIT_FROM=/tmp/init LR=${LR:-1e-4} benchmarks/gpu_train_bundled.sh "$KIT/data" "$OUT" "$BUDGET"
echo "== done $(( $(date +%s) - T0 )) s in"
if [ -f "$WORK/gpu_train.log" ]; then tail -3 "$WORK/gpu_train.log"; fi

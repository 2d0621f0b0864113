#!/usr/bin/env bash
# Our training step (float32, bfloat16) against the PyTorch twin's, mracnn and wacnn at batch 16
# of 256², on one GPU, in one table (benchmarks/bench_gpu_compare.py); within 8 minutes.
#
#   bash benchmarks/gpu_compare.sh [KIT_DIR]        (OUT, if set, receives table.md and rows.json)
#   device tool: command "OUT=$OUT bash benchmarks/gpu_compare.sh .kit", carry [".kit/whl"]
#
# The GPU image has jax, flax, optax, orbax and torch; of our dependencies it lacks only
# ml_collections, whose wheel is KIT_DIR/whl (scripts/make_gpu_kit.py; any folder of wheels
# does). Nothing else is needed: random images, random weights. With the bundled model files
# moved aside the working tree is a few MiB, far under the 64 MiB a call carries.
# Settings: PEAK_TF32 and PEAK_BF16, dense TFLOP/s (default: by the GPU's name, bench_gpu_compare's
# DENSE_PEAKS; the lent machines are H100s and H200s); DEADLINE (450 s) for
# the workers; STEPS (20) timed steps each; VARIANTS (jax-f32 jax-bf16 torch-eager; add
# torch-compile where the time allows); PYTHON (python3); WORK (/tmp/gpu_compare); COMPARE_ARGS
# (more options of bench_gpu_compare.py, e.g. --smoke for a CPU dry run).
set -u
KIT=${1:-}
PYTHON=${PYTHON:-python3}
WORK=${WORK:-/tmp/gpu_compare}
cd "$(dirname "$0")/.."
mkdir -p "$WORK" ${OUT:+"$OUT"}
if [ -n "$KIT" ] && compgen -G "$KIT/whl/*.whl" >/dev/null; then
  rm -rf "$WORK/site"
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$WORK/site" "$KIT"/whl/*.whl || { echo "gpu_compare.sh: installing wheels failed" >&2; exit 1; }
  export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader 2>/dev/null
"$PYTHON" -c 'import jax, torch; print("jax", jax.__version__, jax.devices(), "torch", torch.__version__)'
# shellcheck disable=SC2086
timeout $(( ${DEADLINE:-450} + 30 )) "$PYTHON" benchmarks/bench_gpu_compare.py \
  --configs mracnn wacnn --batch 16 --crop 256 --steps "${STEPS:-20}" \
  --variants ${VARIANTS:-jax-f32 jax-bf16 torch-eager} \
  ${PEAK_TF32:+--peak-tf32 "$PEAK_TF32"} ${PEAK_BF16:+--peak-bf16 "$PEAK_BF16"} --deadline "${DEADLINE:-450}" \
  ${OUT:+--json "$OUT/rows.json"} ${COMPARE_ARGS:-} | tee "${OUT:-$WORK}/table.md"
exit "${PIPESTATUS[0]}"

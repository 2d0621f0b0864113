#!/usr/bin/env bash
# Trains the three bundled models (configs/bundled.py at quality 1, 2 and 3) side by side on one
# GPU for a fixed wall-clock budget, then exports each as a float16 model file.
#
#   benchmarks/gpu_train_bundled.sh DATA_ROOT OUT_DIR [SECONDS]
#
# INIT_FROM=DIR continues from the model files DIR/mracnn-bundled-q{1,2,3}.mracnn (e.g.
# mracnn_jax/assets/models; links to one file fork all three from it) with a fresh optimiser,
# instead of a random initialisation. LR (default 2e-4), BATCH (16), CROP (256), WORKERS (5) and
# MEM_FRACTION (0.3) override the run's settings.
# DATA_ROOT has the layout of ../shared/data (train/bsds500/{train,test,val}, train/cid22).
# The three runs share the GPU (each may take 30 % of its memory) and stop cleanly when SECONDS
# (default 420, compilation included) are spent: checkpoint, validation on 8 held-out images,
# export. OUT_DIR receives mracnn-bundled-q{1,2,3}.mracnn in 15 MiB parts, logs.tar.gz (config, metrics.jsonl and
# the log of each run) and summary.txt. A run that fails still leaves its last checkpoint, from
# which the model is exported.
set -uo pipefail
cd "$(dirname "$0")/.."
DATA=$(readlink -f "$1"); OUT=$(readlink -f "$2"); BUDGET=${3:-420}
PYTHON=${PYTHON:-python3}
WORK=${WORK:-/tmp/bundled}
# The λ of each quality, from the one place that defines them.
declare -A LAMBDA
read -r LAMBDA[1] LAMBDA[2] LAMBDA[3] < <(PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}" "$PYTHON" -c \
  "from configs.bundled import QUALITY_LAMBDAS as q; print(q[1], q[2], q[3])")
[ -n "${LAMBDA[3]:-}" ] || { echo "cannot read configs/bundled.py's QUALITY_LAMBDAS" >&2; exit 1; }
mkdir -p "$OUT" "$WORK"
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader \
  2>/dev/null
"$PYTHON" -c "import sys, jax, flax, optax, numpy, orbax.checkpoint as o; \
print(sys.version.split()[0], 'jax', jax.__version__, 'flax', flax.__version__, 'optax', \
optax.__version__, 'orbax', o.__version__, 'numpy', numpy.__version__, jax.devices())"

for q in 1 2 3; do
  wd="$WORK/q$q"
  MRACNN_DATA="$DATA" XLA_PYTHON_CLIENT_MEM_FRACTION=${MEM_FRACTION:-0.3} PYTHONUNBUFFERED=1 \
  "$PYTHON" train.py --config=configs/bundled.py --workdir="$wd" \
    --config.train.lmbda="${LAMBDA[$q]}" \
    --config.train.batch_size="${BATCH:-16}" --config.train.crop_size="${CROP:-256}" \
    --config.train.learning_rate="${LR:-2e-4}" --config.train.lr_schedule=constant \
    --config.train.warmup_steps=200 --config.train.num_steps=1000000 \
    --config.train.time_limit_s="$BUDGET" --config.train.checkpoint_every=500 \
    --config.train.keep_checkpoints=1 --config.train.log_every=50 \
    --config.train.eval_every=1000 --config.train.num_eval_images=8 \
    --config.train.export_dtype=float16 --config.train.export_name="mracnn-bundled-q$q.mracnn" \
    --config.data.backend=python --config.data.num_workers="${WORKERS:-5}" \
    --config.train.init_from="${INIT_FROM:+$INIT_FROM/mracnn-bundled-q$q.mracnn}" \
    >"$wd.log" 2>&1 &
  pids[$q]=$!
done

for q in 1 2 3; do
  wait "${pids[$q]}"; rc=$?
  wd="$WORK/q$q"; model="$wd/mracnn-bundled-q$q.mracnn"
  echo "q$q: train.py exit status $rc"
  if [ ! -f "$model" ] && [ -d "$wd/checkpoints" ]; then
    "$PYTHON" train.py --export_only --workdir="$wd" --export_path="$model" \
      --export_dtype=float16 >>"$wd.log" 2>&1 && echo "q$q: exported from the last checkpoint"
  fi
  # Files over 15 MiB are split (the device tool brings back at most 16 MiB per file):
  # join with  cat mracnn-bundled-qN.mracnn.part* > mracnn-bundled-qN.mracnn
  [ -f "$model" ] && split -b 15M -d "$model" "$OUT/$(basename "$model").part" \
    && sha256sum "$model"
  tail -c 1500 "$wd.log" | tr '\r' '\n' | grep -v '^\s*$' | tail -4
done

{
  for q in 1 2 3; do
    echo "== q$q (lambda ${LAMBDA[$q]})"
    grep '"split": "train"' "$WORK/q$q/metrics.jsonl" 2>/dev/null | tail -2
    grep '"split": "eval"' "$WORK/q$q/metrics.jsonl" 2>/dev/null | tail -3
  done
} | tee "$OUT/summary.txt"
tar -czf "$OUT/logs.tar.gz" -C "$WORK" --exclude=checkpoints --exclude='*.mracnn' .
ls -la "$OUT"

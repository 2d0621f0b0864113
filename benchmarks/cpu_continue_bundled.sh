#!/usr/bin/env bash
# Continues training the bundled models on a CPU, from the model files in the repository.
#
#   benchmarks/cpu_continue_bundled.sh WORK_DIR [SECONDS_Q2] [SECONDS_BRANCH]
#
# Stage 1: quality 2 (λ 0.013) continues from mracnn_jax/assets/models/mracnn-bundled-q2.mracnn
#          for SECONDS_Q2 (default 5700), batch 8 of 128x128 crops, Adam 2e-4 after 100 warm-up
#          steps, fresh optimiser.
# Stage 2: quality 1 (λ 0.0035), then quality 3 (λ 0.05), each start from stage 1's exported q2
#          model and run for SECONDS_BRANCH (default 750): the transforms stage 1 trained are
#          shared, the rate moves to the new λ.
# Each stage stops cleanly at its time limit (checkpoint, validation on 8 held-out images, float16
# export to WORK_DIR/qN/mracnn-bundled-qN.mracnn). Data: $MRACNN_DATA or ../shared/data.
# A run that is interrupted resumes from its last checkpoint when the script is run again.
set -euo pipefail
cd "$(dirname "$0")/.."
WORK=$(readlink -f "$1"); SECONDS_Q2=${2:-5700}; SECONDS_BRANCH=${3:-750}
PYTHON=${PYTHON:-.venv/bin/python}
declare -A LAMBDA=([1]=0.0035 [2]=0.0130 [3]=0.05)
mkdir -p "$WORK"

train() {  # quality, model file to start from, seconds
  local q=$1 init=$2 seconds=$3
  PYTHONUNBUFFERED=1 "$PYTHON" train.py --config=configs/bundled.py \
    --workdir="$WORK/q$q" --config.train.lmbda="${LAMBDA[$q]}" \
    --config.train.batch_size=8 --config.train.crop_size=128 \
    --config.train.learning_rate=2e-4 --config.train.lr_schedule=constant \
    --config.train.warmup_steps=100 --config.train.num_steps=1000000 \
    --config.train.time_limit_s="$seconds" --config.train.checkpoint_every=250 \
    --config.train.keep_checkpoints=1 --config.train.log_every=25 \
    --config.train.eval_every=1000 --config.train.num_eval_images=8 \
    --config.train.export_dtype=float16 --config.train.export_name="mracnn-bundled-q$q.mracnn" \
    --config.train.init_from="$init" >>"$WORK/q$q.log" 2>&1
}

if [ ! -f "$WORK/q2/mracnn-bundled-q2.mracnn" ]; then
  train 2 mracnn_jax/assets/models/mracnn-bundled-q2.mracnn "$SECONDS_Q2"
fi
for q in 1 3; do
  if [ ! -f "$WORK/q$q/mracnn-bundled-q$q.mracnn" ]; then
    train "$q" "$WORK/q2/mracnn-bundled-q2.mracnn" "$SECONDS_BRANCH"
  fi
done
for q in 1 2 3; do
  echo "== q$q (λ ${LAMBDA[$q]})"
  grep '"split": "eval"' "$WORK/q$q/metrics.jsonl" | tail -1
  ls -l "$WORK/q$q/mracnn-bundled-q$q.mracnn"
done

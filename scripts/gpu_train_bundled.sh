#!/usr/bin/env bash
# Trains bundled models (mracnn_jax/configs/bundled.py at quality 1, 2 and 3 by default) side by side
# on one GPU for a fixed wall-clock budget, then keeps each only if it is sane and better than it
# started.
#
#   scripts/gpu_train_bundled.sh DATA_ROOT OUT_DIR [SECONDS]
#
# INIT_FROM=DIR continues each quality from its own model file DIR/mracnn-bundled-qN.mracnn (e.g.
# mracnn_jax/assets/models, or the files scripts/gpu_lease.sh unpacks from the kit) with a fresh
# optimiser, instead of a random initialisation; a quality without a file there (the new ones, 0
# and 4) starts from its neighbour's (mracnn_jax/configs/bundled.py's start_quality). DATA_ROOT has
# the layout of ../shared/data (train/bsds500/{train,test,val}, train/cid22;
# scripts/make_gpu_kit.py's .kit/data has it). The runs share the GPU (each may take MEM_FRACTION, default 90 % over their
# number, at most 30 %, of its memory) and stop cleanly when SECONDS (default 420, imports
# excluded, compilation included) are spent: checkpoint, validation, float16 export. Validation
# (the first EVAL_IMAGES=8 files of DATA_ROOT/train/bsds500/val, centre crops of EVAL_CROP=256)
# runs at step 0 on the starting weights (train.eval_at_start), every EVAL_EVERY=500 steps and at
# the end.
# scripts/gpu_keep_or_drop.py then KEEPs a model only if train.py succeeded, no training loss
# and no parameter is NaN/Inf, and the validation RD loss (λ·255²·MSE + bpp) at the end is lower
# than at step 0; else DROP.
# OUT_DIR receives, at most 8 files (the device tool's limit; 16 MiB each, 64 MiB in all):
#   mracnn-bundled-qN.mracnn.part00, .part01  for each KEPT model, in 15 MiB parts; join with
#                                             cat mracnn-bundled-qN.mracnn.part* > ...qN.mracnn
#   summary.txt                               the machine, the versions and each quality's verdict
#   logs.tar.gz                               WORK without checkpoints, model files, site/ and
#                                             init/: config.json, metrics.jsonl and the log of each
#                                             run, decisions.json, the benchmark's log if any
# The networks compute in DTYPE (default bfloat16, mixed precision: float32 parameters, optimiser
# state and rates; float32 with DTYPE=float32); validation and the exported model are float32.
# Settings: LR (default 1e-4, constant after WARMUP=200 steps, then the last COOLDOWN=150 steps
# falling linearly to a tenth: train.cooldown_steps, time kept for them), BATCH (16), CROP (256), WORKERS
# (5 data threads per run), LOG_EVERY (50), QUALITIES ("1 2 3"; any three of 0-4, since OUT holds
# two parts of each model: "0 3 4" trains the curve's ends), PYTHON (python3), WORK
# (/tmp/bundled: the runs' work directories, emptied first). A CPU smoke test of the whole lease:
#   OUT=/tmp/o WORK=/tmp/w PYTHON=.venv-new/bin/python DEADLINE=420 MARGIN=60 CROP=64 BATCH=2 \
#   WORKERS=1 EVAL_IMAGES=2 EVAL_CROP=64 LOG_EVERY=2 WARMUP=0 bash scripts/gpu_lease.sh .kit
set -uo pipefail
DATA=$(readlink -f "$1"); OUT=$(readlink -f "$2"); BUDGET=${3:-420}  # (from the caller's folder)
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
WORK=${WORK:-/tmp/bundled}
QUALITIES=${QUALITIES:-1 2 3}
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
# The λ of each quality and the bundled quality it starts from without a file of its own, from the
# one place that defines them.
# shellcheck disable=SC2086  # QUALITIES is a list
n_q=$(echo $QUALITIES | wc -w)
[ "$n_q" -ge 1 ] && [ "$n_q" -le 3 ] || {
  echo "gpu_train_bundled.sh: QUALITIES=\"$QUALITIES\": one to three qualities (OUT holds two parts of each model, 8 files in all)" >&2
  exit 1
}
# shellcheck disable=SC2086
[ "$(printf '%s\n' $QUALITIES | sort -u | wc -l)" -eq "$n_q" ] || {
  echo "gpu_train_bundled.sh: QUALITIES=\"$QUALITIES\" names a quality twice (each run has its own work directory)" >&2
  exit 1
}
# shellcheck disable=SC2086
plan=$("$PYTHON" -c "
import sys
from mracnn_jax.configs import bundled
for q in sys.argv[1:]:
    try:
        print(q, bundled.quality_lambda(int(q)), bundled.start_quality(int(q)))
    except ValueError as e:
        sys.exit(f'gpu_train_bundled.sh: {e}')
" $QUALITIES) || exit 1
declare -A LAMBDA START
while read -r q l s; do LAMBDA[$q]=$l; START[$q]=$s; done <<< "$plan"
MEM_FRACTION=${MEM_FRACTION:-$(awk -v n="$n_q" 'BEGIN { f = 0.9 / n; print (f > 0.3 ? 0.3 : f) }')}
mkdir -p "$OUT" "$WORK"
for q in $QUALITIES; do rm -rf "$WORK/q$q" "$WORK/q$q.log" "$WORK/q$q.rc"; done
rm -f "$WORK/decisions.json" "$WORK/keep.txt"
{
  date -u
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv,noheader \
    2>/dev/null
  "$PYTHON" -c "import sys, jax, flax, optax, numpy, orbax.checkpoint as o; \
print(sys.version.split()[0], 'jax', jax.__version__, 'flax', flax.__version__, 'optax', \
optax.__version__, 'orbax', o.__version__, 'numpy', numpy.__version__, jax.devices())"
  echo "budget $BUDGET s per run; LR ${LR:-1e-4}, warm-up ${WARMUP:-200}, batch ${BATCH:-16} of" \
    "${CROP:-256}x${CROP:-256} in ${DTYPE:-bfloat16}; init from ${INIT_FROM:-(random)}; data $DATA"
} 2>&1 | tee "$WORK/env.log"
cp "$WORK/env.log" "$OUT/summary.txt"  # replaced by the verdicts at the end; something comes back
RUN_LIMIT=${RUN_LIMIT:-$((BUDGET + 60))}  # a run past it (a hang) is killed; the others go on

for q in $QUALITIES; do
  wd="$WORK/q$q"
  init=""
  if [ -n "${INIT_FROM:-}" ]; then
    init="$INIT_FROM/mracnn-bundled-q$q.mracnn"
    [ -f "$init" ] || init="$INIT_FROM/mracnn-bundled-q${START[$q]}.mracnn"
    echo "q$q (λ ${LAMBDA[$q]}) starts from $(basename "$init")"
  fi
  MRACNN_DATA="$DATA" XLA_PYTHON_CLIENT_MEM_FRACTION=$MEM_FRACTION \
  timeout -k 10 "$RUN_LIMIT" "$PYTHON" train.py --config=bundled --workdir="$wd" \
    --config.train.lmbda="${LAMBDA[$q]}" --config.model.compute_dtype="${DTYPE:-bfloat16}" \
    --config.train.batch_size="${BATCH:-16}" --config.train.crop_size="${CROP:-256}" \
    --config.train.learning_rate="${LR:-1e-4}" --config.train.lr_schedule=constant \
    --config.train.cooldown_steps="${COOLDOWN:-150}" \
    --config.train.warmup_steps="${WARMUP:-200}" --config.train.num_steps=1000000 \
    --config.train.time_limit_s="$BUDGET" --config.train.checkpoint_every=1000000 \
    --config.train.keep_checkpoints=1 --config.train.log_every="${LOG_EVERY:-50}" \
    --config.train.eval_at_start=true --config.train.eval_every="${EVAL_EVERY:-500}" \
    --config.train.num_eval_images="${EVAL_IMAGES:-8}" \
    --config.train.eval_crop_size="${EVAL_CROP:-256}" \
    --config.train.export_dtype=float16 --config.train.export_name="mracnn-bundled-q$q.mracnn" \
    --config.data.backend=python --config.data.num_workers="${WORKERS:-5}" \
    --config.train.init_from="$init" \
    >"$wd.log" 2>&1 &
  pids[$q]=$!
done

trained=0  # runs that exited 0
for q in $QUALITIES; do
  wait "${pids[$q]}"; rc=$?
  [ "$rc" -eq 0 ] && trained=$((trained + 1))
  echo "$rc" > "$WORK/q$q.rc"
  echo "q$q: train.py exit status $rc"
  tr '\r' '\n' < "$WORK/q$q.log" | grep -E 'train_lib.py.*(eval:|time limit|exported)|Error' \
    | sed 's/^.*train_lib.py:[0-9]*\] /  /' | cut -c1-160 | tail -4
done

# shellcheck disable=SC2086  # QUALITIES is a list
"$PYTHON" scripts/gpu_keep_or_drop.py "$WORK" $QUALITIES > "$WORK/decisions.txt" 2>&1
judged=$?
for q in $(cat "$WORK/keep.txt" 2>/dev/null); do
  model="$WORK/q$q/mracnn-bundled-q$q.mracnn"
  # Parts of 15 MiB: the device tool brings back at most 16 MiB per file.
  split -b 15M -d "$model" "$OUT/mracnn-bundled-q$q.mracnn.part" || echo "q$q: split failed"
  echo "q$q: $(sha256sum "$model" | cut -d' ' -f1)  mracnn-bundled-q$q.mracnn (kept)" \
    >> "$WORK/decisions.txt"
done
cat "$WORK/env.log" "$WORK/decisions.txt" > "$OUT/summary.txt"
echo "== summary"; cat "$WORK/decisions.txt"
tar -czf "$OUT/logs.tar.gz" -C "$WORK" --exclude=./site --exclude=./init --exclude=checkpoints \
  --exclude='*.mracnn' --exclude=tb .
# Exit status: 0 when at least one run finished and the verdicts were written (a model dropped
# for no gain is a result, not a failure); 1 when every run failed or the verdicts could not be
# made (summary.txt and logs.tar.gz are written either way).
[ "$trained" -ge 1 ] && [ "$judged" -eq 0 ]

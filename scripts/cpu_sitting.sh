#!/usr/bin/env bash
# One CPU sitting of a bundled colour quality: trains on from where the last sitting stopped, then
# measures the result on Kodak and says whether it clears the bar for replacing the bundled file.
#
#   scripts/cpu_sitting.sh Q [SECONDS]
#
# Q is a colour quality 0-4 (mracnn_jax/configs/bundled.py: its λ, and for 0 and 4, which have no
# file yet, the bundled quality it starts from). The run lives in WORKDIR (default
# workdirs/colour-qQ, ignored by git). A new work directory starts from the bundled file with a
# fresh Adam (train.init_from, recorded in started_from.json); an existing one resumes from its last
# checkpoint, Adam's moments and the data position included, so that sittings in many sessions add
# up to one run. The recipe is stage 5's (docs/models.md): BATCH=2 crops of CROP=256², 50 warm-up
# steps to a constant LR (3e-5; 1e-4 for quality 0 and 4, whose runs move their start to another
# λ, as in their first sittings), and the sitting's last COOL=600 steps a cool-down branch falling to
# 0.05x the rate, validated and exported but not checkpointed (the next sitting resumes from the
# uncooled checkpoint). SECONDS (default 5400) is the whole sitting: compilation, validation and
# cool-down included; the cool-down shortens when the run is late.
#
# Validation (the 8 BSDS500 val crops of 256²) runs at the start and the end of each sitting and
# goes to WORKDIR/metrics.jsonl. Then, unless KODAK=none, evaluate.py codes the 24 images of KODAK
# (default $MRACNN_DATA/kodak) with the export into WORKDIR/kodak/, and scripts/replacement_gain.py
# prints the gain over the bundled curve at equal rate (or equal quality) against the 0.3 dB bar and
# the merged curve's BD-rates. A model that clears the bar is bundled with
#   .venv/bin/python scripts/bundle_finetuned.py Q WORKDIR mracnn_jax/assets/models/<its start file>
#
# Other settings: PYTHON (.venv/bin/python, whose float arithmetic computed the bundled models'
# coding tables), MRACNN_DATA (../shared/data), EVAL_CROP (256). PRINT=1 prints the commands
# instead of running them. Relative paths given in WORKDIR, KODAK, MRACNN_DATA and PYTHON are the
# caller's; the defaults are the repository's.
set -euo pipefail
caller=$PWD
from_caller() { case "$1" in /*) echo "$1" ;; *) echo "$caller/$1" ;; esac; }
[ -z "${WORKDIR:-}" ] || WORKDIR=$(from_caller "$WORKDIR")
[ -z "${KODAK:-}" ] || [ "$KODAK" = none ] || KODAK=$(from_caller "$KODAK")
[ -z "${MRACNN_DATA:-}" ] || MRACNN_DATA=$(from_caller "$MRACNN_DATA")
case "${PYTHON:-}" in */*) PYTHON=$(from_caller "$PYTHON") ;; esac  # a path, not a command name
cd "$(dirname "$0")/.."
Q=${1:?usage: scripts/cpu_sitting.sh Q [SECONDS]}
SECONDS_LIMIT=${2:-5400}
PYTHON=${PYTHON:-.venv/bin/python}
export MRACNN_DATA=${MRACNN_DATA:-../shared/data}
WORKDIR=${WORKDIR:-workdirs/colour-q$Q}
KODAK=${KODAK:-$MRACNN_DATA/kodak}
plan=$("$PYTHON" -c "
import sys
from mracnn_jax.configs import bundled
try:
    q = int(sys.argv[1])
    print(bundled.quality_lambda(q), bundled.start_quality(q))
except ValueError as e:
    sys.exit(f'cpu_sitting.sh: {e}')
" "$Q")
read -r LAMBDA START <<< "$plan"
START_FILE=mracnn_jax/assets/models/mracnn-bundled-q$START.mracnn
if [ "$START" = "$Q" ]; then LR=${LR:-3e-5}; else LR=${LR:-1e-4}; fi
train=("$PYTHON" train.py --config=bundled --workdir="$WORKDIR"
  --config.train.init_from="$START_FILE" --config.train.lmbda="$LAMBDA"
  --config.train.batch_size="${BATCH:-2}" --config.train.crop_size="${CROP:-256}"
  --config.train.lr_schedule=constant --config.train.learning_rate="$LR"
  --config.train.warmup_steps=50 --config.train.num_steps=1000000
  --config.train.cooldown_steps="${COOL:-600}" --config.train.cooldown_final_factor=0.05
  --config.train.time_limit_s="$SECONDS_LIMIT" --config.train.checkpoint_every=100
  --config.train.log_every=10 --config.train.eval_at_start=True --config.train.eval_every=0
  --config.train.num_eval_images=8 --config.train.eval_crop_size="${EVAL_CROP:-256}"
  --config.train.export_dtype=float16 --config.data.num_workers=1)
evaluate=("$PYTHON" evaluate.py --data "$KODAK" --model "$WORKDIR/model.mracnn"
  --anchor-for-bd none --out "$WORKDIR/kodak" --no-progress)
gain=("$PYTHON" scripts/replacement_gain.py "$WORKDIR/kodak/mracnn-bundled-mse.json")
if [ "${PRINT:-0}" = 1 ]; then
  printf '%q ' "${train[@]}"; echo
  [ "$KODAK" = none ] || { printf '%q ' "${evaluate[@]}"; echo; printf '%q ' "${gain[@]}"; echo; }
  exit 0
fi
echo "quality $Q: λ $LAMBDA, from $([ -d "$WORKDIR/checkpoints" ] && echo "$WORKDIR's last checkpoint" || echo "$START_FILE"), $SECONDS_LIMIT s"
"${train[@]}"
[ "$KODAK" = none ] && exit 0
rm -rf "$WORKDIR/kodak"
"${evaluate[@]}"
"${gain[@]}"

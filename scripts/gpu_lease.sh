#!/usr/bin/env bash
# Everything one GPU lease of the device tool runs, in one command: the three bundled models (or the
# QUALITIES gpu_train_bundled.sh is given, three at most), each continued from its own current
# weights, trained side by side for what is left of DEADLINE
# seconds (default 540; the tool's limit for one command is 600, and a session's 15 minutes hold
# one such call after the machine's start: with less left, DEADLINE = budget_left_s - 150) by
# scripts/gpu_train_bundled.sh, which keeps a model only if it is sane and its validation RD
# loss went down (see there); optionally scripts/gpu_train.sh's benchmark first.
#
#   DEADLINE=540 bash scripts/gpu_lease.sh KIT_DIR          (OUT must name the output folder)
#   device tool: command "bash scripts/gpu_lease.sh .kit", carry [".kit"], with all the
#   mracnn_jax/assets/models/*.mracnn moved aside for the call (the tree must fit in 64 MiB)
#
# KIT_DIR (.kit) is built on the development machine by scripts/make_gpu_kit.py (see
# docs/models.md, "The GPU kit"); with the working tree it fills at most 63 MiB of the 64 a call
# carries: whl/ (ml_collections, the one package of ours the GPU image lacks; every wheel there is
# installed into WORK/site), models/mracnn-bundled-qQ.mracnn.f16s.xz (the file each quality starts
# from, the bundled file or a CPU sitting's export, packed losslessly; unpacked here into
# WORK/init and checked against their SHA-256; a plain .mracnn.xz is read too; the .source.json
# beside each, printed here, says what it is), qualities.txt (the kit's --qualities, the default
# of QUALITIES) and data/train/ (training crops and the 8 validation images, in ../shared/data's
# layout).
# OUT receives at most 8 files: summary.txt, logs.tar.gz and two 15 MiB parts of each kept model
# (gpu_train_bundled.sh); this script checks the tool's limits on OUT at the end.
# Settings: SKIP_BENCH=0 runs scripts/gpu_train.sh first (off by default: it took 188 s of the
# lease and its results are in docs/benchmarks.md), under BENCH_TIMEOUT (230 s), its log in WORK.
# MARGIN (default 80 s) is kept after the training budget for imports, the last step, checkpoint,
# validation, export and the verdicts. PYTHON (python3), WORK (/tmp/bundled), LR (1e-4) and the
# other settings of gpu_train_bundled.sh are passed on.
set -u
T0=$(date +%s)
KIT=$(readlink -f "${1:?usage: gpu_lease.sh KIT_DIR}")
DEADLINE=${DEADLINE:-540}
: "${OUT:?OUT must name the folder the models and logs are written to}"
OUT=$(readlink -f "$OUT")
PYTHON=${PYTHON:-python3}
case $PYTHON in */*) PYTHON="$(cd "$(dirname "$PYTHON")" && pwd)/$(basename "$PYTHON")" ;; esac
export PYTHON PYTHONUNBUFFERED=1 WORK=${WORK:-/tmp/bundled}
cd "$(dirname "$0")/.."
rm -rf "$WORK/site" "$WORK/init"
mkdir -p "$WORK/init" "$OUT"
fail() { echo "gpu_lease.sh: $*" | tee "$OUT/summary.txt" >&2; exit 1; }
if compgen -G "$KIT/whl/*.whl" >/dev/null; then
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target "$WORK/site" "$KIT"/whl/*.whl || fail "installing $KIT/whl/*.whl failed"
  export PYTHONPATH="$WORK/site${PYTHONPATH:+:$PYTHONPATH}"
fi
# Every model the kit has (QUALITIES picks what trains; a new quality starts from its neighbour).
models=()
for src in "$KIT"/models/mracnn-bundled-q*.mracnn.f16s.xz \
           "$KIT"/models/mracnn-bundled-q*.mracnn.xz; do
  [ -f "$src" ] || continue
  name=$(basename "$src"); name=${name%%.mracnn*}.mracnn
  [[ " ${models[*]} " == *" $name "* ]] && continue  # .f16s.xz before a plain .xz
  "$PYTHON" scripts/kit_models.py "$src" "$WORK/init/$name" &
  unpack[${#models[@]}]=$!; models+=("$name")
done
[ ${#models[@]} -ge 1 ] || fail "no model in $KIT/models"
for i in "${!models[@]}"; do
  wait "${unpack[$i]}" || fail "unpacking ${models[$i]} failed"
done
echo "unpacked ($(( $(date +%s) - T0 )) s in)"
for record in "$KIT"/models/*.source.json; do  # which file each quality starts from
  [ -f "$record" ] && echo "$(basename "$record" .source.json): $(cat "$record")"
done
# The qualities the kit was built for (make_gpu_kit.py --qualities), unless QUALITIES names others.
if [ -z "${QUALITIES:-}" ] && [ -f "$KIT/qualities.txt" ]; then
  QUALITIES=$(cat "$KIT/qualities.txt")
fi
[ -z "${QUALITIES:-}" ] || export QUALITIES
echo "qualities: ${QUALITIES:-the default of gpu_train_bundled.sh}"

if [ "${SKIP_BENCH:-1}" != 1 ]; then
  echo "== scripts/gpu_train.sh ($(( $(date +%s) - T0 )) s in)"
  timeout "${BENCH_TIMEOUT:-230}" scripts/gpu_train.sh 2>&1 | tee "$WORK/gpu_train.log" | tail -30
  echo "gpu_train.sh exit status ${PIPESTATUS[0]}"
fi

BUDGET=$(( DEADLINE - ($(date +%s) - T0) - ${MARGIN:-80} ))
[ "$BUDGET" -ge 1 ] || BUDGET=1  # (0 would mean no limit to train.py)
echo "== scripts/gpu_train_bundled.sh, budget $BUDGET s ($(( $(date +%s) - T0 )) s in)"
RUN_LIMIT=$(( BUDGET + ${MARGIN:-80} - 25 )) INIT_FROM="$WORK/init" \
  scripts/gpu_train_bundled.sh "$KIT/data" "$OUT" "$BUDGET"
status=$?
echo "== done $(( $(date +%s) - T0 )) s in"
if [ -f "$WORK/gpu_train.log" ]; then tail -3 "$WORK/gpu_train.log"; fi

# The device tool's limits on what comes back: 8 files, 16 MiB each, 64 MiB in all.
n=$(find "$OUT" -type f | wc -l)
total=$(find "$OUT" -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}')
big=$(find "$OUT" -type f -size +16777216c)
ls -l "$OUT"
echo "OUT: $n files, $total bytes"
if [ "$n" -gt 8 ] || [ "$total" -gt 67108864 ] || [ -n "$big" ]; then
  echo "WARNING: OUT is over the device tool's limits (8 files, 16 MiB each, 64 MiB in all)" >&2
fi
echo "gpu_train_bundled.sh exit status $status"
exit "$status"

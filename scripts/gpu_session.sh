#!/usr/bin/env bash
# One device call for the two measurements that need a GPU but no training: the portability
# matrix (scripts/gpu_portability.sh: files encoded on the GPU decode on the CPU and the reverse)
# first, then the training-step table (benchmarks/gpu_compare.sh: our step in float32 and
# bfloat16 against the PyTorch twin's) with what is left of DEADLINE.
#
#   OUT=/path bash scripts/gpu_session.sh KIT_DIR
#   device tool: command "OUT=$OUT bash scripts/gpu_session.sh .kit-port", carry [".kit-port"],
#   with mracnn_jax/assets/models/*.mracnn moved aside for the call
#
# KIT_DIR is `python scripts/make_gpu_kit.py portability`'s kit (the models of the matrix and the
# ml_collections wheel, 51 MiB with the tree); a missing or incomplete kit stops the script at
# once. OUT receives session.log (everything printed), portability/ (portability.txt,
# gpu_files.tar.gz) and compare/ (table.md, rows.json): 5 files. Settings: DEADLINE (560 s for
# both; the tool allows 600 a command, and a session's 15 minutes hold one such call after the
# machine's start: with less device time left, DEADLINE = status's budget_left_s - 150),
# PORTABILITY_LIMIT (200 s), and those of the two scripts (e.g. VARIANTS, STEPS). A dry run on
# a machine without a GPU:
#   OUT=/tmp/o ALLOW_CPU=1 PYTHON=.venv-new/bin/python COMPARE_ARGS=--smoke bash scripts/gpu_session.sh .kit-port
set -u
T0=$(date +%s)
KIT=$(readlink -f "${1:?usage: gpu_session.sh KIT_DIR}")
: "${OUT:?OUT must name the folder the reports are written to}"
OUT=$(readlink -f "$OUT")
DEADLINE=${DEADLINE:-560}
cd "$(dirname "$0")/.."
mkdir -p "$OUT/portability" "$OUT/compare"
exec > >(tee "$OUT/session.log") 2>&1  # the tool returns only the output's tail
TEE=$!
compgen -G "$KIT/whl/*.whl" >/dev/null && compgen -G "$KIT/models/*.mracnn.f16s.xz" >/dev/null || {
  echo "gpu_session.sh: $KIT lacks whl/*.whl or models/*.mracnn.f16s.xz: build it with" \
    "'python scripts/make_gpu_kit.py portability' and carry it"
  exit 1
}
echo "== portability ($(( $(date +%s) - T0 )) s in)"
OUT="$OUT/portability" KIT="$KIT" timeout "${PORTABILITY_LIMIT:-200}" bash scripts/gpu_portability.sh
echo "gpu_portability.sh exit status $?"
LEFT=$(( DEADLINE - ($(date +%s) - T0) - 40 ))
echo "== training-step table, deadline $LEFT s ($(( $(date +%s) - T0 )) s in)"
OUT="$OUT/compare" DEADLINE=$LEFT bash benchmarks/gpu_compare.sh "$KIT"
echo "gpu_compare.sh exit status $? ($(( $(date +%s) - T0 )) s in)"
find "$OUT" -type f -printf '%s %p\n'
exec >&- 2>&-  # the log is whole before the tool collects OUT
wait "$TEE"

#!/usr/bin/env bash
# Files encoded on a GPU decode on a CPU, and the reverse (scripts/cross_env.py), on one machine
# with a GPU: the portability matrix across backends. Reported file by file into
# REPORT_DIR/portability.txt (REPORT_DIR defaults to OUT); the GPU's files and its predictions of
# the decoded images are packed into REPORT_DIR/gpu_files.tar.gz so that they can be decoded on
# other machines (`python scripts/cross_env.py decode gpu DIR` in .venv and .venv-new, then
# `compare gpu DIR`).
#
#   OUT=/path bash scripts/gpu_portability.sh [IMAGE ...]     (default: the sample kodim23)
#
# Needs the bundled models in mracnn_jax/assets/models (with their stored coding tables) and
# numba; no TensorFlow. JAX must see a GPU, else the script says so and stops.
set -uo pipefail
cd "$(dirname "$0")/.."
REPORT_DIR=${REPORT_DIR:-${OUT:?OUT or REPORT_DIR must name the folder the report is written to}}
PYTHON=${PYTHON:-python3}
W=/tmp/portability
rm -rf "$W"; mkdir -p "$W" "$REPORT_DIR"
IMAGES=("$@")
[ ${#IMAGES[@]} -gt 0 ] || IMAGES=(mracnn_jax/assets/samples/kodim23.png)
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_MEM_FRACTION=${MEM_FRACTION:-0.3}
# ALLOW_CPU=1: a dry run of the script on a machine without a GPU (both halves then run on the CPU).
"$PYTHON" -c "import jax; d = jax.devices(); print(d); raise SystemExit(d[0].platform != 'gpu')" \
  || [ "${ALLOW_CPU:-0}" = 1 ] || { echo "JAX sees no GPU: nothing to compare" | tee "$REPORT_DIR/portability.txt"; exit 1; }
t0=$(date +%s)
run() { echo "== $* ($(( $(date +%s) - t0 )) s in)"; "$@"; }
run "$PYTHON" scripts/cross_env.py encode "$W/gpu" --images "${IMAGES[@]}"
JAX_PLATFORMS=cpu run "$PYTHON" scripts/cross_env.py decode "$W/gpu" "$W/gpu-decoded-on-cpu"
JAX_PLATFORMS=cpu run "$PYTHON" scripts/cross_env.py encode "$W/cpu" --images "${IMAGES[@]}"
run "$PYTHON" scripts/cross_env.py decode "$W/cpu" "$W/cpu-decoded-on-gpu"
{
  echo "== encoded on the GPU, decoded on the CPU"
  "$PYTHON" scripts/cross_env.py compare "$W/gpu" "$W/gpu-decoded-on-cpu"; a=$?
  echo "== encoded on the CPU, decoded on the GPU"
  "$PYTHON" scripts/cross_env.py compare "$W/cpu" "$W/cpu-decoded-on-gpu"; b=$?
  echo "portability exit statuses: $a $b ($(( $(date +%s) - t0 )) s)"
} 2>&1 | tee "$REPORT_DIR/portability.txt"
tar -czf "$REPORT_DIR/gpu_files.tar.gz" -C "$W" gpu

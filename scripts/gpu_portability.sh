#!/usr/bin/env bash
# Files encoded on a GPU decode on a CPU, and the reverse (scripts/cross_env.py), on one machine
# with a GPU: the portability matrix across backends. Reported file by file into
# REPORT_DIR/portability.txt (REPORT_DIR defaults to OUT); the GPU's files and its predictions of
# the decoded images are packed into REPORT_DIR/gpu_files.tar.gz so that they can be decoded on
# other machines (`python scripts/cross_env.py decode gpu DIR` in .venv and .venv-new, then
# `compare gpu DIR`).
#
#   OUT=/path [KIT=.kit-port] bash scripts/gpu_portability.sh [IMAGE ...]   (default: the sample kodim23)
#   device tool: command "OUT=$OUT KIT=.kit-port bash scripts/gpu_portability.sh", carry
#   [".kit-port"], with mracnn_jax/assets/models/*.mracnn moved aside for the call
#
# Needs bundled models in mracnn_jax/assets/models (with their stored coding tables); no
# TensorFlow. KIT (built by `python scripts/make_gpu_kit.py portability`) brings them to a machine
# without them: its wheels are installed into a private folder and its models unpacked into
# mracnn_jax/assets/models (colour q2 and q3, gray q2: 51 MiB with the tree). The coding kernels
# run compiled by numba where the image has it (the GPU image's package list of 2026-11-17 does),
# else as plain Python with the same bytes; portability.txt says which. JAX must see a GPU, else
# the script says so and stops.
set -uo pipefail
cd "$(dirname "$0")/.."
REPORT_DIR=${REPORT_DIR:-${OUT:?OUT or REPORT_DIR must name the folder the report is written to}}
PYTHON=${PYTHON:-python3}
W=/tmp/portability
rm -rf "$W"; mkdir -p "$W" "$REPORT_DIR"
if [ -n "${KIT:-}" ]; then
  if compgen -G "$KIT/whl/*.whl" >/dev/null; then
    rm -rf "$W-site"
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$W-site" \
      "$KIT"/whl/*.whl || { echo "gpu_portability.sh: installing $KIT/whl failed" >&2; exit 1; }
    export PYTHONPATH="$W-site${PYTHONPATH:+:$PYTHONPATH}"
  fi
  mkdir -p mracnn_jax/assets/models
  for packed in "$KIT"/models/*.mracnn.f16s.xz; do
    model=mracnn_jax/assets/models/$(basename "$packed" .f16s.xz)
    [ -f "$model" ] || "$PYTHON" scripts/kit_models.py "$packed" "$model" \
      || { echo "gpu_portability.sh: unpacking $packed failed" >&2; exit 1; }
  done
fi
"$PYTHON" -c "import numba" 2>/dev/null \
  || echo "numba is not installed: the coding kernels run as plain Python (the same bytes)"
IMAGES=("$@")
[ ${#IMAGES[@]} -gt 0 ] || IMAGES=(mracnn_jax/assets/samples/kodim23.png)
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"  # this checkout's mracnn_jax, installed or not
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
  "$PYTHON" -c "from mracnn_jax.coding import jit; print('coding kernels compiled by numba:', jit.COMPILED)"
  echo "== encoded on the GPU, decoded on the CPU"
  "$PYTHON" scripts/cross_env.py compare "$W/gpu" "$W/gpu-decoded-on-cpu"; a=$?
  echo "== encoded on the CPU, decoded on the GPU"
  "$PYTHON" scripts/cross_env.py compare "$W/cpu" "$W/cpu-decoded-on-gpu"; b=$?
  echo "portability exit statuses: $a $b ($(( $(date +%s) - t0 )) s)"
} 2>&1 | tee "$REPORT_DIR/portability.txt"
tar -czf "$REPORT_DIR/gpu_files.tar.gz" -C "$W" gpu

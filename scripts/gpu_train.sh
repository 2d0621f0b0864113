#!/usr/bin/env bash
# 200 training steps of mracnn_jax/configs/mracnn.py at batch 16 of 256x256 on one GPU: prints steps/s,
# peak device memory and MFU (against the H100 SXM's dense float32 TF32 peak of 494 TFLOP/s;
# pass another PEAK_TFLOPS for another card). Finishes within 10 minutes on an H100.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
PEAK_TFLOPS=${PEAK_TFLOPS:-494}
exec "$PYTHON" benchmarks/bench_train_step.py --config mracnn --batch 16 --crop 256 \
  --steps 200 --peak-tflops "$PEAK_TFLOPS"

#!/usr/bin/env python
"""XLA's two CPU runtimes on the training step: the thunk runtime (the default since jaxlib
0.4.32) against the older whole-program runtime (``XLA_FLAGS=--xla_cpu_use_thunk_runtime=false``).

JAX's issue tracker reports the thunk runtime slower for programs of many small kernels, which is
what a training step at a CPU sitting's batch (2 crops of 256²) is. This script runs
``bench_train_step.py`` once per runtime, one after the other in fresh processes (so that neither
shares the cores with the other), and prints each one's compile time and steps/s and the ratio of
the older runtime's throughput to the default's. A jaxlib that no longer knows the flag says so in
its row, and the ratio is left out; so does a runtime that gives no result within ``--timeout``
seconds (compilation included).

    python benchmarks/bench_cpu_runtime.py --config bundled --batch 2 --crop 256 --steps 10

Each row is bench_train_step.py's JSON plus ``runtime``; ``--json`` writes the rows to a file.
Other processes on the machine skew both rows alike only if they run for the whole measurement:
stop them first.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

STEP_BENCHMARK = Path(__file__).resolve().with_name("bench_train_step.py")
RUNTIMES = {"thunk (default)": "", "whole-program": "--xla_cpu_use_thunk_runtime=false"}


def run_one(flag: str, args: list[str], timeout: float) -> dict:
    """bench_train_step.py's result in a fresh process with ``flag`` added to XLA_FLAGS, or a row
    with ``error`` (the last line of its output, or the timeout) where it failed."""
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {flag}".strip()
    command = [sys.executable, str(STEP_BENCHMARK), *args]
    try:
        proc = subprocess.run(
            command, check=False, env=env, capture_output=True, text=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return {"error": f"no result within {timeout:.0f} s (compilation and steps)"}
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    tail = (proc.stderr or proc.stdout).strip().splitlines()
    return {"error": tail[-1] if tail else f"exit status {proc.returncode}"}


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config", default="bundled")
    p.add_argument("--batch", type=int, default=2)
    p.add_argument("--crop", type=int, default=256)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--json", type=Path, default=None, help="also write the rows here")
    p.add_argument(
        "--timeout", type=float, default=1800, help="seconds each runtime may take (default 1800)"
    )
    a = p.parse_args()
    args = ["--config", a.config, "--batch", str(a.batch), "--crop", str(a.crop)]
    args += ["--steps", str(a.steps)]

    import jax

    print(f"jax {jax.__version__}, {os.cpu_count()} CPUs; {a.config}, batch {a.batch} of {a.crop}²")
    rows = []
    for name, flag in RUNTIMES.items():
        row = {"runtime": name, "xla_flag": flag, **run_one(flag, args, a.timeout)}
        rows.append(row)
        if "error" in row:
            print(f"{name:>16}: failed: {row['error']}", flush=True)
        else:
            print(
                f"{name:>16}: compile {row['compile_s']:6.1f} s, {row['steps_per_s']:.3f} steps/s, "
                f"loss {row['loss']:.4f}",
                flush=True,
            )
    if all("error" not in r for r in rows):
        ratio = rows[1]["steps_per_s"] / rows[0]["steps_per_s"]
        print(f"whole-program / thunk throughput: {ratio:.2f}x")
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

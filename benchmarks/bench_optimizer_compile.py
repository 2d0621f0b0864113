#!/usr/bin/env python
"""The training step's compile time with the optimiser on one vector (train.py's) against the same
optimiser on each parameter array, the layout it replaced.

Clipping and Adam on each of a model's ~900 parameter arrays put a dozen operations per array into
the step's graph, which JAX traces and XLA compiles one by one; ``optax.flatten`` runs them once on
the concatenated vector (mracnn_jax/training/train_state.py). This script runs
``bench_train_step.py`` once per layout, the per-leaf reference first, each in a fresh process
(so neither reuses the other's traces or compiled code), and prints for each the time to trace
and lower the step, the time XLA compiles it, the step time, and the flat layout's saving as a
ratio of the per-leaf times measured in the same run.

    python benchmarks/bench_optimizer_compile.py --config small
    python benchmarks/bench_optimizer_compile.py --config mracnn --batch 16   # on a GPU

The rows are bench_train_step.py's JSON; ``--json`` writes them to a file. XLA_FLAGS pass through
(the tests' ``--xla_backend_optimization_level=0`` included, where it is set).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))  # the benchmarks import each other

from bench_cpu_runtime import run_one  # after the folder is on the path

LAYOUTS = ("per-leaf", "flat")


def ratios(rows: list[dict]) -> dict[str, float]:
    """The flat layout's times over the per-leaf ones: lowering, compilation and both together
    (empty where either row failed)."""
    by = {r["optimizer"]: r for r in rows if "error" not in r}
    if set(by) != set(LAYOUTS):
        return {}
    leaf, flat = by["per-leaf"], by["flat"]
    return {
        "lower": flat["lower_s"] / leaf["lower_s"],
        "compile": flat["compile_s"] / leaf["compile_s"],
        "lower+compile": (flat["lower_s"] + flat["compile_s"])
        / (leaf["lower_s"] + leaf["compile_s"]),
        "step": flat["seconds_per_step"] / leaf["seconds_per_step"],
    }


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config", default="small")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--crop", type=int, default=64)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--json", type=Path, default=None, help="also write the rows here")
    p.add_argument("--timeout", type=float, default=1800, help="seconds each layout may take")
    a = p.parse_args()
    args = ["--config", a.config, "--batch", str(a.batch), "--crop", str(a.crop)]
    args += ["--steps", str(a.steps)]
    print(f"{a.config}, batch {a.batch} of {a.crop}²")
    rows = []
    for layout in LAYOUTS:
        row = {"optimizer": layout, **run_one("", [*args, "--optimizer", layout], a.timeout)}
        rows.append(row)
        if "error" in row:
            print(f"{layout:>9}: failed: {row['error']}", flush=True)
        else:
            print(
                f"{layout:>9}: trace+lower {row['lower_s']:6.1f} s, compile {row['compile_s']:6.1f}"
                f" s, {row['seconds_per_step']:.4f} s/step, loss {row['loss']:.4f}",
                flush=True,
            )
    r = ratios(rows)
    if r:
        print("flat / per-leaf: " + ", ".join(f"{k} {v:.2f}x" for k, v in r.items()))
    if a.json:
        a.json.write_text(json.dumps(rows, indent=1) + "\n")
    return 0 if r else 1


if __name__ == "__main__":
    sys.exit(main())

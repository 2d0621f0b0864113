"""``benchmarks/bench_gpu_compare.py --smoke``: the GPU comparison's driver on the CPU (the small
preset at its own batch and crop, 2 steps each), its JAX rows in any environment, the PyTorch row
where torch is installed."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import pytest


@pytest.mark.slow
def test_gpu_compare_smoke_run(repo_root, tmp_path, subprocess_xla_cache):
    """Two variants where torch is (``.venv``): the float32 step and the PyTorch twin; the
    bfloat16 step elsewhere (``.venv-new``, whose half of ``make test`` runs this file too, and
    whose float32 step bench_train_step's smoke run covers), to keep ``make test`` short."""
    rows_path = tmp_path / "rows.json"
    has_torch = importlib.util.find_spec("torch") is not None
    expected = {"jax-f32", "torch-eager"} if has_torch else {"jax-bf16"}
    proc = subprocess.run(
        [sys.executable, str(repo_root / "benchmarks" / "bench_gpu_compare.py"), "--smoke",
         "--variants", *sorted(expected),
         "--deadline", "1500", "--json", str(rows_path), "--peak-tf32", "1", "--peak-bf16", "2"],
        check=False, capture_output=True, text=True, cwd=repo_root, timeout=1800,
        env=dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(subprocess_xla_cache)),
    )
    print(proc.stdout[-3000:], proc.stderr[-3000:])
    assert proc.returncode == 0, proc.stderr[-3000:]
    rows = {r["variant"]: r for r in json.loads(rows_path.read_text())}
    assert set(rows) == expected
    for r in rows.values():
        assert r["seconds_per_step"] > 0 and r["compile_s"] > 0 and r["loss"] > 0
    assert all(r["flops"] > 0 for v, r in rows.items() if v.startswith("jax"))
    table = proc.stdout
    assert all(f"| small | {v} |" in table for v in expected) and "% peak" in table

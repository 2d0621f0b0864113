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
from load_script import load_script  # a sibling helper module


@pytest.mark.slow
def test_gpu_compare_smoke_run(repo_root, tmp_path, subprocess_xla_cache):
    """One variant per environment, to keep ``make test`` short: the PyTorch twin where torch is
    (``.venv``), the bfloat16 step elsewhere (``.venv-new``, whose half of ``make test`` runs this
    file too). The JAX worker differs between its rows only in the compute dtype, and
    bench_train_step's smoke run trains the float32 step."""
    rows_path = tmp_path / "rows.json"
    has_torch = importlib.util.find_spec("torch") is not None
    expected = {"torch-eager"} if has_torch else {"jax-bf16"}
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


def _bench(repo_root):
    return load_script(repo_root / "benchmarks" / "bench_gpu_compare.py")


def test_table_gives_every_row_its_configs_jax_flops(repo_root):
    """TFLOP/s of a PyTorch row come from the JAX step's FLOPs of the same config, and each row
    is measured against the peak of its precision."""
    bench = _bench(repo_root)
    common = {"config": "mracnn", "batch": 16, "compile_s": 1.0, "peak_gib": None}
    rows = [
        {**common, "variant": "jax-f32", "seconds_per_step": 0.1, "flops": 4e12},
        {**common, "variant": "jax-bf16", "seconds_per_step": 0.05, "flops": 4e12},
        {**common, "variant": "torch-eager", "seconds_per_step": 0.2},
        {"config": "wacnn", "variant": "torch-eager", "error": "past the deadline"},
    ]
    lines = bench._table(rows, peak_tf32=100.0, peak_bf16=200.0).splitlines()
    assert lines[2] == "| mracnn | jax-f32 | 0.1000 | 160.0 | 1.0 | - | 40 | 40.0 |"
    assert lines[3] == "| mracnn | jax-bf16 | 0.0500 | 320.0 | 1.0 | - | 80 | 40.0 |"
    assert lines[4] == "| mracnn | torch-eager | 0.2000 | 80.0 | 1.0 | - | 20 | 20.0 |"
    assert lines[5].startswith("| wacnn | torch-eager | past the deadline |")


def test_peaks_follow_the_device_name(repo_root):
    """The lent GPUs by the names CUDA gives them: the H100's PCIe and NVL parts are not the SXM
    part's peaks, and an unknown device has none."""
    peaks = _bench(repo_root).dense_peaks
    assert peaks("NVIDIA H200") == peaks("NVIDIA H100 80GB HBM3") == (494.0, 989.0)
    assert peaks("NVIDIA H100 PCIe") == (378.0, 756.0)
    assert peaks("NVIDIA H100 NVL") == (418.0, 835.0)
    assert peaks("cpu") is None

"""``benchmarks/bench_gpu_compare.py --smoke``: the GPU comparison on the CPU (the small preset at
its own batch and crop, 2 steps each), its JAX rows in any environment, the PyTorch row where torch
is installed; its table; and its workers' protocol (``benchmarks/timed_workers.py``) with stand-in
workers."""

from __future__ import annotations

import importlib.util
import itertools
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))  # the benchmarks import each other by their folder

import bench_gpu_compare as bench
import timed_workers


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
        [
            sys.executable,
            str(repo_root / "benchmarks" / "bench_gpu_compare.py"),
            "--smoke",
            "--variants",
            *sorted(expected),
            "--deadline",
            "1500",
            "--json",
            str(rows_path),
            "--peak-tf32",
            "1",
            "--peak-bf16",
            "2",
        ],
        check=False,
        capture_output=True,
        text=True,
        cwd=repo_root,
        timeout=1800,
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


def test_table_gives_every_row_its_configs_jax_flops():
    """TFLOP/s of a PyTorch row come from the JAX step's FLOPs of the same config, and each row
    is measured against the peak of its precision."""
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


def test_peaks_follow_the_device_name():
    """The lent GPUs by the names CUDA gives them: the H100's PCIe and NVL parts are not the SXM
    part's peaks, and an unknown device has none."""
    peaks = bench.dense_peaks
    assert peaks("NVIDIA H200") == peaks("NVIDIA H100 80GB HBM3") == (494.0, 989.0)
    assert peaks("NVIDIA H100 PCIe") == (378.0, 756.0)
    assert peaks("NVIDIA H100 NVL") == (418.0, 835.0)
    assert peaks("cpu") is None


# A stand-in worker for the driver's tests: the real protocol (_run_worker: ready, wait, lock,
# result file) around sleeps instead of a model. FAKE_WORKERS maps each variant to its seconds of
# "compile", of timed loop and of lingering after its result, and whether it fails before it is
# ready.
FAKE_WORKER = """
import json, os, sys, time
sys.path.insert(0, {bench_dir!r})
import bench_gpu_compare as bench

spec = json.loads(os.environ["FAKE_WORKERS"])[sys.argv[sys.argv.index("--worker") + 1]]

def prepare(a):
    time.sleep(spec.get("compile", 0.0))
    if spec.get("fail"):
        sys.exit(3)

    def timed():
        time.sleep(spec.get("timed", 0.0))
        return {{"seconds_per_step": 0.1, "loss": 1.0}}

    return {{"compile_s": spec.get("compile", 0.0), "device": "fake"}}, timed

bench.PREPARERS = {{a: prepare for a in json.loads(os.environ["FAKE_WORKERS"])}}
code = bench.main(sys.argv[1:])
time.sleep(spec.get("linger", 0.0))
sys.exit(code)
"""


def _drive_fakes(tmp_path, specs: dict, **kwargs) -> list[dict]:
    """``drive`` over one fake worker per variant of ``specs``, in their order."""
    script = tmp_path / "fake_worker.py"
    script.write_text(FAKE_WORKER.format(bench_dir=str(BENCHMARKS)))
    work = tmp_path / "work"
    work.mkdir()
    return timed_workers.drive(
        [("fake", v) for v in specs],
        lambda c, v: [sys.executable, str(script), "--worker", v, "--config", c],
        str(work),
        env=dict(os.environ, FAKE_WORKERS=json.dumps(specs)),
        **kwargs,
    )


def test_no_timed_loop_starts_before_every_worker_is_ready(tmp_path):
    """A worker that compiles fast waits for the slow ones (and not for one that died compiling)
    before its timed loop, and the timed loops do not overlap."""
    specs = {
        "fast": {"compile": 0.1, "timed": 0.3},
        "slow": {"compile": 2.0, "timed": 0.3},
        "dies": {"compile": 0.5, "fail": True},
        "middle": {"compile": 1.0, "timed": 0.3},
    }
    rows = {r["variant"]: r for r in _drive_fakes(tmp_path, specs, deadline=120, reserve=10)}
    assert rows["dies"]["error"].startswith("failed")
    done = sorted((rows[v] for v in ("fast", "slow", "middle")), key=lambda r: r["timed_from"])
    last_ready = max(r["ready_at"] for r in done)
    assert all(r["timed_from"] >= last_ready and "not_ready" not in r for r in done)
    assert all(a["timed_to"] <= b["timed_from"] for a, b in itertools.pairwise(done))


def test_the_deadline_keeps_the_rows_of_finished_workers(tmp_path):
    """One worker never gets ready: near the deadline the others stop waiting and time their
    steps, marked; at the deadline the one that exited and the one that wrote its result but had
    not exited keep their rows, and the rows file holds each row as soon as its worker exits."""
    import threading

    specs = {
        "stuck": {"compile": 600},
        "exits": {"compile": 0.1, "timed": 0.1},
        "lingers": {"compile": 0.1, "timed": 0.1, "linger": 600},
    }
    rows_path = tmp_path / "rows.json"
    out: dict = {}
    t0 = time.time()
    thread = threading.Thread(
        target=lambda: out.update(
            rows=_drive_fakes(tmp_path, specs, deadline=10, reserve=7, json_path=str(rows_path))
        )
    )
    thread.start()
    while not rows_path.exists() and thread.is_alive():
        time.sleep(0.05)
    early = json.loads(rows_path.read_text())
    assert time.time() - t0 < 9.5  # before the deadline
    assert [r["variant"] for r in early] == ["exits"]
    thread.join(60)
    assert not thread.is_alive() and time.time() - t0 < 30
    rows = {r["variant"]: r for r in out["rows"]}
    assert rows["stuck"]["error"] == "past the deadline"
    for v in ("exits", "lingers"):
        assert rows[v]["seconds_per_step"] == 0.1 and rows[v]["not_ready"] == ["0_stuck_fake"]
    assert json.loads(rows_path.read_text()) == out["rows"]
    table = bench._table(out["rows"], None, None)
    assert "| fake | exits * |" in table and table.endswith(bench.NOT_READY_NOTE)

#!/usr/bin/env python
"""The batch form of ``mracnn compress`` against one process per image, on the Kodak images.

    python benchmarks/bench_batch_cli.py [--data ../shared/data/kodak] [--limit N] [--work DIR]

Runs, with the bundled default model and wall-clock times of whole commands (each a new
process, started as a user would start it):

1. cache off (``--no-cache``): one ``mracnn compress DATA -o OUT`` against one
   ``mracnn compress IMAGE OUT.mrac`` per image, one after another: the ratio is what coding all
   files in one process saves (imports, model loading, XLA compilation once per padded shape);
2. cache on (``--cache-dir``, a fresh folder under ``--work``, so that "cold" is cold): the
   same two, each once with an empty cache (cold) and once more with the cache that run left
   (warm).

Checks that every way writes the same bytes, and prints the load average around each run (the
development machine is shared: read the times with it). ``XLA_FLAGS`` lowering the optimisation
level (as the test suite sets it) makes the times unrepresentative and is warned about.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mracnn_jax.config_files import data_path


def _mracnn() -> list[str]:
    """The ``mracnn`` command of this Python environment."""
    script = Path(sys.executable).parent / "mracnn"
    return [str(script)] if script.is_file() else [sys.executable, "-m", "mracnn_jax.cli"]


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def _run(args: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(args, env=env, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"failed ({proc.returncode}): {' '.join(args)}\n{proc.stderr[-2000:]}")
    return seconds


def _batch(images: list[Path], out: Path, cache: list[str], env: dict) -> float:
    """One ``mracnn compress`` over every image (the folder itself when it is all of them)."""
    data = {p.parent for p in images}
    from mracnn_jax import images as image_io

    whole = len(data) == 1 and image_io.list_images(next(iter(data))) == images
    inputs = [str(next(iter(data)))] if whole else [str(p) for p in images]
    return _run([*_mracnn(), "compress", *inputs, "-o", str(out), *cache], env)


def _separate(images: list[Path], out: Path, cache: list[str], env: dict) -> float:
    """One ``mracnn compress IMAGE OUT`` per image, one after another."""
    out.mkdir(parents=True)
    t0 = time.perf_counter()
    for p in images:
        _run([*_mracnn(), "compress", str(p), str(out / f"{p.stem}.mrac"), *cache], env)
    return time.perf_counter() - t0


def _same_bytes(a: Path, b: Path) -> bool:
    names = sorted(p.name for p in a.iterdir())
    return names == sorted(p.name for p in b.iterdir()) and all(
        (a / n).read_bytes() == (b / n).read_bytes() for n in names
    )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=Path, default=data_path("kodak"))
    p.add_argument("--limit", type=int, help="only the first N images (a quick try)")
    p.add_argument("--work", type=Path, help="working folder (default: a temporary one, removed)")
    p.add_argument("--skip-cache", action="store_true", help="only the cache-off comparison")
    args = p.parse_args()
    from mracnn_jax import images as image_io

    images = image_io.list_images(args.data)[: args.limit]
    if not images:
        raise SystemExit(f"no images in {args.data}")
    if "xla_backend_optimization_level" in os.environ.get("XLA_FLAGS", ""):
        print("warning: XLA_FLAGS sets the optimisation level; times are not representative")
    work = Path(args.work or tempfile.mkdtemp(prefix="bench_batch_cli-"))
    work.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ, MRACNN_JAX_CACHE_DIR="off", TF_CPP_MIN_LOG_LEVEL="3")
    n = len(images)
    print(f"{n} images from {args.data}; mracnn = {' '.join(_mracnn())}; {os.cpu_count()} cores")
    rows = []

    def measure(label: str, fn, out: str, cache: list[str]) -> float:
        before = _load()
        seconds = fn(images, work / out, cache, env)
        rows.append((label, seconds))
        print(
            f"{label:<42} {seconds:7.1f} s  ({seconds / n:5.2f} s per image; load average "
            f"{before} -> {_load()})",
            flush=True,
        )
        return seconds

    try:
        off = ["--no-cache"]
        batch = measure("1 process, cache off", _batch, "batch_off", off)
        separate = measure(f"{n} processes, cache off", _separate, "separate_off", off)
        print(f"ratio, cache off: {separate / batch:.2f}x less wall time for the single call")
        assert _same_bytes(work / "batch_off", work / "separate_off"), "different bytes"
        if not args.skip_cache:
            cache_b, cache_s = (
                ["--cache-dir", str(work / "cache_b")],
                ["--cache-dir", str(work / "cache_s")],
            )
            b_cold = measure("1 process, cache on, cold", _batch, "batch_cold", cache_b)
            b_warm = measure("1 process, cache on, warm", _batch, "batch_warm", cache_b)
            s_cold = measure(f"{n} processes, cache on, cold", _separate, "separate_cold", cache_s)
            s_warm = measure(f"{n} processes, cache on, warm", _separate, "separate_warm", cache_s)
            print(f"ratio, cache cold: {s_cold / b_cold:.2f}x; cache warm: {s_warm / b_warm:.2f}x")
            size = sum(f.stat().st_size for f in (work / "cache_b").rglob("*") if f.is_file())
            print(f"compilation cache after the batch runs: {size / 1e6:.1f} MB")
            for out in ("batch_cold", "batch_warm", "separate_cold", "separate_warm"):
                assert _same_bytes(work / "batch_off", work / out), f"different bytes: {out}"
        print("all runs wrote the same bytes")
    finally:
        if args.work is None:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

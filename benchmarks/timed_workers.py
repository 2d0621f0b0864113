"""Benchmark workers that compile side by side and then take turns on the device.

A driver (``drive``) starts one process per job, a (config, variant) pair; each process is a
worker (``run_worker``) that

1. prepares: builds its step and compiles it (JAX) or warms it up (PyTorch), and measures that;
2. marks itself ready (a file ``TMP/ready/NAME``), then waits until every peer is ready or has
   exited (the driver marks an exited worker), or until the epoch time ``ready_by``;
3. runs its timed loop holding an exclusive lock (``TMP/device.lock``), so that timed loops never
   overlap each other, nor a peer's compilation unless ``ready_by`` came first (the row then lists
   the peers that were ``not_ready``);
4. writes its row to ``TMP/NAME.result.json`` (atomically) and to stdout, and exits.

Compilation, the slow part on the host, thus overlaps, while the timings stay those of a device
with one user. The driver collects a row as each worker exits (or an ``error`` row from the tail of
its log), rewrites ``json_path`` with the rows so far, and at ``deadline`` kills the workers still
running (and their process groups), keeping the rows of those that had written one. Ready marks
never revert, so a worker that sees a peer ready knows it will not compile again.

Used by ``bench_gpu_compare.py``, which supplies the preparers and the table.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mracnn_jax.fileio import write_atomic


@contextlib.contextmanager
def _turn(lock_path: str):
    """Exclusive use of the device for a timed loop (one process at a time)."""
    with open(lock_path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _ready_path(tmp: str, name: str) -> Path:
    return Path(tmp, "ready", name)


def _mark_ready(tmp: str, name: str, how: str) -> None:
    """Says that worker ``name`` will not compile any more: it is ready, or it has exited."""
    path = _ready_path(tmp, name)
    if not path.exists():
        path.write_text(how)


def _not_ready(tmp: str, names: list[str]) -> list[str]:
    return [n for n in names if not _ready_path(tmp, n).exists()]


def _wait_for_peers(tmp: str, names: list[str], until: float) -> list[str]:
    """Waits until every worker of ``names`` is ready or has exited, or until the epoch time
    ``until``; returns those still not ready."""
    while (missing := _not_ready(tmp, names)) and time.time() < until:
        time.sleep(0.1)
    return missing


def _result_path(tmp: str, name: str) -> Path:
    return Path(tmp, f"{name}.result.json")


def run_worker(a, prepare: Callable[[Any], tuple[dict, Callable[[], dict]]]) -> int:
    """One worker: ``prepare(a)`` compiles or warms up and returns what it measured and the timed
    loop; the worker says it is ready, waits for the others to do the same (or to exit, or until
    ``a.ready_by``), then runs the timed loop under the lock. The result goes to stdout and to a
    file in ``a.tmp``. ``ready_at``, ``timed_from`` and ``timed_to`` are epoch times. ``a`` holds
    the options ``drive`` adds (``tmp``, ``name``, ``ready_by``, ``wait_for``) and the row's
    ``config``, ``worker`` (the variant), ``batch`` and ``crop``."""
    result = {"config": a.config, "variant": a.worker, "batch": a.batch, "crop": a.crop}
    info, timed = prepare(a)
    result.update(info)
    result["ready_at"] = time.time()
    _mark_ready(a.tmp, a.name, "ready")
    _wait_for_peers(a.tmp, a.wait_for, a.ready_by)
    with _turn(os.path.join(a.tmp, "device.lock")):
        not_ready = _not_ready(a.tmp, a.wait_for)  # ready never reverts: none compiles later
        result["timed_from"] = time.time()
        result.update(timed())
        result["timed_to"] = time.time()
    if not_ready:
        result["not_ready"] = not_ready
    write_atomic(_result_path(a.tmp, a.name), lambda f: f.write(json.dumps(result).encode()))
    print("RESULT " + json.dumps(result), flush=True)
    return 0


def _kill(proc: subprocess.Popen) -> None:
    """Stops a worker and whatever it started (torch.compile's compile workers)."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


def drive(
    jobs: list[tuple[str, str]],
    command: Callable[[str, str], list[str]],
    tmp: str,
    *,
    deadline: float,
    reserve: float,
    sequential: bool = False,
    env: dict | None = None,
    json_path: str | None = None,
) -> list[dict]:
    """Runs one worker per (config, variant) of ``jobs`` (``command`` gives its command line, to
    which the worker options are added) and returns their rows in the order of ``jobs``. Each
    worker's output goes to a file in ``tmp``; a row is taken as its worker exits, and
    ``json_path`` rewritten with the rows so far. ``deadline`` seconds after the start the
    workers still running are killed, keeping the results they had written; ``reserve`` seconds
    before it waiting workers time their steps anyway."""
    t0 = time.time()
    deadline_at, ready_by = t0 + deadline, t0 + max(0.0, deadline - reserve)
    names = {
        job: f"{i}_{job[1]}_{re.sub(r'[^A-Za-z0-9]+', '-', job[0])}" for i, job in enumerate(jobs)
    }
    os.makedirs(os.path.join(tmp, "ready"), exist_ok=True)
    rows: dict[tuple[str, str], dict] = {}

    def ordered() -> list[dict]:
        return [rows[job] for job in jobs if job in rows]

    def record(job: tuple[str, str], row: dict) -> None:
        rows[job] = row
        if json_path:
            text = json.dumps(ordered(), indent=1).encode()
            write_atomic(json_path, lambda f: f.write(text))
        summary = row.get("error") or f"{row['seconds_per_step']:.4f} s/step"
        print(
            f"[{time.time() - t0:.0f} s] {job[0]} {job[1]}: {summary}", file=sys.stderr, flush=True
        )

    def result_of(job: tuple[str, str]) -> dict | None:
        path = _result_path(tmp, names[job])
        return json.loads(path.read_text()) if path.exists() else None

    def collect(job: tuple[str, str], returncode: int) -> None:
        _mark_ready(tmp, names[job], f"exited {returncode}")
        result = result_of(job)
        if result is not None:
            record(job, result)
            return
        out = Path(tmp, f"{names[job]}.log").read_text(errors="replace")
        tail = out.strip().splitlines()[-1:] or ["no output"]
        print(f"== {job[0]} {job[1]} failed ({returncode}):\n{out[-3000:]}", file=sys.stderr)
        record(job, {"config": job[0], "variant": job[1], "error": f"failed: {tail[0][:60]}"})

    def start(job: tuple[str, str]) -> subprocess.Popen:
        peers = [] if sequential else [names[j] for j in jobs if j != job]
        cmd = command(*job) + [
            "--tmp",
            tmp,
            "--name",
            names[job],
            "--ready-by",
            repr(ready_by),
            "--wait-for",
            *peers,
        ]
        with open(os.path.join(tmp, f"{names[job]}.log"), "w") as log:
            return subprocess.Popen(
                cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    pending = list(jobs)
    running: dict[tuple[str, str], subprocess.Popen] = {}
    try:
        while pending or running:
            while pending and (not running or not sequential):
                job = pending.pop(0)
                running[job] = start(job)
            for job, proc in list(running.items()):
                if proc.poll() is not None:
                    del running[job]
                    collect(job, proc.returncode)
            if time.time() >= deadline_at:
                break
            time.sleep(0.1)
        for job, proc in list(running.items()):  # past the deadline
            del running[job]
            if proc.poll() is not None:
                collect(job, proc.returncode)
                continue
            _kill(proc)
            result = result_of(job)  # written, though the process had not exited
            record(
                job, result or {"config": job[0], "variant": job[1], "error": "past the deadline"}
            )
        for job in pending:
            record(job, {"config": job[0], "variant": job[1], "error": "not started"})
    finally:
        for proc in running.values():  # an exception or a signal: leave no worker behind
            _kill(proc)
    return ordered()

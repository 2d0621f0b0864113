#!/usr/bin/env python
"""Our training step in float32 and in bfloat16 against the PyTorch twin's, one table.

For each config (default: mracnn and wacnn at batch 16 of 256²) it runs, each in its own process:

    jax-f32        the library's jitted step (``steps.make_train_step``: loss, clipping, Adam)
    jax-bf16       the same with ``model.compute_dtype = 'bfloat16'`` (mixed precision)
    torch-eager    the PyTorch twin (``mracnn_jax.torch_models``), Adam on the same loss
    torch-compile  the twin under ``torch.compile`` (``--variants`` adds it; minutes of warm-up)

and prints s/step, images/s, compile (JAX) or warm-up (PyTorch: the first two steps) time, peak
device memory, TFLOP/s and the fraction of ``--peak-tf32`` (float32 rows) or ``--peak-bf16``
(bfloat16 rows); without them, the dense peaks of the device's model from ``DENSE_PEAKS``
(NVIDIA's data sheets, half the "with sparsity" figures), matched by name. FLOPs per step are the
JAX step's (``bench_train_step``: the lowered step's cost analysis, else the convolutions and
matrix products of its jaxpr), for the PyTorch rows too.

The workers start together, so the slow part, XLA's compilation on the host, overlaps. Each
compiles (JAX) or warms up (PyTorch: two steps) and then says it is ready; no timed loop starts
until every worker is ready or has exited, so no timed loop shares the device with a compilation
(XLA's autotuning runs kernels on it), and the timed loops then take turns under a file lock, one
at a time. Compile and warm-up times are measured side by side, under contention: upper bounds.
``--reserve`` seconds before ``--deadline`` a waiting worker stops waiting and times its steps
anyway; its row is marked "*" (timed during others' compilation). At ``--deadline`` the workers
still running are stopped; the rows of those that finished, or had written their result, stay.
Each worker writes its output to a file, not a pipe; ``--json`` is rewritten as each row arrives.
Random uint8 images; no input pipeline.

    python benchmarks/bench_gpu_compare.py                   # on a GPU: peaks by the device's name
    python benchmarks/bench_gpu_compare.py --peak-tf32 494 --peak-bf16 989     # or given
    python benchmarks/bench_gpu_compare.py --smoke      # CPU check: small preset, 2 steps each
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

JAX_VARIANTS = ("jax-f32", "jax-bf16")
TORCH_VARIANTS = ("torch-eager", "torch-compile")
DEFAULT_VARIANTS = ("jax-f32", "jax-bf16", "torch-eager")
NOT_READY_NOTE = "* timed during others' compilation (the deadline was near)"

# Dense TF32 and BF16 tensor-core TFLOP/s by device model, for the "% peak" column; the first key
# found in the device's name wins (JAX's device_kind and torch's device name agree, e.g. "NVIDIA
# H100 80GB HBM3" for the SXM part, "NVIDIA H100 PCIe", "NVIDIA H200").
DENSE_PEAKS = {
    "H200": (494.0, 989.0),
    "H100 NVL": (418.0, 835.0),
    "H100 PCIe": (378.0, 756.0),
    "H100": (494.0, 989.0),  # SXM
    "A100": (156.0, 312.0),
}


def dense_peaks(device_name: str) -> tuple[float, float] | None:
    """(TF32, BF16) dense peak TFLOP/s of the device named ``device_name``; None when unknown."""
    return next((v for k, v in DENSE_PEAKS.items() if k in device_name), None)


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


def _write_atomically(path: Path, text: str) -> None:
    part = path.with_name(path.name + ".part")
    part.write_text(text)
    os.replace(part, path)


def _prepare_jax(a) -> tuple[dict, Callable[[], dict]]:
    """Builds and compiles the JAX step; returns what it measured and the timed loop."""
    import jax
    import jax.numpy as jnp
    from bench_train_step import _flops, jaxpr_flops, time_steps  # the script's folder
    from jax.sharding import NamedSharding
    from jax.sharding import PartitionSpec as P

    from mracnn_jax.config_files import load_config
    from mracnn_jax.models import build_model
    from mracnn_jax.training import steps
    from mracnn_jax.training.train_state import make_optimizer

    t_start = time.perf_counter()
    config = load_config(a.config)
    config.model.compute_dtype = "bfloat16" if a.worker == "jax-bf16" else "float32"
    model = build_model(config.model)
    mesh = steps.make_mesh(jax.local_devices()[:1])
    tx = make_optimizer(config.train)
    init_key, noise_key = steps.root_keys(0)
    state = steps.init_train_state(model, tx, init_key, mesh)
    step = steps.jit_train_step(steps.make_train_step(model, tx, config.train), mesh)
    batch = jax.device_put(
        (jax.random.uniform(jax.random.PRNGKey(1), (a.batch, a.crop, a.crop, 3)) * 255).astype(
            jnp.uint8
        ),
        NamedSharding(mesh, P("data")),
    )
    lowered = step.lower(state, batch, noise_key)
    t0 = time.perf_counter()
    compiled = lowered.compile()
    compile_s = time.perf_counter() - t0
    flops, source = _flops(lowered), "lowered"
    if flops is None:
        flops, source = jaxpr_flops(jax.make_jaxpr(step)(state, batch, noise_key)), "jaxpr"
    info = {
        "compile_s": compile_s,
        "start_to_compiled_s": time.perf_counter() - t_start,
        "flops": flops,
        "flops_source": source,
        "device": jax.local_devices()[0].device_kind,
    }

    def timed() -> dict:
        _, metrics, seconds = time_steps(compiled, state, batch, noise_key, a.steps)
        stats = jax.local_devices()[0].memory_stats() or {}
        peak = stats.get("peak_bytes_in_use")
        return {
            "seconds_per_step": seconds,
            "peak_gib": None if peak is None else peak / 2**30,
            "loss": float(metrics["loss"]),
        }

    return info, timed


def _prepare_torch(a) -> tuple[dict, Callable[[], dict]]:
    """Builds the PyTorch twin and runs its two warm-up steps (``torch.compile``'s compilation);
    returns what it measured and the timed loop (one more untimed step first)."""
    import torch

    from mracnn_jax.config_files import load_config
    from mracnn_jax.torch_models import build_model

    config = load_config(a.config)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    torch.backends.cuda.matmul.allow_tf32 = True  # the float32 default of JAX on a GPU
    torch.backends.cudnn.allow_tf32 = True
    torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    net = build_model(config).to(device).train()
    optimizer = torch.optim.Adam(net.parameters(), lr=float(config.train.learning_rate))
    clip = float(config.train.get("grad_clip_norm", 0.0))
    lmbda = float(config.train.lmbda)
    forward = torch.compile(net) if a.worker == "torch-compile" else net
    g = torch.Generator().manual_seed(1)
    x = (torch.randint(0, 256, (a.batch, 3, a.crop, a.crop), generator=g).float() / 255).to(device)

    def step() -> torch.Tensor:
        out = forward(x)
        bits = sum(-torch.log2(p).sum() for p in out["likelihoods"].values())
        loss = lmbda * 255.0**2 * torch.mean((out["x_hat"] - x) ** 2) + bits / (a.batch * a.crop**2)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        if clip > 0:
            torch.nn.utils.clip_grad_norm_(net.parameters(), clip)
        optimizer.step()
        return loss

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    t0 = time.perf_counter()
    for _ in range(2):
        step()
    sync()
    compile_s = time.perf_counter() - t0
    if device == "cuda":  # hand the warm-up's cached blocks back while the others compile
        torch.cuda.empty_cache()
    info = {
        "compile_s": compile_s,
        "device": torch.cuda.get_device_name() if device == "cuda" else "cpu",
        "torch": torch.__version__,
    }

    def timed() -> dict:
        step()  # after the wait, as JAX's time_steps does
        sync()
        if device == "cuda":
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        for _ in range(a.steps):
            loss = step()
        sync()
        seconds = (time.perf_counter() - t0) / a.steps
        peak = torch.cuda.max_memory_allocated() / 2**30 if device == "cuda" else None
        return {"seconds_per_step": seconds, "peak_gib": peak, "loss": float(loss)}

    return info, timed


PREPARERS = {v: _prepare_jax for v in JAX_VARIANTS} | {v: _prepare_torch for v in TORCH_VARIANTS}


def _run_worker(a) -> int:
    """One worker: compile or warm up, say so, wait for the others to do the same (or to exit,
    or until ``--ready-by``), then the timed loop under the lock; the result goes to stdout and to
    a file in ``--tmp``. ``ready_at``, ``timed_from`` and ``timed_to`` are epoch times."""
    result = {"config": a.config, "variant": a.worker, "batch": a.batch, "crop": a.crop}
    info, timed = PREPARERS[a.worker](a)
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
    _write_atomically(_result_path(a.tmp, a.name), json.dumps(result))
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
            _write_atomically(Path(json_path), json.dumps(ordered(), indent=1))
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


def _torch_available() -> bool:
    try:
        import torch  # noqa: F401
    except ImportError:
        return False
    return True


def _table(rows: list[dict], peak_tf32: float | None, peak_bf16: float | None) -> str:
    flops_of = {r["config"]: r["flops"] for r in rows if r.get("flops")}
    head = (
        "config",
        "variant",
        "s/step",
        "img/s",
        "compile/warm-up s",
        "peak GiB",
        "TFLOP/s",
        "% peak",
    )
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        if "error" in r:
            lines.append(f"| {r['config']} | {r['variant']} | {r['error']} |" + " |" * 5)
            continue
        s = r["seconds_per_step"]
        flops = flops_of.get(r["config"])
        tflops = flops / s / 1e12 if flops else None
        peak = peak_bf16 if r["variant"] == "jax-bf16" else peak_tf32
        cells = (
            r["config"],
            r["variant"] + (" *" if r.get("not_ready") else ""),
            f"{s:.4f}",
            f"{r['batch'] / s:.1f}",
            f"{r['compile_s']:.1f}",
            "-" if r.get("peak_gib") is None else f"{r['peak_gib']:.1f}",
            "-" if tflops is None else f"{tflops:.3g}",
            "-" if tflops is None or not peak else f"{100 * tflops / peak:.1f}",
        )
        lines.append("| " + " | ".join(cells) + " |")
    if any(r.get("not_ready") for r in rows):
        lines += ["", NOT_READY_NOTE]
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--configs", nargs="+", default=["mracnn", "wacnn"])
    p.add_argument(
        "--variants",
        nargs="+",
        default=list(DEFAULT_VARIANTS),
        choices=JAX_VARIANTS + TORCH_VARIANTS,
    )
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--crop", type=int, default=256)
    p.add_argument("--steps", type=int, default=20, help="timed steps per variant")
    p.add_argument(
        "--peak-tf32",
        type=float,
        help="device peak TFLOP/s for float32 rows (default: DENSE_PEAKS)",
    )
    p.add_argument(
        "--peak-bf16",
        type=float,
        help="device peak TFLOP/s for bfloat16 rows (default: DENSE_PEAKS)",
    )
    p.add_argument("--deadline", type=float, default=450.0, help="seconds for everything")
    p.add_argument(
        "--reserve",
        type=float,
        help="seconds before the deadline at which a worker stops waiting for the others' "
        "compilation and times its steps anyway (default: a fifth of --deadline, "
        "at most 90)",
    )
    p.add_argument(
        "--sequential", action="store_true", help="one worker at a time (clean compile times)"
    )
    p.add_argument("--json", help="also write the rows here (rewritten as each row arrives)")
    p.add_argument(
        "--smoke",
        action="store_true",
        help="CPU check: config small at its own batch and crop, 2 steps",
    )
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--config", help=argparse.SUPPRESS)
    p.add_argument("--tmp", help=argparse.SUPPRESS)
    p.add_argument("--name", help=argparse.SUPPRESS)
    p.add_argument("--ready-by", type=float, help=argparse.SUPPRESS)
    p.add_argument("--wait-for", nargs="*", default=[], help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        return _run_worker(a)
    if a.smoke:  # the step the tests train (the compilation cache may hold it)
        from mracnn_jax.config_files import load_config

        recipe = load_config("small").train
        a.configs, a.batch, a.crop, a.steps = ["small"], recipe.batch_size, recipe.crop_size, 2
    variants = list(a.variants)
    if not _torch_available():
        skipped = [v for v in variants if v in TORCH_VARIANTS]
        variants = [v for v in variants if v not in TORCH_VARIANTS]
        if skipped:
            print(f"torch is not installed: {', '.join(skipped)} left out", file=sys.stderr)

    def command(config: str, variant: str) -> list[str]:
        return [
            sys.executable,
            __file__,
            "--worker",
            variant,
            "--config",
            config,
            "--batch",
            str(a.batch),
            "--crop",
            str(a.crop),
            "--steps",
            str(a.steps),
        ]

    # gpu_compare.sh's timeout sends SIGTERM: unwind, so that drive kills its workers
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    t0 = time.time()
    reserve = a.reserve if a.reserve is not None else min(90.0, a.deadline / 5)
    with tempfile.TemporaryDirectory() as tmp:
        rows = drive(
            [(c, v) for c in a.configs for v in variants], command, tmp,
            deadline=a.deadline, reserve=reserve, sequential=a.sequential,
            env=dict(os.environ, XLA_PYTHON_CLIENT_PREALLOCATE="false"), json_path=a.json,
        )  # fmt: skip
    names = sorted({r["device"] for r in rows if "device" in r})
    print(
        f"batch {a.batch} of {a.crop}², {a.steps} timed steps each, {time.time() - t0:.0f} s in all; "
        f"devices: {names}"
    )
    peaks, source = (a.peak_tf32, a.peak_bf16), "given"
    if None in peaks and names:
        known = dense_peaks(names[0])
        peaks = tuple(g if g is not None else k for g, k in zip(peaks, known or (None, None)))
        source = f"DENSE_PEAKS for {names[0]!r}" if known else f"unknown for {names[0]!r}"
    print(f"peaks (TF32, BF16 dense TFLOP/s): {peaks} ({source})")
    print(_table(rows, *peaks))
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())

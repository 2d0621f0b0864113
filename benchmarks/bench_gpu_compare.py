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

Each variant runs in its own worker process (``timed_workers``): the workers compile side by side,
and no timed loop starts until every worker is ready or has exited; then the timed loops take turns
on the device. Compile and warm-up times are thus measured under contention: upper bounds.
``--reserve`` seconds before ``--deadline`` a waiting worker stops waiting and times its steps
anyway; its row is marked "*" (timed during others' compilation). At ``--deadline`` the workers
still running are stopped; the rows of those that finished, or had written their result, stay.
``--json`` is rewritten as each row arrives. Random uint8 images; no input pipeline.

    python benchmarks/bench_gpu_compare.py                   # on a GPU: peaks by the device's name
    python benchmarks/bench_gpu_compare.py --peak-tf32 494 --peak-bf16 989     # or given
    python benchmarks/bench_gpu_compare.py --smoke      # CPU check: small preset, 2 steps each
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import tempfile
import time
from collections.abc import Callable

import timed_workers  # the script's folder

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


def _prepare_jax(a) -> tuple[dict, Callable[[], dict]]:
    """Builds and compiles the JAX step; returns what it measured and the timed loop."""
    import jax
    from bench_train_step import _flops, compile_step, counted_flops, time_steps  # the folder

    from mracnn_jax.config_files import load_config

    t_start = time.perf_counter()
    config = load_config(a.config)
    config.model.compute_dtype = "bfloat16" if a.worker == "jax-bf16" else "float32"
    s = compile_step(config, a.batch, a.crop, jax.local_devices()[:1])
    flops, source = _flops(s.lowered), "lowered"
    if flops is None:
        flops, source = counted_flops(s), "jaxpr"
    info = {
        "compile_s": s.compile_s,
        "start_to_compiled_s": time.perf_counter() - t_start,
        "flops": flops,
        "flops_source": source,
        "device": jax.local_devices()[0].device_kind,
    }

    def timed() -> dict:
        metrics, seconds = time_steps(s, a.steps)
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
        return timed_workers.run_worker(a, PREPARERS[a.worker])
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
        rows = timed_workers.drive(
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

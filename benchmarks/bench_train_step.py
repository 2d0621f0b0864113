#!/usr/bin/env python
"""Training-step throughput of a config on whatever device JAX sees (CPU, GPU, TPU).

Times ``--steps`` steps of the same jitted step that ``train.py`` runs (the library's
``make_train_step``: rate-distortion loss, gradient clipping, Adam), on random images of
``--batch`` x ``--crop``², sharded over every local device, and prints steps/s, images/s,
achieved FLOP/s, model FLOPs utilisation against ``--peak-tflops`` when given, the device's peak
memory where the backend reports it, and the compile time apart.

FLOPs per step (``flops_source`` says which count was used):

* ``lowered``: XLA's cost analysis of the *lowered* step (before backend optimisation, so whatever
  the backend's compiler later fuses or hands to a library is still counted);
* ``jaxpr``: where a JAX version or backend gives no cost analysis of the lowered step (jax 0.11
  on a GPU returns None), the convolutions and matrix products counted from the step's jaxpr,
  2 x output elements x contraction size each (a transposed convolution's taps on inserted zeros
  left out; forward and backward, since the step holds both). Elementwise work is not counted and
  borders are counted as if padded with data, so it differs from the lowered count by a few to
  ten per cent.

The count of the compiled step is printed beside it when there is one, but it is never used for
MFU: on a GPU it leaves out the convolutions that XLA hands to cuDNN (mracnn_jax/configs/mracnn.py
at batch 16: 155 GFLOPs per step compiled for an H200, 4,683 lowered), and on the CPU it charges
each fusion that slices a parameter's update out of the flat optimiser's vector with the whole
vector's elementwise work (the small preset: 1.64 GFLOPs compiled, 0.78 lowered, on jax 0.10.2).
Compile time and step time are reported apart. The input pipeline is left out on purpose (it is
measured by ``python -m mracnn_jax.training.input_pipeline``).

    python benchmarks/bench_train_step.py --config mracnn --batch 16 --steps 200 \
        --peak-tflops 989   # H100 SXM dense bf16; use the float32 figure for a float32 run
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
import time
from typing import Any

from mracnn_jax.config_files import config_path, load_config


def _flops(stage) -> float | None:
    """XLA's FLOP count of a ``jax.stages.Lowered`` or ``Compiled`` step, None where the
    backend or JAX version gives none."""
    try:
        cost = stage.cost_analysis()
    except Exception:  # noqa: BLE001 - some backends raise instead of returning None
        return None
    cost = cost[0] if isinstance(cost, (list, tuple)) and cost else cost
    if not isinstance(cost, dict) or "flops" not in cost:
        return None
    flops = float(cost["flops"])
    return flops if flops > 0 else None


def _subjaxprs(eqn):
    for v in eqn.params.values():
        for x in v if isinstance(v, (list, tuple)) else (v,):
            inner = getattr(x, "jaxpr", x)
            if hasattr(inner, "eqns"):
                yield inner


def jaxpr_flops(jaxpr) -> float:
    """2 x output elements x contraction size of every convolution and matrix product in a
    (closed) jaxpr, nested jaxprs included."""
    total = 0.0
    for eqn in getattr(jaxpr, "jaxpr", jaxpr).eqns:
        name = eqn.primitive.name
        if name == "conv_general_dilated":
            lhs, rhs = (v.aval.shape for v in eqn.invars)
            dn = eqn.params["dimension_numbers"]
            out = eqn.outvars[0].aval.shape
            kernel_in = rhs[dn.rhs_spec[1]]
            window = math.prod(rhs[i] for i in dn.rhs_spec[2:])
            # A transposed convolution (input dilation d) multiplies only 1 / prod(d) of its taps
            # with data; the rest fall on the inserted zeros.
            dilation = math.prod(eqn.params.get("lhs_dilation") or (1,))
            total += 2.0 * math.prod(out) * kernel_in * window / dilation
        elif name == "dot_general":
            (contract, _), _ = eqn.params["dimension_numbers"]
            lhs = eqn.invars[0].aval.shape
            total += (
                2.0 * math.prod(eqn.outvars[0].aval.shape) * math.prod(lhs[i] for i in contract)
            )
        for sub in _subjaxprs(eqn):
            total += jaxpr_flops(sub)
    return total


@dataclasses.dataclass
class CompiledStep:
    """train.py's step for one config, ready to time: ``step_fn`` jitted over the mesh, lowered for
    ``batch`` and compiled (``compile_s`` seconds), with the state and noise key it starts from."""

    step_fn: Any
    lowered: Any
    compiled: Any
    lower_s: float
    compile_s: float
    state: Any
    batch: Any
    noise_key: Any


def compile_step(
    config, batch: int, crop: int, devices=None, flat_optimizer: bool = True
) -> CompiledStep:
    """The training step of ``config`` (``make_train_step``: loss, clipping, Adam) jitted over
    ``devices`` (default: every device), lowered for random uint8 images ``[batch, crop, crop,
    3]`` sharded along the batch, and compiled; tracing with lowering and the compilation are
    timed apart. ``flat_optimizer=False``: the optimiser on each leaf (``make_optimizer``)."""
    import jax
    import jax.numpy as jnp

    from mracnn_jax.models import build_model
    from mracnn_jax.training import steps
    from mracnn_jax.training.train_state import make_optimizer

    model = build_model(config.model)
    mesh = steps.make_mesh(devices)
    tx = make_optimizer(config.train, flat=flat_optimizer)
    init_key, noise_key = steps.root_keys(0)
    state = steps.init_train_state(model, tx, init_key, mesh)
    step_fn = steps.jit_train_step(steps.make_train_step(model, tx, config.train), mesh)
    images = jax.random.uniform(jax.random.PRNGKey(1), (batch, crop, crop, 3)) * 255
    images = jax.device_put(images.astype(jnp.uint8), steps.batch_sharding(mesh))
    t0 = time.perf_counter()
    lowered = step_fn.lower(state, images, noise_key)
    t1 = time.perf_counter()
    compiled = lowered.compile()
    t2 = time.perf_counter()
    return CompiledStep(step_fn, lowered, compiled, t1 - t0, t2 - t1, state, images, noise_key)


def counted_flops(s: CompiledStep) -> float:
    """``jaxpr_flops`` of the step's jaxpr (the ``jaxpr`` source of the module docstring)."""
    import jax

    return jaxpr_flops(jax.make_jaxpr(s.step_fn)(s.state, s.batch, s.noise_key))


def time_steps(s: CompiledStep, steps: int):
    """Runs the compiled step once (warm-up), then ``steps`` times, step i with the noise key
    folded with i; returns ``(metrics, seconds per step)`` of the timed steps, waited for."""
    import jax

    state, metrics = s.compiled(s.state, s.batch, s.noise_key)  # warm-up
    jax.block_until_ready(metrics)
    t0 = time.perf_counter()
    for i in range(steps):
        state, metrics = s.compiled(state, s.batch, jax.random.fold_in(s.noise_key, i))
    jax.block_until_ready(metrics)
    return metrics, (time.perf_counter() - t0) / steps


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config", default=str(config_path("mracnn")))
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--crop", type=int, default=256)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--peak-tflops", type=float, default=None, help="device peak for the MFU figure")
    p.add_argument(
        "--flops",
        choices=("auto", "jaxpr"),
        default="auto",
        help="auto: the lowered step's cost analysis where there is one; jaxpr: count",
    )
    p.add_argument(
        "--optimizer",
        choices=("flat", "per-leaf"),
        default="flat",
        help="flat: train.py's optimiser on one vector; per-leaf: the same on each leaf",
    )
    a = p.parse_args()

    import jax

    s = compile_step(load_config(a.config), a.batch, a.crop, flat_optimizer=a.optimizer == "flat")
    counted = counted_flops(s)
    flops, source = (_flops(s.lowered) if a.flops == "auto" else None), "lowered"
    if flops is None:
        flops, source = counted, "jaxpr"
    compiled_flops = _flops(s.compiled)
    metrics, seconds = time_steps(s, a.steps)
    result = {
        "config": a.config,
        "devices": [str(d) for d in jax.devices()],
        "batch": a.batch,
        "crop": a.crop,
        "optimizer": a.optimizer,
        "lower_s": s.lower_s,
        "compile_s": s.compile_s,
        "seconds_per_step": seconds,
        "steps_per_s": 1 / seconds,
        "images_per_s": a.batch / seconds,
        "gflop_per_step": flops / 1e9,
        "flops_source": source,
        "gflop_per_step_jaxpr": counted / 1e9,
        "gflop_per_step_compiled": None if compiled_flops is None else compiled_flops / 1e9,
        "tflops_per_s": flops / seconds / 1e12,
        "mfu": (flops / seconds / 1e12 / a.peak_tflops) if a.peak_tflops else None,
        "loss": float(metrics["loss"]) if "loss" in metrics else None,
    }
    stats = jax.devices()[0].memory_stats() or {}
    if "peak_bytes_in_use" in stats:
        result["peak_device_memory_gib"] = stats["peak_bytes_in_use"] / 2**30
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())

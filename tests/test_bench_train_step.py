"""benchmarks/bench_train_step.py: never a crash, FLOPs from the lowered step or the jaxpr."""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import jax
import jax.numpy as jnp
import pytest
from load_script import load_script  # a sibling helper module

from mracnn_jax.config_files import load_config

REPO = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = REPO / "benchmarks" / "bench_train_step.py"


def _module():
    return load_script(SCRIPT)


def test_jaxpr_flops_counts_convolutions_and_matmuls():
    bench = _module()

    def f(x, k, w):
        y = jax.lax.conv_general_dilated(
            x, k, (2, 2), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC")
        )
        return jnp.sum(jax.nn.relu(y).reshape(2, -1) @ w)

    x, k, w = jnp.ones((2, 16, 16, 3)), jnp.ones((3, 3, 3, 8)), jnp.ones((8 * 8 * 8, 5))
    conv = 2 * (2 * 8 * 8 * 8) * (3 * 3 * 3)  # 2 x output elements x (window x input channels)
    dot = 2 * (2 * 5) * (8 * 8 * 8)
    assert bench.jaxpr_flops(jax.make_jaxpr(f)(x, k, w)) == conv + dot
    # Inside jit (a nested jaxpr) and with the gradient: the backward pass adds two convolutions
    # (input and kernel gradients, each as many useful FLOPs as the forward: the input gradient is
    # a transposed convolution whose taps on inserted zeros do not count) and two products.
    g = jax.jit(jax.grad(f, argnums=(0, 1, 2)))
    counted = bench.jaxpr_flops(jax.make_jaxpr(g)(x, k, w))
    assert counted == 3 * (conv + dot)
    # XLA's own count of the lowered step (borders excluded, elementwise work included) is close.
    assert counted == pytest.approx(bench._flops(g.lower(x, k, w)), rel=0.15)


def test_smoke_run_on_the_small_config(subprocess_xla_cache):
    # the preset's own batch and crop: the step that the other tests and bench_gpu_compare's smoke
    # run train, which then load it from the cache
    recipe = load_config("small").train
    done = subprocess.run(
        [sys.executable, str(SCRIPT), "--config", "small", "--batch", str(recipe.batch_size),
         "--crop", str(recipe.crop_size), "--steps", "1"],
        capture_output=True, text=True, timeout=600, check=False, cwd=REPO,
        env=dict(os.environ, JAX_COMPILATION_CACHE_DIR=str(subprocess_xla_cache)),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["compile_s"] > 0 and result["seconds_per_step"] > 0
    assert result["flops_source"] == "lowered"  # the CPU gives a cost analysis
    # The count from the jaxpr (the fallback where there is none) is close to XLA's own. (The
    # compiled step's count is only printed: the module docstring says why it is not comparable.)
    assert result["gflop_per_step_jaxpr"] == pytest.approx(result["gflop_per_step"], rel=0.25)

#!/usr/bin/env python
"""1x1, strided and transposed convolutions on XLA's CPU backend: our forms against XLA's own.

    .venv/bin/python benchmarks/bench_conv_gradients.py [--batch 4] [--repeats 5]

At the shapes WACNN's transforms have in a training step (batch ``--batch`` of 256x256 crops),
times forward and gradient (with respect to input and kernel) of

  * a 1x1 convolution, 192 -> 96 and 96 -> 192 channels on 64x64 (WACNN's residual units at a
    quarter of the resolution): XLA's convolution against ``conv.pointwise_conv`` (one matrix
    product);
  * a 5x5 stride-2 convolution, 192 -> 192 channels on 128x128: XLA's strided convolution and its
    derived gradients against ``conv.conv_stride2`` (same forward, sub-pixel input gradient,
    polyphase kernel gradient);
  * a 5x5 stride-2 transposed convolution 192 -> 192 on 64x64 (the middle of g_s) and 192 -> 3 on
    128x128 (g_s's last layer): ``upsampling.conv_transpose_subpixel`` (four exact-tap
    convolutions, or matmul + col2im below ``FEW_OUTPUT_CHANNELS`` outputs) against the
    input-dilated form ``flax.linen.ConvTranspose`` lowers to, and against one convolution with the
    four phases stacked into a zero-padded ``[3, 3, C_in, 4 C_out]`` kernel (the sub-pixel form
    this project used before).

Every variant is checked against the reference for equal outputs and gradients, all variants are
compiled first and then timed in interleaved rounds (median of ``--repeats``), so that a noisy
machine affects them alike. Prints one JSON line per case with ratios to the reference.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

_DN = ("NHWC", "HWIO", "NHWC")


def _stacked_subpixel(x, kernel, padding):
    """The four phases as one stride-1 convolution with a zero-padded stacked kernel."""
    import jax
    import jax.numpy as jnp

    from mracnn_jax.layers import upsampling

    phases = upsampling.phase_kernels(kernel, padding)
    lo = max(pad[0][0] for _, pad in phases.values())
    hi = max(pad[0][1] for _, pad in phases.values())
    size = lo + hi + 1
    stacked = []
    for a in (0, 1):
        for b in (0, 1):
            w, ((ly, hy), (lx, hx)) = phases[(a, b)]
            stacked.append(jnp.pad(w, ((lo - ly, hi - hy), (lo - lx, hi - hx), (0, 0), (0, 0))))
    w_all = jnp.concatenate(stacked, axis=-1)
    assert w_all.shape[:2] == (size, size)
    y = jax.lax.conv_general_dilated(x, w_all, (1, 1), ((lo, hi), (lo, hi)), dimension_numbers=_DN)
    return upsampling.depth_to_space(y, 2)


def _cases(batch: int):
    import jax

    from mracnn_jax.layers import conv, upsampling

    def strided_xla(x, k):
        return jax.lax.conv_general_dilated(x, k, (2, 2), ((2, 2), (2, 2)), dimension_numbers=_DN)

    def dilated(x, k):
        return upsampling.conv_transpose_dilated(x, k, 2)

    def ours_transpose(x, k):
        return upsampling.conv_transpose_subpixel(x, k, 2)

    def stacked(x, k):
        return _stacked_subpixel(x, k, 2)

    def pointwise_xla(x, k):
        return jax.lax.conv_general_dilated(x, k, (1, 1), ((0, 0), (0, 0)), dimension_numbers=_DN)

    return [
        ("conv 1x1 192->96 @64", (batch, 64, 64, 192), (1, 1, 192, 96),
         {"xla": pointwise_xla, "pointwise_conv": conv.pointwise_conv}),
        ("conv 1x1 96->192 @64", (batch, 64, 64, 96), (1, 1, 96, 192),
         {"xla": pointwise_xla, "pointwise_conv": conv.pointwise_conv}),
        ("conv 5x5 s2 192->192 @128", (batch, 128, 128, 192), (5, 5, 192, 192),
         {"xla": strided_xla, "conv_stride2": conv.conv_stride2}),
        ("transposed 5x5 192->192 @64", (batch, 64, 64, 192), (5, 5, 192, 192),
         {"dilated (flax)": dilated, "stacked sub-pixel": stacked, "ours": ours_transpose}),
        ("transposed 5x5 192->3 @128", (batch, 128, 128, 192), (5, 5, 192, 3),
         {"dilated (flax)": dilated, "stacked sub-pixel": stacked, "ours": ours_transpose}),
    ]  # fmt: skip


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--repeats", type=int, default=5)
    a = p.parse_args()

    import jax
    import jax.numpy as jnp
    import numpy as np

    for name, x_shape, k_shape, variants in _cases(a.batch):
        x = jax.random.normal(jax.random.PRNGKey(0), x_shape)
        kernel = 0.05 * jax.random.normal(jax.random.PRNGKey(1), k_shape)
        compiled, values = {}, {}
        for label, fn in variants.items():
            fwd = jax.jit(fn).lower(x, kernel).compile()
            grad = (
                jax.jit(
                    jax.grad(
                        lambda x, k, fn=fn: 0.5 * jnp.sum(jnp.square(fn(x, k))), argnums=(0, 1)
                    )
                )
                .lower(x, kernel)
                .compile()
            )
            compiled[label] = {"forward": fwd, "gradient": grad}
            values[label] = (fwd(x, kernel), grad(x, kernel))
        reference = next(iter(variants))
        ref_out, ref_grads = values[reference]
        for label, (out, grads) in values.items():
            for got, want in zip((out, *grads), (ref_out, *ref_grads)):
                scale = float(jnp.abs(want).max())
                np.testing.assert_allclose(got, want, atol=1e-4 * scale, err_msg=f"{name} {label}")
        times = {(label, phase): [] for label in variants for phase in ("forward", "gradient")}
        for _ in range(a.repeats):
            for (label, phase), runs in times.items():
                t0 = time.perf_counter()
                jax.block_until_ready(compiled[label][phase](x, kernel))
                runs.append(time.perf_counter() - t0)
        for phase in ("forward", "gradient"):
            base = statistics.median(times[(reference, phase)])
            row = {"case": name, "phase": phase, "reference": reference}
            for label in variants:
                med = statistics.median(times[(label, phase)])
                row[label] = {"seconds": round(med, 4), "vs_reference": round(med / base, 3)}
            print(json.dumps(row), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

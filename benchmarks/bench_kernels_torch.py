#!/usr/bin/env python
"""The machine's kernels under XLA and under PyTorch: the floor under the training step's ratio.

    .venv/bin/python benchmarks/bench_kernels_torch.py [--repeats 9] [--threads 2]

bench_model.py compares WACNN's whole training step in JAX with PyTorch's. Below the model
code, both frameworks end in a handful of kernels: XLA's CPU backend in its own (Eigen-based)
matrix products and convolutions, PyTorch in MKL/oneDNN. This script times those kernels alone,
at the shapes they have in WACNN's training step (batch 4 of 256x256 crops), in float32 on the
same cores:

  * ``gemm 2048^3``: the square product the other benchmarks quote as "the machine's matmul rate";
  * ``gemm qkv``: ``[16384, 192] @ [192, 576]``, the window attention's q/k/v projection at 64x64;
  * ``gemm slice``: ``[1024, 4320] @ [4320, 224]``, a 3x3 slice-transform convolution (480 -> 224
    channels at 16x16) written as one product;
  * ``bmm window``: ``[2048, 64, 24] @ [2048, 24, 64]``, the 64-token attention scores of 8 heads
    in 256 windows;
  * ``conv3x3 96 @64``: a 3x3, 96 -> 96 convolution on 64x64 (WACNN's residual units), forward,
    and its gradient with respect to input and kernel (PyTorch: autograd of ``conv2d``);
  * ``conv5x5 s2 192 @128``: the 5x5 stride-2 convolution, 192 -> 192 channels from 128x128 to
    64x64, that holds most of g_a's FLOPs (forward only: the gradients are this project's own
    code, compared layer by layer in compare_wacnn_layers.py).

Each kernel is compiled (XLA) or warmed up (PyTorch) first; then the two alternate in every round
so that this VM's drift affects both alike; the two results are checked to agree first. Prints one JSON line per case: median milliseconds,
GFLOP/s from the kernel's multiply-accumulate count, and XLA's time as a multiple of PyTorch's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time


def _cases():
    """(name, FLOPs, xla_fn_and_args, torch_fn_and_args) for each kernel."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch

    rng = np.random.default_rng(0)

    def arrays(*shapes):
        host = [rng.standard_normal(s).astype(np.float32) for s in shapes]
        return [jnp.asarray(a) for a in host], [torch.from_numpy(a) for a in host]

    cases = []
    for name, (m, k, n) in {
        "gemm 2048^3": (2048, 2048, 2048),
        "gemm qkv": (16384, 192, 576),
        "gemm slice": (1024, 4320, 224),
    }.items():
        (a, b), (ta, tb) = arrays((m, k), (k, n))
        cases.append((name, 2 * m * k * n, (jax.jit(jnp.matmul), (a, b)), (torch.mm, (ta, tb))))

    (q, kt), (tq, tkt) = arrays((2048, 64, 24), (2048, 24, 64))
    cases.append(
        (
            "bmm window",
            2 * 2048 * 64 * 24 * 64,
            (jax.jit(jnp.matmul), (q, kt)),
            (torch.bmm, (tq, tkt)),
        )
    )

    def conv_case(name, x_shape, k, c_out, stride, gradient=False):
        """A k x k convolution with PyTorch's symmetric padding k // 2: forward, or the gradient
        of sum(y^2) with respect to input and kernel. PyTorch gets the same values in NCHW/OIHW."""
        (x, w), (tx, tw) = arrays(x_shape, (k, k, x_shape[-1], c_out))
        b, h, wd, c_in = x_shape
        flops = 2 * b * (h // stride) * (wd // stride) * c_in * c_out * k * k
        pad = k // 2

        def xla_conv(x, w):
            return jax.lax.conv_general_dilated(
                x,
                w,
                (stride, stride),
                ((pad, pad), (pad, pad)),
                dimension_numbers=("NHWC", "HWIO", "NHWC"),
            )

        def torch_conv(x, w):
            return torch.nn.functional.conv2d(x, w, stride=stride, padding=pad)

        def torch_conv_grad(x, w):
            x = x.detach().requires_grad_(True)
            w = w.detach().requires_grad_(True)
            (torch_conv(x, w) ** 2).sum().backward()
            return x.grad, w.grad

        torch_args = (tx.permute(0, 3, 1, 2).contiguous(), tw.permute(3, 2, 0, 1).contiguous())
        if gradient:
            loss = lambda x, w: jnp.sum(xla_conv(x, w) ** 2)
            xla = jax.jit(jax.grad(loss, argnums=(0, 1)))
            return (name, 3 * flops, (xla, (x, w)), (torch_conv_grad, torch_args))
        return (name, flops, (jax.jit(xla_conv), (x, w)), (torch_conv, torch_args))

    cases.append(conv_case("conv3x3 96 @64 forward", (4, 64, 64, 96), 3, 96, 1))
    cases.append(conv_case("conv3x3 96 @64 gradient", (4, 64, 64, 96), 3, 96, 1, gradient=True))
    cases.append(conv_case("conv5x5 s2 192 @128 forward", (4, 128, 128, 192), 5, 192, 2))
    return cases


def _same_result(xla_out, torch_out) -> float:
    """Largest difference between the two results relative to their scale (layouts aligned:
    PyTorch's NCHW activations and OIHW kernels are moved to XLA's NHWC and HWIO)."""
    import numpy as np

    xs = xla_out if isinstance(xla_out, tuple) else (xla_out,)
    ts = torch_out if isinstance(torch_out, tuple) else (torch_out,)
    worst = 0.0
    for i, (x, t) in enumerate(zip(xs, ts)):
        t = t.detach().numpy()
        if t.ndim == 4:
            t = t.transpose(0, 2, 3, 1) if i == 0 else t.transpose(2, 3, 1, 0)
        x = np.asarray(x)
        worst = max(worst, float(np.max(np.abs(x - t)) / np.max(np.abs(t))))
    return worst


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--threads", type=int, default=2, help="PyTorch intra-op threads")
    args = ap.parse_args()

    import jax
    import torch

    torch.set_num_threads(args.threads)
    for name, flops, (xf, xargs), (tf, targs) in _cases():
        # PyTorch's inputs do not require gradients, so its forward cases build no autograd graph.
        xla_out = jax.block_until_ready(xf(*xargs))
        torch_out = tf(*targs)
        difference = _same_result(xla_out, torch_out)
        if difference > 1e-4:
            raise SystemExit(
                f"{name}: XLA and PyTorch disagree (relative difference {difference:.2e})"
            )
        times = {"xla": [], "torch": []}
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            jax.block_until_ready(xf(*xargs))
            times["xla"].append(time.perf_counter() - t0)
            t0 = time.perf_counter()
            tf(*targs)
            times["torch"].append(time.perf_counter() - t0)
        med = {k: statistics.median(v) for k, v in times.items()}
        print(
            json.dumps(
                {
                    "case": name,
                    "xla_ms": round(1e3 * med["xla"], 2),
                    "torch_ms": round(1e3 * med["torch"], 2),
                    "xla_gflops": round(flops / med["xla"] / 1e9, 1),
                    "torch_gflops": round(flops / med["torch"] / 1e9, 1),
                    "xla_vs_torch": round(med["xla"] / med["torch"], 3),
                    "relative_difference": float(f"{difference:.1e}"),
                }
            ),
            flush=True,
        )


if __name__ == "__main__":
    main()

#!/usr/bin/env python
"""Where WACNN's training step differs from PyTorch's: each layer group's gradient, side by side.

For every layer group of WACNN's transforms (a strided convolution with its GDN, a transposed
convolution with its IGDN, a window attention module, one residual unit, the window attention
alone) and for one channel-context slice transform, this times, at the shapes they have in a
training step at batch ``--batch`` of ``--crop``² crops, the gradient of 1/2 |layer(x)|^2 with
respect to the parameters and the input (forward included):

  * ours: the Flax layer from ``mracnn_jax.layers`` (random initialisation), jitted;
  * PyTorch: the same layer of tests/reference/torch_wacnn.py (the public WACNN's structure),
    eager, ``torch.set_num_threads(--threads)``.

Both run in this process, one after the other for each layer and alternating over ``--rounds``
rounds, so that the machine's load drifts equally on both; the median of each is printed with
the ratio ours / PyTorch. Needs torch (``make test`` installs it in .venv).

    .venv/bin/python benchmarks/compare_wacnn_layers.py [--batch 4 --crop 256 --rounds 5]

Prints a Markdown table and, as its last line, a JSON object.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import sys
import time


def _layers(batch: int, crop: int):
    """name -> (flax module factory, torch module factory, NHWC input shape)."""
    import flax.linen as nn
    import torch
    from bench_torch_wacnn import load_reference  # a sibling: a script's folder is importable

    from mracnn_jax.entropy.channel_context import ConvStack
    from mracnn_jax.layers.conv import Conv2d, ConvTranspose2d
    from mracnn_jax.layers.gdn import GDN
    from mracnn_jax.layers.residual import ResidualUnit
    from mracnn_jax.layers.wam import WAM, WindowAttention

    ref = load_reference()
    n, m, b, s = 192, 320, batch, crop

    class Then(nn.Module):  # two flax layers in sequence
        first: nn.Module
        second: nn.Module

        def __call__(self, x):
            return self.second(self.first(x))

    def conv_gdn(cin):
        return (
            lambda: Then(Conv2d(n, 5, stride=2), GDN()),
            lambda: torch.nn.Sequential(ref.conv(cin, n), ref.GDN(n)),
        )

    def deconv_igdn(cin):
        return (
            lambda: Then(ConvTranspose2d(n, 5), GDN(inverse=True)),
            lambda: torch.nn.Sequential(ref.deconv(cin, n), ref.GDN(n, inverse=True)),
        )

    def wam(c, window, shift):
        return (
            lambda: WAM(8, window, shift),
            lambda: ref.WindowAttentionModule(c, num_heads=8, window_size=window, shift_size=shift),
        )

    support = m + 5 * (m // 10)  # the widest slice transform's input (5 support slices)
    return {
        "conv 3->192 s2 + GDN (g_a 1)": (*conv_gdn(3), (b, s, s, 3)),
        "conv 192->192 s2 + GDN (g_a 2)": (*conv_gdn(n), (b, s // 2, s // 2, n)),
        "conv 192->192 s2 + GDN (g_a 3)": (*conv_gdn(n), (b, s // 4, s // 4, n)),
        "conv 192->320 s2 (g_a 4)": (
            lambda: Conv2d(m, 5, stride=2),
            lambda: ref.conv(n, m),
            (b, s // 8, s // 8, n),
        ),
        "WAM 192 at /4 (g_a, g_s)": (*wam(n, 8, 4), (b, s // 4, s // 4, n)),
        "WAM 320 at /16 (g_a, g_s)": (*wam(m, 4, 2), (b, s // 16, s // 16, m)),
        "  window attention 192 at /4": (
            lambda: WindowAttention(8, 8, 4),
            lambda: ref.WinBasedAttention(n, 8, 8, 4),
            (b, s // 4, s // 4, n),
        ),
        "  residual unit 192 at /4": (
            lambda: ResidualUnit(),
            lambda: ref.ResidualUnit(n),
            (b, s // 4, s // 4, n),
        ),
        "deconv 320->192 + IGDN (g_s 1)": (*deconv_igdn(m), (b, s // 16, s // 16, m)),
        "deconv 192->192 + IGDN (g_s 2)": (*deconv_igdn(n), (b, s // 8, s // 8, n)),
        "deconv 192->192 + IGDN (g_s 3)": (*deconv_igdn(n), (b, s // 4, s // 4, n)),
        "deconv 192->3 (g_s 4)": (
            lambda: ConvTranspose2d(3, 5),
            lambda: ref.deconv(n, 3),
            (b, s // 2, s // 2, n),
        ),
        f"slice transform {support}->32 at /16": (
            lambda: ConvStack((224, 176, 128, 64), m // 10),
            lambda: ref._slice_transform(support),
            (b, s // 16, s // 16, support),
        ),
    }


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--crop", type=int, default=256)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--only", help="substring of the layer names to run")
    a = p.parse_args()
    if importlib.util.find_spec("torch") is None:
        p.error("needs torch in this interpreter (make test installs it in .venv)")

    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    rows = []
    for name, (make_flax, make_torch, shape) in _layers(a.batch, a.crop).items():
        if a.only and a.only not in name:
            continue
        x = jax.random.normal(jax.random.PRNGKey(0), shape)
        layer = make_flax()
        params = layer.init(jax.random.PRNGKey(1), x)
        grad = jax.jit(
            jax.grad(
                lambda p, v, layer=layer: 0.5 * jnp.sum(jnp.square(layer.apply(p, v))),
                argnums=(0, 1),
            )
        )
        jax.block_until_ready(grad(params, x))
        t_layer = make_torch()
        xt = torch.from_numpy(np.asarray(x).transpose(0, 3, 1, 2).copy())

        def torch_step(xt=xt, t_layer=t_layer):
            v = xt.clone().requires_grad_(True)
            for q in t_layer.parameters():
                q.grad = None
            (0.5 * t_layer(v).square().sum()).backward()

        torch_step()  # warm-up
        ours, theirs = [], []
        for _ in range(a.rounds):
            t = time.perf_counter()
            jax.block_until_ready(grad(params, x))
            ours.append(time.perf_counter() - t)
            t = time.perf_counter()
            torch_step()
            theirs.append(time.perf_counter() - t)
        row = {
            "layer": name.strip(),
            "shape": list(shape),
            "ours_s": statistics.median(ours),
            "torch_s": statistics.median(theirs),
        }
        row["ratio"] = row["ours_s"] / row["torch_s"]
        rows.append(row)
        print(
            f"{name:42s} ours {row['ours_s'] * 1e3:7.1f} ms  torch {row['torch_s'] * 1e3:7.1f} ms  "
            f"{row['ratio']:.2f}x",
            file=sys.stderr,
            flush=True,
        )

    print(f"| layer (gradient, batch {a.batch} of {a.crop}²) | ours ms | PyTorch ms | ratio |")
    print("|---|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['layer']} | {r['ours_s'] * 1e3:.1f} | {r['torch_s'] * 1e3:.1f} | {r['ratio']:.2f}× |"
        )
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        json.dumps(
            {
                "torch": torch.__version__,
                "jax": jax.__version__,
                "load_avg_1m": load,
                "rounds": a.rounds,
                "rows": rows,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())

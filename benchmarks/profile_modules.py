#!/usr/bin/env python
"""Where the time goes: each part of a model timed alone, forward at 768x512 or gradient at the
training shape, on this machine.

    python benchmarks/profile_modules.py [--config mracnn wacnn] [--repeats 3]
    python benchmarks/profile_modules.py --grad [--batch 4 --crop 256]

For each config, the parts of the forward pass are jitted and timed separately on random inputs
of their real shapes (the analysis transform g_a on the image, h_a on y, h_s on z, the synthesis
g_s on y, and the channel-context entropy model as the whole forward minus those), next to XLA's
FLOP count of each part, so that a part that runs far below the machine's matmul FLOP/s
(measured in the same run) stands out. With ``--grad`` each part is differentiated instead
(gradient of 1/2 |part(params, input)|^2 with respect to the parameters and the input, at batch
``--batch`` of ``--crop``-pixel crops; "whole" is the training-mode forward with noise, its
gradient taken through x_hat and the likelihoods), which locates a slow training step. Prints
one JSON line per part.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

from mracnn_jax.config_files import config_path


def _time(fn, *args, repeats: int) -> tuple[float, float, float]:
    """(compile seconds, median run seconds, XLA FLOPs) of a jitted function."""
    import jax

    t0 = time.perf_counter()
    compiled = jax.jit(fn).lower(*args).compile()
    compile_s = time.perf_counter() - t0
    runs = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        runs.append(time.perf_counter() - t0)
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, list) else cost
    return compile_s, sorted(runs)[len(runs) // 2], float(cost.get("flops", 0.0))


def _gradient_of(fn):
    """(params, v) -> gradients of 1/2 sum of squares of ``fn``'s outputs w.r.t. params and v."""
    import jax
    import jax.numpy as jnp

    def half_square(p, v):
        return 0.5 * sum(jnp.sum(jnp.square(o)) for o in jax.tree_util.tree_leaves(fn(p, v)))

    return jax.grad(half_square, argnums=(0, 1))


def _matmul_gflops() -> float:
    import jax
    import jax.numpy as jnp

    a = jnp.ones((2048, 2048), jnp.float32)
    f = jax.jit(lambda a: a @ a)
    jax.block_until_ready(f(a))
    t0 = time.perf_counter()
    for _ in range(5):
        jax.block_until_ready(f(a))
    return 5 * 2 * 2048**3 / (time.perf_counter() - t0) / 1e9


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--config", nargs="+", default=[str(config_path("mracnn"))])
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--grad", action="store_true", help="time gradients at the training shape")
    p.add_argument("--batch", type=int, default=4, help="batch of --grad")
    p.add_argument("--crop", type=int, default=256, help="crop size of --grad (multiple of 64)")
    a = p.parse_args()

    import jax
    import jax.numpy as jnp

    from mracnn_jax.config_files import load_config
    from mracnn_jax.models import build_model, init_params

    peak = _matmul_gflops()
    print(json.dumps({"matmul_gflops_per_s": round(peak, 1)}), flush=True)
    for path in a.config:
        cfg = load_config(path)
        model = build_model(cfg.model)
        params = init_params(model, jax.random.PRNGKey(0))
        b, h, w = (a.batch, a.crop, a.crop) if a.grad else (1, 512, 768)
        x = jax.random.uniform(jax.random.PRNGKey(1), (b, h, w, 3))
        m = int(cfg.model.M)
        y = jax.random.normal(jax.random.PRNGKey(2), (b, h // 16, w // 16, m))
        z = jnp.round(
            jax.random.normal(jax.random.PRNGKey(3), (b, h // 64, w // 64, int(cfg.model.Z)))
        )

        def part(method, model=model):
            return lambda p, v: model.apply({"params": p}, v, method=method)

        def whole(p, v, model=model):
            if not a.grad:
                return model.apply({"params": p}, v, train=False)
            out = model.apply({"params": p}, v, train=True, rngs={"noise": jax.random.PRNGKey(4)})
            return out["x_hat"], jnp.log(out["likelihoods"]["y"]), jnp.log(out["likelihoods"]["z"])

        parts = {
            "g_a (analysis)": (part(model.analysis), x),
            "h_a (hyper analysis)": (part(model.hyper_analysis), y),
            "h_s (hyper synthesis, mean and scale)": (part(model.hyper_synthesis), z),
            "g_s (synthesis)": (part(model.synthesis), y),
            "whole forward": (whole, x),
        }
        if a.grad:
            parts = {name: (_gradient_of(fn), arg) for name, (fn, arg) in parts.items()}
        results = {}
        for name, (fn, arg) in parts.items():
            compile_s, run_s, flops = _time(fn, params, arg, repeats=a.repeats)
            results[name] = (run_s, flops)
            print(
                json.dumps(
                    {
                        "config": pathlib.Path(path).name,
                        "part": name,
                        "mode": f"gradient {b}x{h}x{w}" if a.grad else f"forward {h}x{w}",
                        "seconds": round(run_s, 3),
                        "gflops": round(flops / 1e9, 2),
                        "gflops_per_s": round(flops / 1e9 / run_s, 1),
                        "of_matmul_peak": round(flops / 1e9 / run_s / peak, 3),
                        "compile_s": round(compile_s, 1),
                    }
                ),
                flush=True,
            )
        whole_s, whole_f = results["whole forward"]
        rest_s = whole_s - sum(s for n, (s, _) in results.items() if n != "whole forward")
        rest_f = whole_f - sum(f for n, (_, f) in results.items() if n != "whole forward")
        print(
            json.dumps(
                {
                    "config": pathlib.Path(path).name,
                    "part": "entropy model (whole forward minus the transforms)",
                    "seconds": round(rest_s, 3),
                    "gflops": round(rest_f / 1e9, 2),
                    "share_of_forward": round(rest_s / whole_s, 3),
                }
            ),
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Memory and speed of ELSA's offset-loop aggregation against the unfold ("patches") reference.

Usage::

    python benchmarks/bench_elsa.py                 # both scopes and shapes, both impls
    python benchmarks/bench_elsa.py --scopes aggregate --reps 5 --configs dim192

Scopes: ``aggregate`` times ``elsa_aggregate`` alone (v, softmaxed attention, ghost; the part
the two implementations differ in); ``module`` the whole ``ELSA`` layer, whose attention
generator (pre_proj, grouped k×k conv, 1x1 conv) is common to both.

Each (scope, shape, impl, pass) runs in its own subprocess so that ``ru_maxrss`` is per
variant. For every variant it prints the wall time (median of ``--reps`` runs after
``--warmup`` untimed ones), XLA's
compiled memory analysis (temporaries and the peak estimate ``arguments + outputs + temps -
aliased``), the growth of the process's peak RSS over the run, and on accelerators the device's
``peak_bytes_in_use``. Then it prints the ratios loop / patches.

Shapes: ELSA(dim 192) on ``[8, 64, 64, 192]`` (ELAM at 1/4 resolution of a 256² crop, batch 8)
and ELSA(dim 320) on ``[8, 16, 16, 320]``; 8 heads, kernel 7. ``fwd+bwd`` is the gradient of
``Σ y·c`` for a fixed random ``c`` w.r.t. every input (module: the parameters and x).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

CONFIGS = {
    "dim192": {"dim": 192, "shape": (8, 64, 64, 192)},
    "dim320": {"dim": 320, "shape": (8, 16, 16, 320)},
}
IMPLS = ("loop", "patches")
SCOPES = ("aggregate", "module")
PASSES = ("fwd", "fwd+bwd")


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def run_one(scope: str, config: str, impl: str, pass_: str, reps: int, warmup: int) -> dict:
    """Measure one variant in this process; returns a JSON-able dict."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    from mracnn_jax.layers.elsa import ELSA
    from mracnn_jax.layers.elsa_aggregation import elsa_aggregate

    cfg = CONFIGS[config]
    heads, k = 8, 7
    rng = np.random.default_rng(0)

    def normal(shape):
        return jnp.asarray(rng.standard_normal(shape), jnp.float32)

    ct = normal(cfg["shape"])
    if scope == "module":
        module = ELSA(cfg["dim"], num_heads=heads, kernel_size=k, impl=impl)
        x = normal(cfg["shape"])
        args = (jax.jit(module.init)(jax.random.PRNGKey(0), x), x)

        def f(p, z):
            return module.apply(p, z)
    else:  # the aggregation alone: v, softmaxed attention, G_mul, G_add
        b, hh, ww, c = cfg["shape"]
        attn = jax.nn.softmax(normal((b, hh, ww, heads, k * k)), axis=-1)
        args = (normal(cfg["shape"]), attn, normal((c, k * k)), 0.02 * normal((c, k * k)))

        def f(*a):
            return elsa_aggregate(*a, impl=impl)

    if pass_ == "fwd":
        fn = f
    else:

        def fn(*a):
            return jax.grad(lambda *q: jnp.sum(f(*q) * ct), argnums=tuple(range(len(a))))(*a)

    rss0 = _rss_mib()
    compiled = jax.jit(fn).lower(*args).compile()
    stats = compiled.memory_analysis()
    for _ in range(warmup):
        jax.block_until_ready(compiled(*args))
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - t0)
    out = {
        "scope": scope,
        "config": config,
        "impl": impl,
        "pass": pass_,
        "device": jax.devices()[0].device_kind,
        "ms": 1e3 * float(np.median(times)),
        "rss_growth_mib": _rss_mib() - rss0,
    }
    if stats is not None:
        mib = 1.0 / 2**20
        out["temp_mib"] = stats.temp_size_in_bytes * mib
        out["peak_est_mib"] = mib * (
            stats.argument_size_in_bytes
            + stats.output_size_in_bytes
            + stats.temp_size_in_bytes
            - stats.alias_size_in_bytes
        )
    try:
        device_stats = jax.devices()[0].memory_stats() or {}
    except (AttributeError, NotImplementedError, RuntimeError):  # CPU may lack memory_stats
        device_stats = {}
    if "peak_bytes_in_use" in device_stats:
        out["device_peak_mib"] = device_stats["peak_bytes_in_use"] / 2**20
    return out


def _fmt(value: float | None, spec: str = "9.1f") -> str:
    return f"{value:{spec}}" if value is not None else " " * int(spec.split(".")[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=list(CONFIGS), choices=list(CONFIGS))
    parser.add_argument("--scopes", nargs="+", default=list(SCOPES), choices=list(SCOPES))
    parser.add_argument("--reps", type=int, default=3, help="timed runs (the median is shown)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs after compiling")
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument("--single", nargs=4, metavar=("SCOPE", "CONFIG", "IMPL", "PASS"))
    args = parser.parse_args()

    if args.single:
        print(json.dumps(run_one(*args.single, reps=args.reps, warmup=args.warmup)))
        return

    results = []
    print(
        f"{'scope':9s} {'config':7s} {'shape':14s} {'impl':8s} {'pass':8s} {'time ms':>9s} "
        f"{'temp MiB':>9s} {'peak MiB':>9s} {'dRSS MiB':>9s} {'dev MiB':>9s}",
        flush=True,
    )
    for scope in args.scopes:
        for config in args.configs:
            for pass_ in PASSES:
                for impl in IMPLS:
                    cmd = [sys.executable, os.path.abspath(__file__)]
                    cmd += ["--reps", str(args.reps), "--warmup", str(args.warmup)]
                    cmd += ["--single", scope, config, impl, pass_]
                    proc = subprocess.run(cmd, capture_output=True, text=True, check=False)
                    if proc.returncode != 0:
                        print(f"{scope} {config} {impl} {pass_} failed:\n{proc.stderr[-2000:]}")
                        continue
                    r = json.loads(proc.stdout.strip().splitlines()[-1])
                    results.append(r)
                    shape = "x".join(map(str, CONFIGS[config]["shape"]))
                    print(
                        f"{scope:9s} {config:7s} {shape:14s} {impl:8s} {pass_:8s} {r['ms']:9.1f} "
                        f"{_fmt(r.get('temp_mib'))} {_fmt(r.get('peak_est_mib'))} "
                        f"{r['rss_growth_mib']:9.1f} {_fmt(r.get('device_peak_mib'))}",
                        flush=True,
                    )
    if results:
        print(f"\ndevice: {results[0]['device']}")
    print("\nratios loop / patches (below 1: the loop is better):")
    by_key = {(r["scope"], r["config"], r["impl"], r["pass"]): r for r in results}
    for scope in args.scopes:
        for config in args.configs:
            for pass_ in PASSES:
                lo = by_key.get((scope, config, "loop", pass_))
                pa = by_key.get((scope, config, "patches", pass_))
                if lo is None or pa is None:
                    continue
                parts = [f"time {lo['ms'] / pa['ms']:.3f}"]
                for key, label in (
                    ("temp_mib", "temp"),
                    ("peak_est_mib", "peak"),
                    ("rss_growth_mib", "dRSS"),
                    ("device_peak_mib", "device peak"),
                ):
                    if lo.get(key) and pa.get(key):
                        parts.append(f"{label} {lo[key] / pa[key]:.3f}")
                print(f"  {scope:9s} {config} {pass_:8s} " + ", ".join(parts))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()

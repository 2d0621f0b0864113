#!/usr/bin/env python
"""CPU timing of the JAX models against the PyTorch WACNN, measured in the same run.

For each requested case (config x transposed-conv form x phase) a fresh subprocess measures:
  * forward: one inference pass (rounding) at 1x512x768, median of ``--repeats`` after warm-up;
  * train:   one training step at batch 4 of 256x256: loss lambda*255^2*MSE + bpp, gradient,
             clipping at norm 1, Adam update (the step train.py runs);
with compile time reported apart, achieved FLOP/s (XLA's cost analysis of the compiled function
divided by the median time), and the subprocess's peak RSS. The machine's matmul FLOP/s is
measured in the same run (float32 2048x2048 matmul in jnp), and the PyTorch reference
(benchmarks/bench_torch_wacnn.py, 2 threads, torch from the test extra) runs in the same session, so every
ratio compares numbers from one run on one machine.

    .venv/bin/python benchmarks/bench_model.py --configs mracnn wacnn --impls subpixel dilated
    .venv/bin/python benchmarks/bench_model.py --configs wacnn mracnn --impls subpixel \
        --phases train --interleave 5      # ours and PyTorch alternating in one process

Prints a Markdown table and, as its last line, a JSON object with every number.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import pathlib
import platform
import subprocess
import sys
import time

HERE = pathlib.Path(__file__).resolve().parent  # benchmarks/


def _compiled_case(config: str, impl: str, phase: str):
    """Our jitted forward or training step for one case: (compiled, args, compile_s, flops)."""
    import jax
    import jax.numpy as jnp
    import optax

    from mracnn_jax.config_files import config_path, load_config
    from mracnn_jax.models import build_model, init_params

    cfg = load_config(config_path(config)).model
    cfg.deconv_impl = impl
    model = build_model(cfg)
    params = init_params(model, jax.random.PRNGKey(0))
    if phase == "forward":
        x = jax.random.uniform(jax.random.PRNGKey(1), (1, 512, 768, 3))
        fn = jax.jit(lambda p, x: model.apply({"params": p}, x, train=False)["x_hat"])
        args = (params, x)
    else:
        x = jax.random.uniform(jax.random.PRNGKey(1), (4, 256, 256, 3))
        tx = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-4))

        def step(p, opt_state, x, key):
            def loss_fn(p):
                out = model.apply({"params": p}, x, train=True, rngs={"noise": key})
                return 0.013 * 255**2 * jnp.mean((out["x_hat"] - x) ** 2) + out["bpp"]

            loss, grads = jax.value_and_grad(loss_fn)(p)
            updates, opt_state = tx.update(grads, opt_state, p)
            return optax.apply_updates(p, updates), opt_state, loss

        fn = jax.jit(step)
        args = (params, tx.init(params), x, jax.random.PRNGKey(2))
    t0 = time.perf_counter()
    compiled = fn.lower(*args).compile()
    compile_s = time.perf_counter() - t0
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    return compiled, args, compile_s, cost["flops"]


def _child(config: str, impl: str, phase: str, repeats: int) -> dict:
    import resource
    import statistics

    import jax

    compiled, args, compile_s, flops = _compiled_case(config, impl, phase)
    jax.block_until_ready(compiled(*args))  # warm-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(*args))
        times.append(time.perf_counter() - t0)
    median = statistics.median(times)
    return {
        "config": config,
        "impl": impl,
        "phase": phase,
        "compile_s": compile_s,
        "seconds": median,
        "all_seconds": times,
        "gflops": flops / 1e9,
        "achieved_gflops_per_s": flops / 1e9 / median,
        "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20,
    }


def _matmul_gflops() -> float:
    import jax

    a = jax.random.normal(jax.random.PRNGKey(0), (2048, 2048))
    f = jax.jit(lambda a: a @ a)
    jax.block_until_ready(f(a))
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter()
        jax.block_until_ready(f(a))
        best = min(best, time.perf_counter() - t0)
    return 2 * 2048**3 / best / 1e9


def _run_child(args: list[str]) -> dict:
    out = subprocess.run(
        [sys.executable, __file__, "--child", *args], capture_output=True, text=True, check=False
    )
    if out.returncode:
        raise RuntimeError(f"child {args} failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def _interleaved(configs, impl: str, phases, rounds: int) -> list[dict]:
    """Ours and the PyTorch WACNN in this one process, alternating step by step.

    Separate processes measure minutes apart, and this machine's speed drifts by 10-20 % over
    minutes; alternating single steps exposes both to the same drift, so the ratio of medians is
    the steadier number. Both frameworks use 2 threads and never run at the same time.
    """
    import statistics

    import bench_torch_wacnn as bench_torch  # a sibling: a script's folder is importable
    import jax
    import torch

    ref = bench_torch.load_reference()
    torch.set_num_threads(2)
    torch.manual_seed(0)
    net = ref.WACNN(N=192, M=320)
    torch_steps = {
        "train": bench_torch.make_train_step(net, ref, torch.rand(4, 3, 256, 256), 0.013),
    }

    forward_input = torch.rand(1, 3, 512, 768)

    def torch_forward(x=forward_input):
        net.eval()
        with torch.no_grad():
            net(x)

    torch_steps["forward"] = torch_forward
    rows = []
    for phase in phases:
        for config in configs:
            compiled, args, compile_s, flops = _compiled_case(config, impl, phase)
            jax.block_until_ready(compiled(*args))
            torch_steps[phase]()  # warm-up right before the rounds
            ours, theirs = [], []
            for _ in range(rounds):
                t0 = time.perf_counter()
                jax.block_until_ready(compiled(*args))
                ours.append(time.perf_counter() - t0)
                t0 = time.perf_counter()
                torch_steps[phase]()
                theirs.append(time.perf_counter() - t0)
            row = {
                "config": config,
                "impl": impl,
                "phase": phase,
                "compile_s": compile_s,
                "seconds": statistics.median(ours),
                "all_seconds": ours,
                "torch_seconds": statistics.median(theirs),
                "torch_all_seconds": theirs,
                "gflops": flops / 1e9,
            }
            row["ratio"] = row["seconds"] / row["torch_seconds"]
            print(json.dumps(row), file=sys.stderr, flush=True)
            rows.append(row)
    return rows


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--configs", nargs="+", default=["mracnn", "wacnn"])
    p.add_argument("--impls", nargs="+", default=["subpixel", "dilated"])
    p.add_argument("--phases", nargs="+", default=["forward", "train"])
    p.add_argument("--skip", nargs="*", default=[], help="cases to skip, as config:impl:phase")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--torch",
        default=sys.executable,
        help="python with torch for the reference (default: this one, where `make "
        "test` installs torch); 'none' to skip",
    )
    p.add_argument(
        "--interleave",
        type=int,
        metavar="ROUNDS",
        help="time ours and PyTorch's WACNN alternately in one process, ROUNDS each "
        "(needs torch here); prints ratios of medians",
    )
    p.add_argument(
        "--child", nargs=4, metavar=("CONFIG", "IMPL", "PHASE", "REPEATS"), help=argparse.SUPPRESS
    )
    a = p.parse_args()
    if a.child:
        print(json.dumps(_child(a.child[0], a.child[1], a.child[2], int(a.child[3]))))
        return 0

    report = {
        "machine": platform.processor() or platform.machine(),
        "cores": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d %H:%M"),
        "load_start": os.getloadavg()[0],
    }
    if a.interleave:
        if importlib.util.find_spec("torch") is None:
            p.error("--interleave needs torch in this interpreter (make test installs it in .venv)")
        rows = _interleaved(a.configs, a.impls[0], a.phases, a.interleave)
        report.update(cases=rows, load_end=os.getloadavg()[0], mode="interleaved")
        print("| config | phase | ours s | PyTorch WACNN s (same process, alternating) | ratio |")
        print("|---|---|---|---|---|")
        for r in rows:
            print(
                f"| {r['config']} | {r['phase']} | {r['seconds']:.2f} | {r['torch_seconds']:.2f} "
                f"| {r['ratio']:.2f}x |"
            )
        print(json.dumps(report))
        return 0
    report["matmul_gflops_per_s"] = _matmul_gflops()
    print(f"matmul: {report['matmul_gflops_per_s']:.1f} GFLOP/s", file=sys.stderr)
    torch_ref = None
    if a.torch != "none" and pathlib.Path(a.torch).exists():
        out = subprocess.run(
            [
                a.torch,
                str(HERE / "bench_torch_wacnn.py"),
                "--threads",
                "2",
                "--repeats",
                str(a.repeats),
                "--no-macs",
            ],
            capture_output=True,
            text=True,
            check=False,
        )
        if out.returncode == 0:
            torch_ref = json.loads(out.stdout.strip().splitlines()[-1])
    report["torch"] = torch_ref
    rows = []
    for config in a.configs:
        for impl in a.impls:
            for phase in a.phases:
                if f"{config}:{impl}:{phase}" in a.skip:
                    continue
                r = _run_child([config, impl, phase, str(a.repeats)])
                print(json.dumps(r), file=sys.stderr)
                rows.append(r)
    report["cases"] = rows
    report["load_end"] = os.getloadavg()[0]

    def torch_seconds(phase):
        if not torch_ref:
            return None
        key = "eval" if phase == "forward" else "train"
        entry = torch_ref.get(key) or {}
        return entry.get("median_s") or entry.get("seconds")

    print(
        "| config | transposed conv | phase | compile s | seconds | vs PyTorch WACNN | GFLOP | GFLOP/s | % of matmul | peak RSS GiB |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        ts = torch_seconds(r["phase"])
        ratio = f"{r['seconds'] / ts:.2f}x" if ts else "n/a"
        print(
            f"| {r['config']} | {r['impl']} | {r['phase']} | {r['compile_s']:.0f} | {r['seconds']:.2f} | {ratio} | "
            f"{r['gflops']:.0f} | {r['achieved_gflops_per_s']:.1f} | "
            f"{100 * r['achieved_gflops_per_s'] / report['matmul_gflops_per_s']:.0f} % | {r['peak_rss_gib']:.2f} |"
        )
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())

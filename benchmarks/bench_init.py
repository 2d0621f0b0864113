#!/usr/bin/env python
"""Parameter initialisation on the CPU: ``models.init_params`` against Flax's eager ``init``.

``init_params`` traces the training forward pass on an abstract image and computes only what the
parameters depend on (the keys Flax folds in for each module path, the host-sampling
initialisers) as concrete arrays. The reference is what it replaces: ``model.init`` run eagerly
with the same keys, which compiles the forward pass op by op. Each case runs in a fresh process
(nothing compiled beforehand, no persistent cache), the reference first and then ours in a second
fresh process, and the parameters must be equal bit for bit.

    .venv/bin/python benchmarks/bench_init.py --configs small mracnn wacnn

Prints one Markdown row per config: seconds for each path, their ratio, and whether every
parameter is equal.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import time


def _worker(config: str, path: str) -> dict:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from mracnn_jax.config_files import load_config
    from mracnn_jax.models import build_model, init_keys, init_params
    from mracnn_jax.models.compressor import DOWNSAMPLING

    model = build_model(load_config(config).model)
    key = jax.random.PRNGKey(0)
    t0 = time.perf_counter()
    if path == "init_params":
        params = init_params(model, key)
    else:  # the eager Flax init with init_params's keys
        p_rng, n_rng = init_keys(key)
        x = jnp.zeros((1, DOWNSAMPLING, DOWNSAMPLING, model.cfg.channels), jnp.float32)
        params = model.init({"params": p_rng, "noise": n_rng}, x, train=True)["params"]
    jax.block_until_ready(params)
    seconds = time.perf_counter() - t0
    digest = hashlib.sha256()
    for leaf_path, leaf in jax.tree_util.tree_leaves_with_path(params):
        digest.update(jax.tree_util.keystr(leaf_path).encode())
        digest.update(np.ascontiguousarray(np.asarray(leaf)).tobytes())
    count = sum(leaf.size for leaf in jax.tree.leaves(params))
    return {"seconds": seconds, "digest": digest.hexdigest(), "parameters": int(count)}


def _run(config: str, path: str) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--worker", path, "--configs", config],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        raise SystemExit(f"{config} {path} failed:\n{proc.stderr[-2000:]}")
    return json.loads(lines[-1][len("RESULT ") :])


def main(argv=None) -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--configs", nargs="+", default=["small", "mracnn", "wacnn"])
    p.add_argument("--worker", choices=["init_params", "eager"], help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        print("RESULT " + json.dumps(_worker(a.configs[0], a.worker)), flush=True)
        return 0
    import jax

    print(f"jax {jax.__version__}, {jax.devices()[0].platform}")
    print("| config | parameters | eager Flax init s | init_params s | ratio | equal |")
    print("|---|---:|---:|---:|---:|---|")
    equal_all = True
    for config in a.configs:
        eager, ours = _run(config, "eager"), _run(config, "init_params")
        equal = eager["digest"] == ours["digest"]
        equal_all &= equal
        print(f"| {config} | {ours['parameters']:,} | {eager['seconds']:.1f} | "
              f"{ours['seconds']:.1f} | {eager['seconds'] / ours['seconds']:.1f}x | {equal} |")  # fmt: skip
    return 0 if equal_all else 1


if __name__ == "__main__":
    sys.exit(main())

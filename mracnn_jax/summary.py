"""Model summary: parameters per top-level module, GFLOPs at 768x512, and the total.

    python -m mracnn_jax.summary --config mracnn

prints one line per module (the entropy model's per-slice modules grouped by role: clab_mean,
clab_scale, cc_mean, cc_scale, lrp), then the FLOPs of one inference forward pass on a 768x512
image from XLA's cost analysis (a multiply-accumulate counts as 2 FLOPs), and as its last line
``total_params <integer>``.
"""

from __future__ import annotations

import argparse
import re
import sys

import jax
import jax.numpy as jnp
import numpy as np
from flax.traverse_util import flatten_dict

from mracnn_jax.config_files import load_config
from mracnn_jax.models import build_model


def _group(path: tuple[str, ...]) -> str:
    if path[0] == "entropy":
        return re.sub(r"_\d+$", "", path[1])
    return path[0]


def parameter_shapes(model_config):
    """Shapes of every parameter, without allocating them."""
    model = build_model(model_config)
    x = jnp.zeros((1, 64, 64, model.cfg.channels), jnp.float32)
    keys = {"params": jax.random.PRNGKey(0), "noise": jax.random.PRNGKey(1)}
    return jax.eval_shape(lambda: model.init(keys, x, train=True))["params"]


_ORDER = (
    "g_a",
    "g_s",
    "h_a",
    "h_mean_s",
    "h_scale_s",
    "clab_mean",
    "clab_scale",
    "cc_mean",
    "cc_scale",
    "lrp",
    "entropy_bottleneck",
)


def parameter_counts(model_config) -> dict[str, int]:
    """Parameters per top-level module (entropy slices grouped by role), in model order."""
    counts: dict[str, int] = {}
    for path, leaf in flatten_dict(parameter_shapes(model_config)).items():
        name = _group(path)
        counts[name] = counts.get(name, 0) + int(np.prod(leaf.shape))
    rank = {name: i for i, name in enumerate(_ORDER)}
    return dict(sorted(counts.items(), key=lambda item: rank.get(item[0], len(rank))))


def forward_flops(model_config, height: int = 512, width: int = 768) -> float:
    """FLOPs of one inference forward pass (XLA cost analysis of the compiled function)."""
    model = build_model(model_config)
    shapes = parameter_shapes(model_config)
    x = jax.ShapeDtypeStruct((1, height, width, model.cfg.channels), jnp.float32)
    forward = jax.jit(lambda p, x: model.apply({"params": p}, x, train=False)["x_hat"])
    cost = forward.lower(shapes, x).cost_analysis()
    if isinstance(cost, (list, tuple)):  # older JAX returns one dict per computation
        cost = cost[0]
    return float(cost["flops"])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--config", required=True, help="a preset (mracnn, small, ...) or a config file"
    )
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--width", type=int, default=768)
    parser.add_argument("--no-flops", action="store_true", help="skip the (slow) cost analysis")
    args = parser.parse_args(argv)
    config = load_config(args.config)
    counts = parameter_counts(config.model)
    width = max(len(k) for k in counts)
    print(f"model {config.model.name}")
    for name, n in counts.items():
        print(f"  {name:<{width}}  {n:>12,}")
    total = sum(counts.values())
    if not args.no_flops:
        flops = forward_flops(config.model, args.height, args.width)
        print(
            f"GFLOPs at {args.width}x{args.height}: {flops / 1e9:.2f} (= {flops / 2e9:.2f} GMACs)"
        )
    print(f"total_params {total}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

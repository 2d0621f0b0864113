"""The two directions: a PyTorch state dict -> (model config, Flax params, report), and back.

``from_torch_state_dict`` checks every key against the model the config builds (missing,
unexpected, wrongly shaped, or a buffer holding a setting we do not implement: a one-line
``ConversionError`` naming the first such key in sorted order), converts each leaf
(``layouts``) and reports what it ignored. ``to_torch_state_dict`` writes the parameters under
PyTorch names and, by default, the buffers a PyTorch model keeps (``buffers``). For WACNN the
widths can be read off the state dict's shapes (``infer_wacnn_config``).
"""

from __future__ import annotations

import functools
import json
import math
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mracnn_jax.convert.buffers import (
    CODING_BUFFERS,
    TAIL_MASS,
    check_buffer,
    density_quantiles,
    empty_tables,
    expected_buffers,
)
from mracnn_jax.convert.checkpoints import ConversionError, ConversionReport, normalize_state_dict
from mracnn_jax.convert.layouts import (
    flat_paths,
    frozen_config,
    leaf_from_torch,
    leaf_to_torch,
    torch_key_map,
    torch_shape,
)
from mracnn_jax.entropy.gaussian import scale_table as _scale_table
from mracnn_jax.model_file import unflatten_params
from mracnn_jax.models import presets
from mracnn_jax.models.compressor import DOWNSAMPLING
from mracnn_jax.models.registry import build_model

ARCHS = ("wacnn", "mracnn")


# -------------------------------------------------------------------------------------------------
# Configs.


def _preset(arch: str):
    if arch not in ARCHS:
        raise ConversionError(f"unknown arch {arch!r}; expected one of {ARCHS}")
    return getattr(presets, arch)()


def _shape(sd: Mapping[str, np.ndarray], key: str) -> tuple[int, ...]:
    if key not in sd:
        raise ConversionError(f"missing key {key!r}: not a WACNN (STF) state dict")
    return tuple(sd[key].shape)


def infer_wacnn_config(state_dict: Mapping[str, np.ndarray]):
    """The ``wacnn`` preset with the widths, slices and attention sizes read off the shapes.

    The public checkpoints give the preset itself; smaller or wider variants of the same layout
    are read correctly (image channels, N, M, Z, hyperprior widths, slice count and support, cc
    widths and kernel, heads, windows; shifts are window // 2 as in STF).
    """
    sd = state_dict
    cfg = _preset("wacnn")
    cfg.N, cfg.channels = _shape(sd, "g_a.0.weight")[:2]
    cfg.M = _shape(sd, "g_a.7.weight")[0]
    cfg.Z = _shape(sd, "h_a.8.weight")[0]
    cfg.hyper_analysis_widths = tuple(_shape(sd, f"h_a.{2 * j}.weight")[0] for j in range(4))
    s0, s2 = _shape(sd, "h_mean_s.0.weight")[0], _shape(sd, "h_mean_s.2.0.weight")[0] // 4
    s4, s6 = _shape(sd, "h_mean_s.4.weight")[0], _shape(sd, "h_mean_s.6.0.weight")[0] // 4
    cfg.hyper_synthesis_widths = (s0, s2, s4, s6)
    slices = 0
    while f"cc_mean_transforms.{slices}.0.weight" in sd:
        slices += 1
    if slices == 0:
        raise ConversionError("missing key 'cc_mean_transforms.0.0.weight': not a WACNN state dict")
    width = cfg.M // slices
    convs = 0
    while f"cc_mean_transforms.0.{2 * convs}.weight" in sd:
        convs += 1
    cfg.entropy.num_slices = slices
    cfg.entropy.cc_widths = tuple(
        _shape(sd, f"cc_mean_transforms.0.{2 * j}.weight")[0] for j in range(convs - 1)
    )
    cfg.entropy.cc_kernel = _shape(sd, "cc_mean_transforms.0.0.weight")[-1]
    supports = [
        (_shape(sd, f"cc_mean_transforms.{i}.0.weight")[1] - cfg.M) // width for i in range(slices)
    ]
    cfg.entropy.max_support = max(supports) if supports[-1] < slices - 1 else -1
    table_n = _shape(sd, "g_a.4.conv_b.0.attn.relative_position_bias_table")
    table_m = _shape(sd, "g_a.8.conv_b.0.attn.relative_position_bias_table")
    window_n, window_m = (math.isqrt(table_n[0]) + 1) // 2, (math.isqrt(table_m[0]) + 1) // 2
    cfg.wam.heads = table_n[1]
    cfg.wam.update(
        {
            "window_n": window_n,
            "shift_n": window_n // 2,
            "window_m": window_m,
            "shift_m": window_m // 2,
        }
    )
    return cfg


def _param_shapes(model_config) -> dict[str, tuple[int, ...]]:
    """``{path: shape}`` of the Flax parameters of ``model_config`` (no arrays are created).

    Tracing the model's ``init`` takes seconds, so the result is cached per config.
    """
    cfg = frozen_config(model_config).to_dict()
    cfg.pop("name", None)  # a label; it does not shape the model
    return dict(_param_shapes_cached(json.dumps(cfg, sort_keys=True, default=list)))


@functools.lru_cache(maxsize=16)
def _param_shapes_cached(config_json: str) -> tuple[tuple[str, tuple[int, ...]], ...]:
    config = frozen_config(json.loads(config_json)).to_dict() | {"name": "shapes"}
    model = build_model(config)
    side = DOWNSAMPLING  # the smallest canvas, enlarged until WAM's windows tile it at 1/4, 1/16
    if config.get("attention") == "wam":
        side *= math.lcm(config["wam"]["window_n"], config["wam"]["window_m"])
    x = jnp.zeros((1, side, side, config.get("channels", 3)), jnp.float32)
    rngs = {"params": jax.random.PRNGKey(0), "noise": jax.random.PRNGKey(1)}
    tree = jax.eval_shape(lambda: model.init(rngs, x, train=True)["params"])
    return tuple(("/".join(p), tuple(v.shape)) for p, v in flat_paths(tree))


# -------------------------------------------------------------------------------------------------
# The two directions.


def from_torch_state_dict(
    state_dict: Mapping[str, Any],
    arch: str = "wacnn",
    model_config=None,
) -> tuple[Any, dict[str, Any], ConversionReport]:
    """PyTorch state dict -> ``(model_config, params, report)``.

    Args:
      state_dict: ``{key: tensor or np.ndarray}`` (or a dict holding it under ``'state_dict'``),
        with the key names of the module docstring.
      arch: ``'wacnn'`` (STF names; without ``model_config`` the widths are read off the shapes,
        ``infer_wacnn_config``) or ``'mracnn'`` (our names; default config: the ``mracnn`` preset).
      model_config: the ``config.model`` to build (any preset or variant); overrides ``arch``'s
        default.
    Returns:
      The model config (a ConfigDict), the Flax ``params`` tree (nested dicts of float32 NumPy
      arrays, ready for ``build_model(cfg).apply({'params': params}, ...)``), and a report.
    Raises:
      ConversionError: a missing, unexpected or wrongly shaped key, or a buffer holding settings
        we do not implement (the message names the first such key).
    """
    sd = normalize_state_dict(state_dict)
    if model_config is None:
        model_config = infer_wacnn_config(sd) if arch == "wacnn" else _preset(arch)
    cfg = ml_collections.ConfigDict(frozen_config(model_config).to_dict())
    shapes = _param_shapes(cfg)
    # zero-strided placeholders: only their shapes are read
    key_map = torch_key_map(
        unflatten_params({p: np.broadcast_to(np.float32(0), s) for p, s in shapes.items()}), cfg
    )
    buffers = expected_buffers(key_map, shapes)
    wanted = {key: path for path, (key, _, _) in key_map.items()}

    for key in sorted(set(wanted) | set(sd)):
        if key in wanted:
            if key not in sd:
                raise ConversionError(
                    f"missing key {key!r} (for our parameter {wanted[key]!r}, arch {cfg.name!r})"
                )
            _, kind, _ = key_map[wanted[key]]
            need = torch_shape(kind, shapes[wanted[key]])
            if tuple(sd[key].shape) != need:
                raise ConversionError(
                    f"key {key!r} has shape {tuple(sd[key].shape)}, but {cfg.name!r} with this "
                    f"config needs {need}"
                )
        elif key not in buffers:
            raise ConversionError(
                f"unexpected key {key!r}: not part of {cfg.name!r} with this config"
            )

    report = ConversionReport()
    for key, expected in buffers.items():
        if key not in sd:
            continue
        if expected is not None:
            check_buffer(key, sd[key], expected)
        elif key.endswith((*CODING_BUFFERS, ".target")):
            report.ignored.append(key)

    flat: dict[str, np.ndarray] = {}
    for path, (key, kind, arg) in key_map.items():
        flat[path] = np.ascontiguousarray(
            leaf_from_torch(kind, np.asarray(sd[key]), arg), np.float32
        )
    params = unflatten_params(flat)

    if "entropy_bottleneck.quantiles" in sd:
        q = np.asarray(sd["entropy_bottleneck.quantiles"], np.float64)
        if q.shape != (cfg.Z, 1, 3):
            raise ConversionError(
                f"buffer 'entropy_bottleneck.quantiles' has shape {q.shape}, "
                f"expected {(cfg.Z, 1, 3)}"
            )
        medians = density_quantiles(params["entropy_bottleneck"])[:, 0, 1]
        report.max_median_deviation = float(np.max(np.abs(q[:, 0, 1] - medians)))
    table = sd.get("gaussian_conditional.scale_table")
    if table is not None and table.size:
        ours = _scale_table()
        if table.shape != ours.shape or not np.allclose(table, ours, rtol=1e-5):
            report.notes.append(
                f"gaussian_conditional.scale_table ({table.size} scales from "
                f"{float(table.min()):.3g} to {float(table.max()):.3g}) differs from our "
                "coder's (64 scales, 0.11 to 256)"
            )
    return cfg, params, report


def to_torch_state_dict(
    params: Mapping[str, Any], model_config, *, buffers: bool = True
) -> OrderedDict[str, np.ndarray]:
    """Flax ``params`` -> PyTorch-style state dict ``{key: np.ndarray}`` (sorted keys).

    Key names and layouts as in the module docstring (STF's for WACNN). With ``buffers`` the
    state dict also holds what a PyTorch model stores beside its parameters (GDN pedestals and
    bounds, relative-position indices, the entropy bottleneck's ``quantiles`` computed from the
    density and its ``target``, the Gaussian conditional's bounds and scale table, and empty
    coding tables), so a PyTorch WACNN loads it with ``strict=True``; call its ``update()`` before
    coding. Needs no torch (``save_torch_state_dict`` writes the file).
    """
    flat = {"/".join(p): np.asarray(v) for p, v in flat_paths(params)}
    key_map = torch_key_map(params, model_config)
    out: dict[str, np.ndarray] = {}
    for path, (key, kind, arg) in key_map.items():
        out[key] = np.ascontiguousarray(leaf_to_torch(kind, flat[path], arg))
    if buffers:
        shapes = {p: v.shape for p, v in flat.items()}
        for key, value in expected_buffers(key_map, shapes).items():
            if value is not None:
                out[key] = value
        eb = {p.split("/", 1)[1]: v for p, v in flat.items() if p.startswith("entropy_bottleneck/")}
        t = math.log(2.0 / TAIL_MASS - 1.0)
        out["entropy_bottleneck.quantiles"] = density_quantiles(eb)
        out["entropy_bottleneck.target"] = np.asarray([-t, 0.0, t], np.float32)
        out["gaussian_conditional.scale_table"] = _scale_table().astype(np.float32)
        out.update(empty_tables("entropy_bottleneck"))
        out.update(empty_tables("gaussian_conditional"))
    return OrderedDict(sorted(out.items()))

"""A grayscale model (``channels = 1``) initialised from a colour one, exactly on gray images.

A gray image g fed to a colour model is x = (g, g, g). A convolution that reads the image computes
``sum_c x_c * K[..., c, :] = g * sum_c K[..., c, :]``, so the one-channel kernel

    K1[..., 0, :] = sum_c K[..., c, :]                       (every layer in IMAGE_INPUT_LAYERS)

gives exactly the colour model's output on (g, g, g) (MRACNN's first MRACD has two such
convolutions, its main and its residual path; both are summed). Everything after them is
unchanged, so y, z, their likelihoods and the rate are the colour model's on (g, g, g). The last
layer of g_s is linear in its output channels, so with weights ``w`` (summing to 1)

    K1[..., :, 0] = sum_c w_c K[..., :, c],    b1 = sum_c w_c b_c   (IMAGE_OUTPUT_LAYER)

makes the gray reconstruction ``sum_c w_c x^_c`` of the colour model's (before any clipping):
``'mean'`` (w = 1/3 each), or ``'luma'`` (ITU-R 601, w = 0.299, 0.587, 0.114), which is the
luma a colour decoder gives an ``L`` image back as.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import ml_collections
import numpy as np

from mracnn_jax.models.presets import with_defaults
from mracnn_jax.models.transforms import IMAGE_INPUT_LAYERS, IMAGE_OUTPUT_LAYER

#: Weights of the colour model's output channels in the gray reconstruction.
OUTPUT_WEIGHTS = {"mean": (1 / 3, 1 / 3, 1 / 3), "luma": (0.299, 0.587, 0.114)}
SUFFIX = "-gray"


def _copy_tree(tree: Mapping[str, Any]) -> dict[str, Any]:
    return {
        k: _copy_tree(v) if isinstance(v, Mapping) else np.array(v, copy=True)
        for k, v in tree.items()
    }


def _layer(params: dict[str, Any], path: tuple[str, ...]) -> dict[str, Any]:
    node = params
    for key in path:
        if key not in node:
            raise ValueError(f"the parameters have no {'/'.join(path)}: not a model of this config")
        node = node[key]
    return node


def grayscale_from_colour(
    config, params: Mapping[str, Any], output: str = "mean"
) -> tuple[ml_collections.ConfigDict, dict[str, Any]]:
    """The one-channel config and parameters of the module docstring.

    Args:
      config: a colour model config (``channels`` 3, or absent: an older model file's).
      params: its parameters (nested mappings of arrays); not modified.
      output: ``'mean'`` or ``'luma'``, the weights of the output channels.

    Returns:
      ``(config, params)``: the config with ``channels = 1`` and ``name + '-gray'``, and float32
      NumPy parameters.
    """
    if output not in OUTPUT_WEIGHTS:
        raise ValueError(f"output must be one of {tuple(OUTPUT_WEIGHTS)}, got {output!r}")
    cfg = with_defaults(config)
    if cfg.channels != 3:
        raise ValueError(f"model {cfg.name!r} has {cfg.channels} channels; expected a colour (3)")
    out = _copy_tree(params)
    for path in IMAGE_INPUT_LAYERS[cfg.transform]:
        layer = _layer(out, path)
        kernel = np.asarray(layer["kernel"], np.float64)
        layer["kernel"] = np.sum(kernel, axis=2, keepdims=True).astype(np.float32)
    layer = _layer(out, IMAGE_OUTPUT_LAYER[cfg.transform])
    w = np.asarray(OUTPUT_WEIGHTS[output], np.float64)
    layer["kernel"] = (layer["kernel"].astype(np.float64) @ w)[..., None].astype(np.float32)
    layer["bias"] = np.asarray([layer["bias"].astype(np.float64) @ w], np.float32)
    cfg.channels = 1
    cfg.name = f"{cfg.name}{SUFFIX}"
    return cfg, out

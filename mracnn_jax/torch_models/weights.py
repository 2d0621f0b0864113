"""Our Flax parameters in the PyTorch twin: state dicts, model files, parameter counts.

The mapping itself (names, layouts, permutations) lives in one place, ``mracnn_jax.convert``:
``to_torch_state_dict(params, model_config)`` turns the Flax pytree into ``{key: np.ndarray}``
with the twin's keys, namely

* convolution kernels ``[kh, kw, I, O]`` -> ``[O, I, kh, kw]``; transposed-convolution kernels
  ``[k, k, I, O]`` -> ``[I, O, k, k]`` (same taps, no flip); dense ``[I, O]`` -> ``[O, I]``;
* the sub-pixel convolutions' output channels permuted from TensorFlow's depth-to-space order to
  ``PixelShuffle``'s;
* GDN's stored beta and gamma, ELSA's ghost head, the window-attention bias table and the
  factorized prior's matrices, biases and factors copied unchanged;
* the buffers PyTorch keeps beside them, among them the entropy bottleneck's ``quantiles``, set
  to the points where each channel's cumulative logit is ``-t, 0, t`` (its median in the middle).

This module only wraps that in tensors and loads it strictly, so a missing or surplus key is an
error here rather than a silently random weight.
"""

from __future__ import annotations

import os
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from mracnn_jax import model_file
from mracnn_jax.convert import to_torch_state_dict
from mracnn_jax.torch_models.compressor import ImageCompressor, model_config_of


def state_dict_from_flax(params: Mapping[str, Any], model_config) -> OrderedDict[str, Tensor]:
    """Flax ``params`` (nested dicts of arrays) -> the twin's state dict (CPU float32 tensors,
    int tensors for index and coding-table buffers)."""
    cfg = model_config_of(model_config)
    arrays = to_torch_state_dict(params, cfg)
    return OrderedDict((k, torch.from_numpy(np.array(v))) for k, v in arrays.items())


def load_flax_params(model: ImageCompressor, params: Mapping[str, Any]) -> ImageCompressor:
    """Loads our Flax ``params`` into ``model`` (built from the same config); returns ``model``.

    Raises RuntimeError (PyTorch's, naming the keys) when the parameters do not fit the config.
    """
    model.load_state_dict(state_dict_from_flax(params, model.config), strict=True)
    return model


def from_flax(model_config, params: Mapping[str, Any]) -> ImageCompressor:
    """A twin built from ``model_config`` holding ``params``, in ``eval()`` mode."""
    return load_flax_params(ImageCompressor(model_config), params).eval()


def load_model_file(path: str | os.PathLike) -> tuple[ImageCompressor, dict[str, Any]]:
    """``(model in eval() mode, metadata)`` from one of our model files (``*.mracnn``), e.g. a
    bundled one (``mracnn_jax.zoo.default().path``)."""
    config, params, metadata = model_file.load_model(path)
    return from_flax(config, params), metadata


def parameter_counts(model: nn.Module) -> dict[str, int]:
    """Parameters per top-level submodule, in definition order (``quantiles`` included)."""
    return {
        name: sum(p.numel() for p in child.parameters()) for name, child in model.named_children()
    }

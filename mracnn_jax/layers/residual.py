"""Residual units used inside the attention modules.

``ResidualUnit`` (WACNN's, used in WAM and ELAM), for ``[B, H, W, C]``:

    RU(x) = act( x + conv1x1(act(conv3x3(act(conv1x1(x, C -> C/2)), C/2 -> C/2)), C/2 -> C) )

with ``act`` = GELU (exact, erf form, as ``torch.nn.GELU``). CompressAI's ``AttentionBlock`` (used
by TCM's SWAtten and so by our CLAB) has the same unit with ReLU: pass ``activation="relu"``.

``gated_residual`` is the gate that WAM, ELAM and CLAB share:

    x + RU^3(x) * sigmoid(conv1x1(RU^3(attended)))

where ``attended`` is the attention branch's output (window attention, X + ELSA(X), ...).
"""

from __future__ import annotations

import flax.linen as nn
import jax

from mracnn_jax.layers.conv import Conv2d
from mracnn_jax.ops import gelu


def activation_fn(name: str):
    """``"gelu"`` (exact erf GELU, PyTorch's default) or ``"relu"``."""
    if name == "gelu":
        return gelu
    if name == "relu":
        return nn.relu
    raise ValueError(f"unknown activation {name!r}; use 'gelu' or 'relu'")


class ResidualUnit(nn.Module):
    """Bottleneck residual unit C -> C/2 -> C/2 -> C with an activation after the sum."""

    activation: str = "gelu"

    @nn.compact
    def __call__(self, x):
        act = activation_fn(self.activation)
        c = x.shape[-1]
        h = act(Conv2d(c // 2, 1, name="conv1")(x))
        h = act(Conv2d(c // 2, 3, name="conv2")(h))
        h = Conv2d(c, 1, name="conv3")(h)
        return act(x + h)


def gated_residual(x, attended, activation: str = "gelu"):
    """``x + RU^3(x) * sigmoid(conv1x1(RU^3(attended)))``; call inside a compact ``__call__``.

    Creates the submodules ``trunk_0..2``, ``mask_0..2`` and ``mask_out`` in the calling module.
    """
    c = x.shape[-1]
    t = x
    for i in range(3):
        t = ResidualUnit(activation, name=f"trunk_{i}")(t)
    m = attended
    for i in range(3):
        m = ResidualUnit(activation, name=f"mask_{i}")(m)
    m = Conv2d(c, 1, name="mask_out")(m)
    return x + t * jax.nn.sigmoid(m)

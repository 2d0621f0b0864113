"""Enhanced local attention module (ELAM), MRACNN's replacement for WACNN's WAM.

On ``[B, H, W, C]`` (architecture.md §4.3, ambiguities 6, 8, 9):

    T  = RU(RU(RU(X)))                          trunk, WACNN residual units (GELU)
    F  = X + ELSA(X)                            or ELSABlock(X) (LN + ELSA + LN + MLP) as a variant
    Mk = sigmoid(conv1x1(RU(RU(RU(F)))))
    out = X + T * Mk

ELSA is the local self-attention of Zhou et al. 2021 (``mracnn_jax.layers.elsa``); the paper
uses kernel 7 and 8 heads.
"""

from __future__ import annotations

import flax.linen as nn

from mracnn_jax.layers.elsa import ELSA, ELSABlock
from mracnn_jax.layers.residual import gated_residual


def local_attention(cfg, dim: int, name: str) -> nn.Module:
    """Builds the ELSA variant named by ``cfg.block`` ('bare': X + ELSA(X); 'block': ELSABlock)."""
    common = {
        "dim": dim,
        "num_heads": cfg.heads,
        "kernel_size": cfg.kernel,
        "group_width": cfg.group_width,
        "lam": cfg.lam,
        "gamma": cfg.gamma,
        "name": name,
    }
    if cfg.block == "bare":
        return ELSA(qk_scale=cfg.qk_scale, **common)
    if cfg.block == "block":
        qk_scale = 1.0 if cfg.qk_scale is None else cfg.qk_scale
        return ELSABlock(qk_scale=qk_scale, mlp_ratio=cfg.mlp_ratio, **common)
    raise ValueError(f"unknown ELSA block {cfg.block!r}; use 'bare' or 'block'")


def attend(cfg, x, name: str):
    """``x + ELSA(x)`` for the bare form; ELSABlock already carries its residuals."""
    layer = local_attention(cfg, x.shape[-1], name)
    return x + layer(x) if cfg.block == "bare" else layer(x)


class ELAM(nn.Module):
    """``X + RU^3(X) * sigmoid(conv1x1(RU^3(F)))`` with ``F`` the ELSA-refined input."""

    elsa: object  # ml_collections.ConfigDict with kernel, heads, group_width, lam, gamma, qk_scale, block, mlp_ratio

    @nn.compact
    def __call__(self, x):
        return gated_residual(x, attend(self.elsa, x, "elsa"))

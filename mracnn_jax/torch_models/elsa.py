"""Enhanced local self-attention (ELSA, Zhou et al. 2021) in PyTorch, NCHW.

The same computation as ``mracnn_jax.layers.elsa`` (whose docstring states it in full), with
the ``damo-cv/ELSA`` parameter layout. For x ``[B, C, H, W]`` (``C = d_v``), ``h`` heads of
``C / h`` contiguous channels, an odd kernel k and ``K = k^2`` offsets ``j = dy k + dx``:

    [q | k | v] = pre_proj(x)                         1x1, no bias; q, k: d_qk channels, v: C
    L = attn(q * k * scale)                           grouped kxk conv, GELU, 1x1 -> h K
    A[b, g, j] = softmax_j L[b, g K + j]              per pixel and head, over the K offsets
    out[b, c, m] = sum_j v[b, c, m + j] (M[c, j] A[b, g(c), j, m] + D[c, j])   (v zero outside)
    y = post_proj(out)                                dense over channels

with ``d_qk = ceil((C // 3) * 2 / group_width) * group_width``, ``scale = qk_scale`` or
``(C // h)^-1/2``, the ghost head ``M = G_mul^lam`` (1 when lam = 0) and ``D = gamma G_add``
(0 when gamma = 0). The aggregation loops over the K offsets, so no ``K``-fold unfolded copy of v
is built (PyTorch's autograd still keeps one product per offset when training).

Modules and state-dict keys (relative to the module):

* ``ELSA``: ``pre_proj.weight``, ``attn.0.{weight,bias}``, ``attn.2.{weight,bias}``,
  ``ghost_head`` (``[2, 1, C, k, k]``, ``[1, C, k, k]`` or absent), ``post_proj.{weight,bias}``.
* ``LocalAttention``: ``x + ELSA(x)`` (the "bare" form), the ELSA under ``attn``.
* ``ELSABlock``: ``x + ELSA(LN(x))``, then ``+ MLP(LN(.))``; ``norm1``, ``attn``, ``norm2``,
  ``mlp.fc1``, ``mlp.fc2`` (LayerNorm epsilon 1e-5 over channels, exact GELU).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mracnn_jax.layers.elsa import ghost_head_shape, qk_dim


class ELSA(nn.Module):
    """Enhanced local self-attention on ``[B, dim, H, W]`` (module doc)."""

    def __init__(
        self,
        dim: int,
        num_heads: int = 8,
        kernel_size: int = 7,
        group_width: int = 8,
        lam: float = 1.0,
        gamma: float = 1.0,
        qk_scale: float | None = None,
    ):
        super().__init__()
        if kernel_size < 1 or kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd and positive, got {kernel_size}")
        if dim % num_heads:
            raise ValueError(f"dim {dim} is not divisible by num_heads {num_heads}")
        self.dim, self.num_heads, self.kernel_size = dim, num_heads, kernel_size
        self.lam, self.gamma = float(lam), float(gamma)
        self.scale = qk_scale or (dim // num_heads) ** -0.5
        self.dim_qk = d_qk = qk_dim(dim, group_width)
        k = kernel_size
        self.pre_proj = nn.Conv2d(dim, 2 * d_qk + dim, 1, bias=False)
        self.attn = nn.Sequential(
            nn.Conv2d(d_qk, d_qk, k, padding=k // 2, groups=d_qk // group_width),
            nn.GELU(),
            nn.Conv2d(d_qk, num_heads * k * k, 1),
        )
        shape = ghost_head_shape(dim, k, self.lam, self.gamma)
        if shape is not None:
            ghost = torch.empty(shape)
            if len(shape) == 5:
                nn.init.normal_(ghost[0])
                nn.init.trunc_normal_(ghost[1], std=0.02, a=-2.0, b=2.0)
            elif self.lam == 0:
                nn.init.trunc_normal_(ghost, std=0.02, a=-2.0, b=2.0)
            else:
                nn.init.normal_(ghost)
            self.ghost_head = nn.Parameter(ghost)
        self.post_proj = nn.Linear(dim, dim)
        nn.init.trunc_normal_(self.post_proj.weight, std=0.02, a=-2.0, b=2.0)
        nn.init.zeros_(self.post_proj.bias)

    def ghost_terms(self) -> tuple[Tensor | None, Tensor | None]:
        """``(M, D)`` as ``[dim, k, k]`` tensors, None where absent (1 and 0)."""
        shape = ghost_head_shape(self.dim, self.kernel_size, self.lam, self.gamma)
        if shape is None:
            return None, None
        g = self.ghost_head
        if len(shape) == 5:
            g_mul, g_add = g[0, 0], g[1, 0]
        elif self.lam == 0:
            g_mul, g_add = None, g[0]
        else:
            g_mul, g_add = g[0], None
        if g_mul is not None and self.lam != 1:
            lam = int(self.lam) if self.lam.is_integer() else self.lam
            g_mul = g_mul**lam
        if g_add is not None and self.gamma != 1:
            g_add = g_add * self.gamma
        return g_mul, g_add

    def forward(self, x: Tensor) -> Tensor:
        b, c, hh, ww = x.shape
        if c != self.dim:
            raise ValueError(f"ELSA expects [B, {self.dim}, H, W], got {tuple(x.shape)}")
        d_qk, heads, k = self.dim_qk, self.num_heads, self.kernel_size
        q, kq, v = torch.split(self.pre_proj(x), [d_qk, d_qk, c], dim=1)
        logits = self.attn(q * kq * self.scale).reshape(b, heads, k * k, hh, ww)
        attn = torch.softmax(logits, dim=2)
        out = aggregate(v, attn, *self.ghost_terms())
        return self.post_proj(out.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def aggregate(v: Tensor, attn: Tensor, g_mul: Tensor | None, g_add: Tensor | None) -> Tensor:
    """``out[b, c, m] = sum_j v[b, c, m + j] (M[c, j] A[b, g(c), j, m] + D[c, j])``.

    Args:
      v: ``[B, C, H, W]``.
      attn: ``[B, h, K, H, W]``, softmaxed over K = k^2 (row-major offsets).
      g_mul, g_add: ``M`` and ``D`` as ``[C, k, k]``, or None (ones, zeros).
    Returns ``[B, C, H, W]``; v is zero outside the image.
    """
    b, c, hh, ww = v.shape
    heads, kk = attn.shape[1:3]
    k = math.isqrt(kk)
    p = k // 2
    vpad = F.pad(v, (p, p, p, p)).reshape(b, heads, c // heads, hh + 2 * p, ww + 2 * p)
    mul = None if g_mul is None else g_mul.reshape(1, heads, c // heads, k, k)
    add = None if g_add is None else g_add.reshape(1, heads, c // heads, k, k)
    out = torch.zeros(b, heads, c // heads, hh, ww, dtype=v.dtype, device=v.device)
    for dy in range(k):
        for dx in range(k):
            w = attn[:, :, dy * k + dx, None]  # [B, h, 1, H, W]
            if mul is not None:
                w = w * mul[..., dy, dx, None, None]
            if add is not None:
                w = w + add[..., dy, dx, None, None]
            out = out + vpad[:, :, :, dy : dy + hh, dx : dx + ww] * w
    return out.reshape(b, c, hh, ww)


class LocalAttention(nn.Module):
    """``x + ELSA(x)``, the ELSA under ``attn`` (as STF's ``WinBasedAttention`` holds its MSA)."""

    def __init__(self, dim: int, **elsa):
        super().__init__()
        self.attn = ELSA(dim, **elsa)

    def forward(self, x: Tensor) -> Tensor:
        return x + self.attn(x)


class _Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)
        for fc in (self.fc1, self.fc2):
            nn.init.trunc_normal_(fc.weight, std=0.02, a=-2.0, b=2.0)
            nn.init.zeros_(fc.bias)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class ELSABlock(nn.Module):
    """``x + ELSA(LN(x))`` then ``+ MLP(LN(.))`` on ``[B, dim, H, W]``; LN over channels."""

    def __init__(self, dim: int, mlp_ratio: float = 3.0, **elsa):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-5)
        self.attn = ELSA(dim, **elsa)
        self.norm2 = nn.LayerNorm(dim, eps=1e-5)
        self.mlp = _Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor) -> Tensor:
        normed = self.norm1(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        t = (x + self.attn(normed)).permute(0, 2, 3, 1)  # [B, H, W, C]
        t = t + self.mlp(self.norm2(t))
        return t.permute(0, 3, 1, 2)


def local_attention(cfg, dim: int) -> nn.Module:
    """The ELSA variant named by ``cfg.block`` (an ``elsa`` config block), as the Flax side builds
    it (``mracnn_jax.layers.elam.local_attention``): 'bare' is ``LocalAttention``, 'block' is
    ``ELSABlock`` (whose ``qk_scale`` defaults to 1)."""
    common = {
        "num_heads": cfg.heads,
        "kernel_size": cfg.kernel,
        "group_width": cfg.group_width,
        "lam": cfg.lam,
        "gamma": cfg.gamma,
    }
    if cfg.block == "bare":
        return LocalAttention(dim, qk_scale=cfg.qk_scale, **common)
    if cfg.block == "block":
        qk_scale = 1.0 if cfg.qk_scale is None else cfg.qk_scale
        return ELSABlock(dim, mlp_ratio=cfg.mlp_ratio, qk_scale=qk_scale, **common)
    raise ValueError(f"unknown ELSA block {cfg.block!r}; use 'bare' or 'block'")

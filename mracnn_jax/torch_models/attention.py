"""Attention modules of the PyTorch twin (NCHW): WAM (WACNN), ELAM (MRACNN) and CLAB.

All three gate a residual, as their Flax counterparts do (``mracnn_jax.layers.wam``, ``.elam``,
``.clab``):

    WAM(x)  = x + RU^3(x) * sigmoid(conv1x1(RU^3(WinAttn(x))))      RU with GELU
    ELAM(x) = x + RU^3(x) * sigmoid(conv1x1(RU^3(F(x))))            F = x + ELSA(x), or ELSABlock
    CLAB(s) = conv1x1(u + RU^3(u) * sigmoid(conv1x1(RU^3(F(u)))), D -> C),  u = conv1x1(s, C -> D)
                                                                    RU with ReLU

``WinAttn(x) = x + unroll(MSA(partition(roll(x, -s))), +s)``: multi-head self-attention within
w x w windows (N = w^2 tokens, head width d = C / h),

    softmax(q k^T / sqrt(d) + B_rel + mask) v,  then a dense projection,

``B_rel`` read from a learned ``[(2w - 1)^2, h]`` table at Swin's relative-position index and
``mask`` -100 between tokens from different regions of the cyclically shifted map (0 when s = 0).
H and W must be multiples of w.

State-dict layout (STF's ``WindowAttentionModule`` for WAM and ELAM; TCM's ``SWAtten`` for CLAB):
``conv_a.{0,1,2}`` the trunk units, ``conv_b.0`` the attention (``conv_b.0.attn.*``),
``conv_b.{1,2,3}`` the mask units and ``conv_b.4`` the 1x1; CLAB has ``in_conv``,
``non_local_block``, ``conv_a.{0,1,2}``, ``conv_b.{0,1,2}``, ``conv_b.3`` and ``out_conv``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from mracnn_jax.layers.wam import relative_position_index, shift_mask
from mracnn_jax.torch_models.blocks import conv, residual_units
from mracnn_jax.torch_models.elsa import local_attention


class WindowMSA(nn.Module):
    """Window multi-head self-attention on token groups ``[B nW, w^2, C]``."""

    relative_position_index: Tensor

    def __init__(self, dim: int, window: int, num_heads: int):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window - 1) ** 2, num_heads)
        )
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        index = torch.from_numpy(relative_position_index(window).astype("int64"))
        self.register_buffer("relative_position_index", index)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, tokens: Tensor, mask: Tensor | None = None) -> Tensor:
        """``tokens [B nW, n, C]``, ``mask [nW, n, n]`` or None -> ``[B nW, n, C]``."""
        bw, n, c = tokens.shape
        h = self.num_heads
        q, k, v = self.qkv(tokens).reshape(bw, n, 3, h, c // h).permute(2, 0, 3, 1, 4)
        logits = (q * self.scale) @ k.transpose(-2, -1)  # [B nW, h, n, n]
        bias = self.relative_position_bias_table[self.relative_position_index.reshape(-1)]
        logits = logits + bias.reshape(n, n, h).permute(2, 0, 1)[None]
        if mask is not None:
            nw = mask.shape[0]
            logits = (logits.reshape(bw // nw, nw, h, n, n) + mask[None, :, None]).reshape(
                bw, h, n, n
            )
        out = (torch.softmax(logits, dim=-1) @ v).transpose(1, 2).reshape(bw, n, c)
        return self.proj(out)


def _partition(x: Tensor, w: int) -> Tensor:
    """``[B, H, W, C] -> [B (H/w) (W/w), w^2, C]``, windows row-major per image."""
    b, hh, ww, c = x.shape
    x = x.reshape(b, hh // w, w, ww // w, w, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, w * w, c)


def _unpartition(tokens: Tensor, w: int, b: int, hh: int, ww: int) -> Tensor:
    c = tokens.shape[-1]
    x = tokens.reshape(b, hh // w, ww // w, w, w, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, hh, ww, c)


class WinBasedAttention(nn.Module):
    """``x + WinAttn(x)`` on ``[B, C, H, W]`` (shifted by ``shift`` when it is positive)."""

    def __init__(self, dim: int, num_heads: int, window: int, shift: int):
        super().__init__()
        if not 0 <= shift < window:
            raise ValueError(f"shift {shift} must be in [0, window {window})")
        self.window, self.shift = window, shift
        self.attn = WindowMSA(dim, window, num_heads)

    def forward(self, x: Tensor) -> Tensor:
        b, _, hh, ww = x.shape
        w, s = self.window, self.shift
        if hh % w or ww % w:
            raise ValueError(f"feature map {hh}x{ww} is not a multiple of the window {w}")
        t = x.permute(0, 2, 3, 1)
        mask = None
        if s:
            t = torch.roll(t, shifts=(-s, -s), dims=(1, 2))
            mask = torch.from_numpy(shift_mask(hh, ww, w, s)).to(x.device, x.dtype)
        t = _unpartition(self.attn(_partition(t, w), mask), w, b, hh, ww)
        if s:
            t = torch.roll(t, shifts=(s, s), dims=(1, 2))
        return x + t.permute(0, 3, 1, 2)


class GatedAttention(nn.Module):
    """WAM or ELAM: ``x + conv_a(x) * sigmoid(conv_b(x))``, ``conv_b[0]`` the attention."""

    def __init__(self, dim: int, attention: nn.Module):
        super().__init__()
        self.conv_a = nn.Sequential(*residual_units(dim, "gelu"))
        self.conv_b = nn.Sequential(attention, *residual_units(dim, "gelu"), conv(dim, dim, 1))

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv_a(x) * torch.sigmoid(self.conv_b(x))


def attention_module(cfg, dim: int, at_latent: bool) -> GatedAttention:
    """ELAM or WAM for a model config; WAM's window depends on the resolution (latent: M)."""
    if cfg.attention == "elam":
        return GatedAttention(dim, local_attention(cfg.elsa, dim))
    if cfg.attention == "wam":
        window = cfg.wam.window_m if at_latent else cfg.wam.window_n
        shift = cfg.wam.shift_m if at_latent else cfg.wam.shift_n
        return GatedAttention(dim, WinBasedAttention(dim, cfg.wam.heads, window, shift))
    raise ValueError(f"unknown attention {cfg.attention!r}; use 'elam' or 'wam'")


class CLAB(nn.Module):
    """Channel-wise local attention block: squeeze ``C -> dim``, gate, un-squeeze ``dim -> C``."""

    def __init__(self, channels: int, dim: int, elsa_cfg, act: str = "relu"):
        super().__init__()
        self.in_conv = conv(channels, dim, 1)
        self.non_local_block = local_attention(elsa_cfg, dim)
        self.conv_a = nn.Sequential(*residual_units(dim, act))
        self.conv_b = nn.Sequential(*residual_units(dim, act), conv(dim, dim, 1))
        self.out_conv = conv(dim, channels, 1)

    def forward(self, s: Tensor) -> Tensor:
        u = self.in_conv(s)
        gated = u + self.conv_a(u) * torch.sigmoid(self.conv_b(self.non_local_block(u)))
        return self.out_conv(gated)

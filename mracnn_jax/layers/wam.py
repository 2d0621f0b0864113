"""WACNN's window attention module (WAM), the baseline that ELAM replaces.

Window attention (Swin W-MSA / SW-MSA, no LayerNorm, no MLP), on ``[B, H, W, C]`` with H and W
multiples of the window w:

    WinAttn(x) = x + unroll( MSA( partition( roll(x, -s) ) ) , +s)

MSA in each w x w window (N = w^2 tokens, h heads of d = C/h channels):

    q, k, v = split(x W_qkv + b_qkv);   A = softmax(q k^T / sqrt(d) + B_rel + mask);   out = (A v) W_o + b_o

``B_rel[i, j]`` reads a learned table ``[(2w-1)^2, h]`` at the relative offset of tokens i and j.
With a shift s > 0, ``mask`` is -100 between tokens that came from different image regions after
the cyclic roll (regions split at -w and -s along each axis), 0 otherwise.

WAM(x) = x + trunk(x) * sigmoid(mask_branch(x)), trunk = 3 residual units,
mask_branch = WinAttn, 3 residual units, conv1x1.
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mracnn_jax.layers import init
from mracnn_jax.layers.residual import gated_residual


def relative_position_index(window: int) -> np.ndarray:
    """``[w^2, w^2]`` index into the ``(2w-1)^2`` bias table, row-major over (dy, dx)."""
    coords = np.stack(np.meshgrid(np.arange(window), np.arange(window), indexing="ij"))
    flat = coords.reshape(2, -1)
    rel = (flat[:, :, None] - flat[:, None, :]).transpose(1, 2, 0) + (window - 1)
    return rel[..., 0] * (2 * window - 1) + rel[..., 1]


def shift_mask(height: int, width: int, window: int, shift: int) -> np.ndarray:
    """``[num_windows, w^2, w^2]`` additive mask for shifted windows (0 or -100)."""
    region = np.zeros((height, width), np.int32)
    bounds = (slice(0, -window), slice(-window, -shift), slice(-shift, None))
    label = 0
    for hs in bounds:
        for ws in bounds:
            region[hs, ws] = label
            label += 1
    windows = partition(region[None, :, :, None], window).reshape(-1, window * window)
    diff = windows[:, None, :] - windows[:, :, None]
    return np.where(diff != 0, -100.0, 0.0).astype(np.float32)


def partition(x, window: int):
    """``[B, H, W, C]`` -> ``[B * H/w * W/w, w, w, C]`` (row-major over windows)."""
    b, h, w, c = x.shape
    x = x.reshape(b, h // window, window, w // window, window, c)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(-1, window, window, c)


def unpartition(windows, window: int, height: int, width: int):
    """Inverse of ``partition``."""
    c = windows.shape[-1]
    x = windows.reshape(-1, height // window, width // window, window, window, c)
    return x.transpose(0, 1, 3, 2, 4, 5).reshape(-1, height, width, c)


class Dense(nn.Module):
    """Linear layer with PyTorch's default initialisation (kernel ``[in, out]``)."""

    features: int
    use_bias: bool = True

    @nn.compact
    def __call__(self, x):
        c_in = x.shape[-1]
        kernel = self.param("kernel", init.torch_conv_kernel_init, (c_in, self.features))
        y = x @ kernel.astype(x.dtype)
        if self.use_bias:
            y = y + self.param("bias", init.torch_uniform(c_in), (self.features,)).astype(x.dtype)
        return y


class WindowAttention(nn.Module):
    """Residual (shifted-)window multi-head self-attention on ``[B, H, W, C]``."""

    num_heads: int = 8
    window: int = 8
    shift: int = 0

    @nn.compact
    def __call__(self, x):
        b, h, w, c = x.shape
        win, s = self.window, self.shift
        if h % win or w % win:
            raise ValueError(f"feature map {h}x{w} is not a multiple of the window {win}")
        if not 0 <= s < win:
            raise ValueError(f"shift {s} must be in [0, window)")
        table = self.param(
            "relative_position_bias_table",
            init.truncated_normal(0.02, bound=2.0),  # timm's trunc_normal_, as STF
            ((2 * win - 1) ** 2, self.num_heads),
        )
        shifted = jnp.roll(x, (-s, -s), axis=(1, 2)) if s else x
        tokens = partition(shifted, win).reshape(-1, win * win, c)
        n, d, heads = win * win, c // self.num_heads, self.num_heads
        nw = (h // win) * (w // win)  # windows per image
        qkv = Dense(3 * c, name="qkv")(tokens).reshape(b, nw, n, 3, heads, d)
        q, k, v = qkv.transpose(3, 0, 1, 4, 2, 5)  # each [B, nW, heads, n, d]: one transpose
        # relative-position bias [heads, n, n] and the shift mask [nW, n, n] as one addend
        bias = table[relative_position_index(win).reshape(-1)].reshape(n, n, heads)
        addend = bias.transpose(2, 0, 1)[None]
        if s:
            addend = addend + jnp.asarray(shift_mask(h, w, win, s))[:, None]
        logits = jnp.einsum("bwhnd,bwhmd->bwhnm", q * (d**-0.5), k).astype(jnp.float32) + addend
        attn = jax.nn.softmax(logits, axis=-1).astype(v.dtype)  # float32 softmax in any dtype
        out = jnp.einsum("bwhnm,bwhmd->bwnhd", attn, v).reshape(-1, n, c)
        out = Dense(c, name="proj")(out)
        out = unpartition(out.reshape(-1, win, win, c), win, h, w)
        if s:
            out = jnp.roll(out, (s, s), axis=(1, 2))
        return x + out


class WAM(nn.Module):
    """Window attention module: ``x + trunk(x) * sigmoid(mask(x))`` (module doc)."""

    num_heads: int = 8
    window: int = 8
    shift: int = 4

    @nn.compact
    def __call__(self, x):
        attended = WindowAttention(self.num_heads, self.window, self.shift, name="attention")(x)
        return gated_residual(x, attended)

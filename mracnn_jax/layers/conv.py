"""Convolutions with PyTorch's padding conventions, and stride-2 and grouped convolutions whose
gradients avoid XLA's slow CPU paths (the upsampling layers are in ``layers/upsampling.py``).

All tensors are NHWC. Kernels are stored HWIO, ``[kh, kw, C_in, C_out]``.

``Conv2d`` pads symmetrically by ``k // 2`` on every side (PyTorch's ``padding=k//2``), unlike
Flax's ``'SAME'``, which pads ``(0, 1)`` for even sizes at stride 2. Symmetric padding keeps
weight-level parity with PyTorch checkpoints. ``SubpelConv2d`` (WACNN's sub-pixel upsampling) is a
``Conv2d`` followed by ``depth_to_space``.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from mracnn_jax.layers import init
from mracnn_jax.layers.upsampling import DIMENSION_NUMBERS, conv_transpose_subpixel, depth_to_space


def _pair(value: int | Sequence[int]) -> tuple[int, int]:
    if isinstance(value, int):
        return (value, value)
    a, b = value
    return (int(a), int(b))


class Conv2d(nn.Module):
    """2-D convolution, NHWC, symmetric padding ``k // 2`` (PyTorch's ``padding=k//2``).

    Attributes:
      features: output channels.
      kernel_size: ``k`` or ``(kh, kw)``; padding is ``(kh // 2, kw // 2)`` on both sides.
      stride: spatial stride.
      use_bias: add a per-channel bias.
      groups: feature groups (``C_in`` and ``features`` must be divisible by it).
    Input ``[B, H, W, C_in]`` -> output ``[B, ceil(H/s), ceil(W/s), features]`` for odd kernels.
    """

    features: int
    kernel_size: int | Sequence[int] = 3
    stride: int = 1
    use_bias: bool = True
    groups: int = 1

    @nn.compact
    def __call__(self, x):
        kh, kw = _pair(self.kernel_size)
        c_in = x.shape[-1]
        if c_in % self.groups:
            raise ValueError(f"{c_in} input channels not divisible by groups={self.groups}")
        kernel = self.param(
            "kernel", init.torch_conv_kernel_init, (kh, kw, c_in // self.groups, self.features)
        )
        h, w = x.shape[1:3]
        if kh == kw == 1 and self.stride == 1 and self.groups == 1:
            y = pointwise_conv(x, kernel.astype(x.dtype))
        elif self.stride == 2 and self.groups == 1 and kh == kw and kh % 2 and h % 2 == w % 2 == 0:
            y = conv_stride2(x, kernel.astype(x.dtype))
        else:
            y = jax.lax.conv_general_dilated(
                x,
                kernel.astype(x.dtype),
                window_strides=(self.stride, self.stride),
                padding=((kh // 2, kh // 2), (kw // 2, kw // 2)),
                dimension_numbers=DIMENSION_NUMBERS,
                feature_group_count=self.groups,
            )
        if self.use_bias:
            bias = self.param(
                "bias", init.torch_uniform(kh * kw * c_in // self.groups), (self.features,)
            )
            y = y + bias.astype(x.dtype)
        return y


def pointwise_conv(x, kernel):
    """A 1x1 convolution, ``[B, H, W, C_in]`` with ``[1, 1, C_in, C_out]``, as one matrix
    product ``[B·H·W, C_in] @ [C_in, C_out]``.

    Same values as ``conv_general_dilated`` (up to summation order). The reason is the gradient:
    XLA's CPU backend computes a 1x1 convolution's kernel gradient as a convolution whose window
    spans the whole image, 1.4–2x slower than the matrix product ``x^T @ dy`` it equals
    (``benchmarks/bench_conv_gradients.py``, the 1x1 cases).
    """
    b, h, w, c = x.shape
    y = jnp.dot(x.reshape(b * h * w, c), kernel.reshape(c, kernel.shape[-1]))
    return y.reshape(b, h, w, kernel.shape[-1])


class SubpelConv2d(nn.Module):
    """Conv 3x3 to ``features * r * r`` channels, then depth-to-space by ``r`` (WACNN's subpel_conv3x3).

    The channel order of the shuffle is TensorFlow's; a PyTorch PixelShuffle checkpoint needs its
    conv output channels permuted on import (see ``mracnn_jax.convert``).
    """

    features: int
    upscale: int = 2
    kernel_size: int = 3

    @nn.compact
    def __call__(self, x):
        r = self.upscale
        y = Conv2d(self.features * r * r, self.kernel_size, name="conv")(x)
        return depth_to_space(y, r)


def _grouped_conv(x, kernel, groups: int):
    k = kernel.shape[0]
    return jax.lax.conv_general_dilated(
        x,
        kernel,
        (1, 1),
        ((k // 2, k // 2), (k // 2, k // 2)),
        dimension_numbers=DIMENSION_NUMBERS,
        feature_group_count=groups,
    )


@jax.custom_vjp
def grouped_conv_same(x, kernel):
    """Stride-1 grouped convolution with 'same' padding; groups = C_in / kernel.shape[2].

    ``x`` ``[B, H, W, C_in]``, ``kernel`` ``[k, k, C_in/G, C_out]`` -> ``[B, H, W, C_out]``.
    The forward and input gradient are XLA's; the kernel gradient is computed as one small
    contraction per kernel offset, dW[dy, dx, i, (g, o)] = sum_{b,h,w} x_pad[b, h+dy, w+dx, (g, i)]
    * g_out[b, h, w, (g, o)], because XLA's CPU backend computes a grouped convolution's kernel
    gradient about 100x slower than its forward pass (measured: 10 s per 64x64x128 image for a 7x7
    kernel with 8-channel groups, against 62 ms forward).
    """
    return _grouped_conv(x, kernel, x.shape[-1] // kernel.shape[2])


def _grouped_conv_fwd(x, kernel):
    return grouped_conv_same(x, kernel), (x, kernel)


def _grouped_conv_bwd(residual, g):
    x, kernel = residual
    k, _, c_group, c_out = kernel.shape
    b, h, w, c_in = x.shape
    groups = c_in // c_group
    _, input_vjp = jax.vjp(lambda v: _grouped_conv(v, kernel, groups), x)
    (dx,) = input_vjp(g)
    p = k // 2
    xp = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    g_grouped = g.reshape(b, h, w, groups, c_out // groups)

    def tap(index, dk):
        dy, dxx = index // k, index % k
        window = jax.lax.dynamic_slice(xp, (0, dy, dxx, 0), (b, h, w, c_in))
        window = window.reshape(b, h, w, groups, c_group)
        contrib = jnp.einsum("bhwgi,bhwgo->igo", window, g_grouped).reshape(c_group, c_out)
        return dk.at[index].set(contrib.astype(dk.dtype))

    dk = jax.lax.fori_loop(0, k * k, tap, jnp.zeros((k * k, c_group, c_out), kernel.dtype))
    return dx, dk.reshape(kernel.shape)


grouped_conv_same.defvjp(_grouped_conv_fwd, _grouped_conv_bwd)


def _conv_stride2(x, kernel):
    p = kernel.shape[0] // 2
    return jax.lax.conv_general_dilated(
        x, kernel, (2, 2), ((p, p), (p, p)), dimension_numbers=DIMENSION_NUMBERS
    )


@jax.custom_vjp
def conv_stride2(x, kernel):
    """Stride-2 convolution, odd square kernel ``k``, padding ``k // 2``, even ``H`` and ``W``.

    ``x`` ``[B, H, W, C_in]``, ``kernel`` ``[k, k, C_in, C_out]`` -> ``[B, H/2, W/2, C_out]``.
    The forward pass is XLA's. Both gradients avoid the dilated convolutions that XLA's CPU
    backend derives for a strided one (measured for a 5x5, 192-channel layer at batch 4 of
    128x128: input gradient 4.4x and kernel gradient 2.4x slower than the forward pass):

    * the input gradient is the adjoint, a stride-2 transposed convolution with the same kernel
      (``kernel[ty, tx, i, o]`` read as ``[.., o, i]``, output_padding 1 since ``2 + 2p - k = 1``),
      computed in sub-pixel form (``conv_transpose_subpixel``);
    * the kernel gradient, dW[t, s] = sum_{b,m,n} x_pad[b, 2m + t, 2n + s] g[b, m, n], splits by
      tap parity: taps ``(2q + a, 2r + c)`` only read the polyphase component
      ``x_pad[:, a::2, c::2]``, so each of the four phases is the kernel gradient of a stride-1
      valid convolution of that component.
    """
    return _conv_stride2(x, kernel)


def _conv_stride2_fwd(x, kernel):
    return _conv_stride2(x, kernel), (x, kernel)


def _conv_stride2_bwd(residual, g):
    x, kernel = residual
    k = kernel.shape[0]
    p = k // 2
    dx = conv_transpose_subpixel(g, jnp.transpose(kernel, (0, 1, 3, 2)), p)
    xp = jnp.pad(x, ((0, 0), (p, p), (p, p), (0, 0)))
    h_out, w_out = g.shape[1:3]
    dk = jnp.zeros_like(kernel)
    for a in (0, 1):
        for c in (0, 1):
            qa, qc = (k - a + 1) // 2, (k - c + 1) // 2  # taps of parity a (rows), c (columns)
            component = xp[:, a::2, c::2][:, : h_out + qa - 1, : w_out + qc - 1]
            zeros = jnp.zeros((qa, qc) + kernel.shape[2:], kernel.dtype)
            _, kernel_vjp = jax.vjp(
                lambda w, v=component: jax.lax.conv_general_dilated(
                    v, w, (1, 1), "VALID", dimension_numbers=DIMENSION_NUMBERS
                ),
                zeros,
            )
            dk = dk.at[a::2, c::2].set(kernel_vjp(g)[0])
    return dx, dk


conv_stride2.defvjp(_conv_stride2_fwd, _conv_stride2_bwd)

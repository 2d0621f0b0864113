"""Convolutions with PyTorch's padding conventions, and a fast stride-2 transposed convolution.

All tensors are NHWC. Kernels are stored HWIO, ``[kh, kw, C_in, C_out]``.

``Conv2d`` pads symmetrically by ``k // 2`` on every side (PyTorch's ``padding=k//2``), unlike
Flax's ``'SAME'``, which pads ``(0, 1)`` for even sizes at stride 2. Symmetric padding keeps
weight-level parity with PyTorch checkpoints.

``ConvTranspose2d`` is PyTorch's ``ConvTranspose2d(k, stride=2, padding=p, output_padding=1)``,
which upsamples by exactly 2. With kernel ``w[t_y, t_x, c, o]`` it computes

    out[2m + a] = sum_{t : t = 2(m - i) + a + p} x[i] w[t],        a in {0, 1}

(per spatial axis), i.e. the output phase ``a`` only sees taps ``t ≡ a + p (mod 2)`` at input
offsets ``i - m = (a + p - t) / 2``. Two implementations:

* ``"subpixel"`` (default): the four phases are one ordinary convolution of the *undilated* input
  with a kernel gathered from ``w`` (``[K', K', C_in, 4 * C_out]``, ``K' = ceil(k/2) + 1`` at most),
  followed by a depth-to-space shuffle. XLA's CPU backend runs ordinary convolutions (and their
  gradients) many times faster than input-dilated ones.
* ``"dilated"``: ``jax.lax.conv_transpose``-style input-dilated convolution with the flipped kernel
  and padding ``(k - 1 - p, k - p)``, the form ``flax.linen.ConvTranspose`` lowers to.

Both give the same numbers (tests check them against ``flax.linen.ConvTranspose`` and a naive
scatter loop). The parameter is stored the same way in both, so the choice is a runtime switch.
"""

from __future__ import annotations

from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mracnn_jax.layers import init

_DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")


def torch_conv_kernel_init(key, shape, dtype=jnp.float32):
    """PyTorch's default conv/linear weight init: U(-1/sqrt(fan_in), 1/sqrt(fan_in)).

    ``shape`` is HWIO (or ``[in, out]`` for dense layers); fan_in = prod(shape[:-1]).
    """
    return init.torch_uniform(int(np.prod(shape[:-1])))(key, shape, dtype)


def _bias_init(fan_in: int):
    return init.torch_uniform(fan_in)


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
            "kernel", torch_conv_kernel_init, (kh, kw, c_in // self.groups, self.features)
        )
        y = jax.lax.conv_general_dilated(
            x,
            kernel.astype(x.dtype),
            window_strides=(self.stride, self.stride),
            padding=((kh // 2, kh // 2), (kw // 2, kw // 2)),
            dimension_numbers=_DIMENSION_NUMBERS,
            feature_group_count=self.groups,
        )
        if self.use_bias:
            bias = self.param("bias", _bias_init(kh * kw * c_in // self.groups), (self.features,))
            y = y + bias.astype(x.dtype)
        return y


def _subpixel_taps(k: int, p: int):
    """For each output phase a in {0, 1}: list of (kernel tap t, input offset d = i - m)."""
    taps = []
    for a in (0, 1):
        taps.append([(t, (a + p - t) // 2) for t in range(k) if (t - a - p) % 2 == 0])
    return taps


def subpixel_kernel(kernel: jnp.ndarray, padding: int):
    """Gathers a transposed-conv kernel into the equivalent sub-pixel convolution kernel.

    Args:
      kernel: ``[k, k, C_in, C_out]`` transposed-convolution kernel (PyTorch semantics above).
      padding: PyTorch's ``padding`` p of the transposed convolution (output_padding is 1).
    Returns:
      ``(w_sub, (lo, hi))``: ``w_sub`` is ``[K, K, C_in, 4 * C_out]`` with output channel
      ``(a * 2 + b) * C_out + o`` holding phase ``(a, b)`` (depth-to-space order), to be applied
      as a stride-1 convolution with padding ``(lo, hi)`` on both spatial axes.
    """
    k = kernel.shape[0]
    taps = _subpixel_taps(k, padding)
    offsets = [d for phase in taps for _, d in phase]
    lo, hi = -min(offsets), max(offsets)
    size = lo + hi + 1
    # Index arrays: for window position r (offset r - lo) and phase a, the kernel tap or -1.
    index = np.full((2, size), -1, dtype=np.int64)
    for a, phase in enumerate(taps):
        for t, d in phase:
            index[a, d + lo] = t
    c_in, c_out = kernel.shape[2], kernel.shape[3]
    padded = jnp.concatenate([kernel, jnp.zeros((1,) + kernel.shape[1:], kernel.dtype)], axis=0)
    padded = jnp.concatenate(
        [padded, jnp.zeros((padded.shape[0], 1) + kernel.shape[2:], kernel.dtype)], axis=1
    )
    iy = np.where(index < 0, k, index)  # k indexes the zero row/column
    # w[a, ry, b, rx, ci, co] = padded[iy[a, ry], iy[b, rx], ci, co]
    w = padded[iy[:, :, None, None], iy[None, None, :, :]]  # [2, K, 2, K, Cin, Cout]
    w = jnp.transpose(w, (1, 3, 4, 0, 2, 5))  # [K, K, Cin, 2(a), 2(b), Cout]
    return w.reshape(size, size, c_in, 4 * c_out), (lo, hi)


def depth_to_space(x: jnp.ndarray, block: int) -> jnp.ndarray:
    """``[B, H, W, r*r*C]`` -> ``[B, rH, rW, C]``; channel ``(i*r + j)*C + c`` goes to (i, j).

    This is TensorFlow's ``depth_to_space`` order (PyTorch's PixelShuffle reads ``c*r*r + i*r + j``).
    """
    b, h, w, c = x.shape
    r = block
    x = x.reshape(b, h, w, r, r, c // (r * r))
    x = jnp.transpose(x, (0, 1, 3, 2, 4, 5))
    return x.reshape(b, h * r, w * r, c // (r * r))


def conv_transpose_subpixel(x, kernel, padding: int):
    """Stride-2 transposed convolution (PyTorch semantics, output_padding 1) in sub-pixel form."""
    w_sub, (lo, hi) = subpixel_kernel(kernel.astype(x.dtype), padding)
    y = jax.lax.conv_general_dilated(
        x, w_sub, (1, 1), ((lo, hi), (lo, hi)), dimension_numbers=_DIMENSION_NUMBERS
    )
    return depth_to_space(y, 2)


def conv_transpose_dilated(x, kernel, padding: int):
    """The same transposed convolution as an input-dilated convolution with a flipped kernel."""
    k = kernel.shape[0]
    flipped = kernel[::-1, ::-1].astype(x.dtype)
    pad = (k - 1 - padding, k - padding)
    return jax.lax.conv_general_dilated(
        x,
        flipped,
        window_strides=(1, 1),
        padding=(pad, pad),
        lhs_dilation=(2, 2),
        dimension_numbers=_DIMENSION_NUMBERS,
    )


class ConvTranspose2d(nn.Module):
    """PyTorch ``ConvTranspose2d(k, stride=2, padding=k//2, output_padding=1)``, NHWC: H -> 2H.

    Attributes:
      features: output channels.
      kernel_size: square kernel size k (odd).
      impl: ``"subpixel"`` (fast on CPU) or ``"dilated"`` (what flax's ConvTranspose lowers to).
    Parameter ``kernel`` is ``[k, k, C_in, C_out]`` with ``kernel[ty, tx, i, o]`` equal to the
    PyTorch weight ``[i, o, ty, tx]``.
    """

    features: int
    kernel_size: int = 3
    impl: str = "subpixel"

    @nn.compact
    def __call__(self, x):
        k = self.kernel_size
        c_in = x.shape[-1]
        # PyTorch's ConvTranspose2d computes fan_in from weight.size(1) * k * k = C_out * k * k.
        kernel = self.param(
            "kernel",
            lambda key, shape: torch_conv_kernel_init(key, (k, k, shape[3], shape[2])).transpose(
                0, 1, 3, 2
            ),
            (k, k, c_in, self.features),
        )
        if self.impl == "subpixel":
            y = conv_transpose_subpixel(x, kernel, k // 2)
        elif self.impl == "dilated":
            y = conv_transpose_dilated(x, kernel, k // 2)
        else:
            raise ValueError(f"unknown transposed-conv impl {self.impl!r}; use 'subpixel' or 'dilated'")
        bias = self.param("bias", _bias_init(self.features * k * k), (self.features,))
        return y + bias.astype(x.dtype)


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
        dimension_numbers=_DIMENSION_NUMBERS,
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

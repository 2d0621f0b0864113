"""Convolutions with PyTorch's padding conventions, a fast stride-2 transposed convolution, and
stride-2 and grouped convolutions whose gradients avoid XLA's slow CPU paths.

All tensors are NHWC. Kernels are stored HWIO, ``[kh, kw, C_in, C_out]``.

``Conv2d`` pads symmetrically by ``k // 2`` on every side (PyTorch's ``padding=k//2``), unlike
Flax's ``'SAME'``, which pads ``(0, 1)`` for even sizes at stride 2. Symmetric padding keeps
weight-level parity with PyTorch checkpoints.

``ConvTranspose2d`` is PyTorch's ``ConvTranspose2d(k, stride=2, padding=p, output_padding=1)``,
which upsamples by exactly 2. With kernel ``w[t_y, t_x, c, o]`` it computes

    out[2m + a] = sum_{t : t = 2(m - i) + a + p} x[i] w[t],        a in {0, 1}

(per spatial axis), i.e. the output phase ``a`` only sees taps ``t ≡ a + p (mod 2)`` at input
offsets ``i - m = (a + p - t) / 2``. Two implementations:

* ``"subpixel"`` (default): each of the four output phases ``(a, b)`` is one ordinary
  convolution of the *undilated* input with exactly that phase's taps of ``w`` (``phase_kernels``:
  3x3, 3x2, 2x3 and 2x2 for k = 5), and the phases are interleaved. XLA's CPU backend runs
  ordinary convolutions (and their gradients) many times faster than input-dilated ones, and four
  exact-tap convolutions beat one convolution of a zero-padded ``[3, 3, C_in, 4 C_out]`` kernel
  (0.23 s against 0.33 s for 192 channels at batch 4 of 64x64).
* ``"dilated"``: ``jax.lax.conv_transpose``-style input-dilated convolution with the flipped kernel
  and padding ``(k - 1 - p, k - p)``, the form ``flax.linen.ConvTranspose`` lowers to.

Both give the same numbers (tests check them against ``flax.linen.ConvTranspose`` and a naive
scatter loop). The parameter is stored the same way in both, so the choice is a runtime switch.
"""

from __future__ import annotations

from collections.abc import Sequence

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
                dimension_numbers=_DIMENSION_NUMBERS,
                feature_group_count=self.groups,
            )
        if self.use_bias:
            bias = self.param("bias", _bias_init(kh * kw * c_in // self.groups), (self.features,))
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


def _subpixel_taps(k: int, p: int):
    """For each output phase a in {0, 1}: list of (kernel tap t, input offset d = i - m)."""
    taps = []
    for a in (0, 1):
        taps.append([(t, (a + p - t) // 2) for t in range(k) if (t - a - p) % 2 == 0])
    return taps


def phase_kernels(kernel: jnp.ndarray, padding: int):
    """Splits a transposed-convolution kernel into the four sub-pixel phase kernels.

    Args:
      kernel: ``[kh, kw, C_in, C_out]`` transposed-convolution kernel (PyTorch semantics above).
      padding: PyTorch's ``padding`` p of the transposed convolution (output_padding is 1).
    Returns:
      ``{(a, b): (w_ab, ((lo_a, hi_a), (lo_b, hi_b)))}``: output phase ``(a, b)`` equals the
      stride-1 convolution of the undilated input with ``w_ab`` (``[n_a, n_b, C_in, C_out]``,
      only the taps ``t = a + p (mod 2)``, ordered by input offset) and that padding.
    """
    per_axis = []
    for axis in (0, 1):
        phases = []
        for phase in _subpixel_taps(kernel.shape[axis], padding):
            phase = sorted(phase, key=lambda tap: tap[1])
            offsets = [d for _, d in phase]
            phases.append(([t for t, _ in phase], (-offsets[0], offsets[-1])))
        per_axis.append(phases)
    out = {}
    for a, (rows, pad_y) in enumerate(per_axis[0]):
        for b, (cols, pad_x) in enumerate(per_axis[1]):
            out[(a, b)] = (kernel[np.asarray(rows)][:, np.asarray(cols)], (pad_y, pad_x))
    return out


def interleave_phases(phases: dict) -> jnp.ndarray:
    """``{(a, b): [B, H, W, C]}`` -> ``[B, 2H, 2W, C]`` with phase ``(a, b)`` at ``(2m + a, 2n + b)``."""
    y = jnp.stack([jnp.stack([phases[(a, 0)], phases[(a, 1)]], axis=3) for a in (0, 1)], axis=2)
    b, h, _, w, _, c = y.shape  # [B, H, 2(a), W, 2(b), C]
    return y.reshape(b, 2 * h, 2 * w, c)


def depth_to_space(x: jnp.ndarray, block: int) -> jnp.ndarray:
    """``[B, H, W, r*r*C]`` -> ``[B, rH, rW, C]``; channel ``(i*r + j)*C + c`` goes to (i, j).

    This is TensorFlow's ``depth_to_space`` order (PyTorch's PixelShuffle reads ``c*r*r + i*r + j``).
    """
    b, h, w, c = x.shape
    r = block
    x = x.reshape(b, h, w, r, r, c // (r * r))
    x = jnp.transpose(x, (0, 1, 3, 2, 4, 5))
    return x.reshape(b, h * r, w * r, c // (r * r))


# Below this many output channels a transposed convolution runs as one matmul and a col2im sum.
FEW_OUTPUT_CHANNELS = 8


def conv_transpose_subpixel(x, kernel, padding: int):
    """Stride-2 transposed convolution (PyTorch semantics, output_padding 1) in sub-pixel form:
    one stride-1 convolution per output phase, with exactly that phase's taps, interleaved; or,
    for at most ``FEW_OUTPUT_CHANNELS`` outputs, ``conv_transpose_columns``."""
    kernel = kernel.astype(x.dtype)
    if kernel.shape[-1] <= FEW_OUTPUT_CHANNELS:
        return conv_transpose_columns(x, kernel, padding)
    phases = {
        ab: jax.lax.conv_general_dilated(x, w, (1, 1), pad, dimension_numbers=_DIMENSION_NUMBERS)
        for ab, (w, pad) in phase_kernels(kernel, padding).items()
    }
    return interleave_phases(phases)


def conv_transpose_columns(x, kernel, padding: int):
    """The same transposed convolution as a matmul followed by a col2im sum.

    ``cols[b, m, n, t, s, o] = sum_c x[b, m, n, c] kernel[t, s, c, o]`` (one ``[C_in, k k C_out]``
    matmul), then output phase ``(a, b)`` sums ``cols[m + d, n + e, t, s]`` over that phase's taps
    ``(t, d)`` and ``(s, e)`` (``_subpixel_taps``). For an image-producing last layer (C_out = 3)
    XLA's convolutions with 3 output channels are slow (forward 0.18 s, gradient 1.19 s for
    192 -> 3 channels, 5x5, batch 4 of 128x128) and this form is not (0.12 s and 0.28 s).
    """
    k = kernel.shape[0]
    b, h, w, c_in = x.shape
    c_out = kernel.shape[-1]
    cols = x.reshape(-1, c_in) @ jnp.transpose(kernel, (2, 0, 1, 3)).reshape(c_in, k * k * c_out)
    cols = cols.reshape(b, h, w, k, k, c_out)
    taps = _subpixel_taps(k, padding)
    offsets = [d for phase in taps for _, d in phase]
    lo, hi = -min(offsets), max(offsets)
    cols = jnp.pad(cols, ((0, 0), (lo, hi), (lo, hi), (0, 0), (0, 0), (0, 0)))
    phases = {}
    for a, rows in enumerate(taps):
        for c, columns in enumerate(taps):
            phases[(a, c)] = sum(
                cols[:, lo + dy : lo + dy + h, lo + dx : lo + dx + w, ty, tx]
                for ty, dy in rows
                for tx, dx in columns
            )
    return interleave_phases(phases)


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
            raise ValueError(
                f"unknown transposed-conv impl {self.impl!r}; use 'subpixel' or 'dilated'"
            )
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


def _conv_stride2(x, kernel):
    p = kernel.shape[0] // 2
    return jax.lax.conv_general_dilated(
        x, kernel, (2, 2), ((p, p), (p, p)), dimension_numbers=_DIMENSION_NUMBERS
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
                    v, w, (1, 1), "VALID", dimension_numbers=_DIMENSION_NUMBERS
                ),
                zeros,
            )
            dk = dk.at[a::2, c::2].set(kernel_vjp(g)[0])
    return dx, dk


conv_stride2.defvjp(_conv_stride2_fwd, _conv_stride2_bwd)

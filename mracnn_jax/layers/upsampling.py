"""Upsampling by 2: PyTorch's stride-2 transposed convolution, fast on XLA's CPU backend, and the
sub-pixel convolution (conv, then depth-to-space). All tensors NHWC, kernels HWIO.

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

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mracnn_jax.layers import init

#: ``conv_general_dilated``'s layouts in this package: NHWC activations, HWIO kernels.
DIMENSION_NUMBERS = ("NHWC", "HWIO", "NHWC")


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
        ab: jax.lax.conv_general_dilated(x, w, (1, 1), pad, dimension_numbers=DIMENSION_NUMBERS)
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
        dimension_numbers=DIMENSION_NUMBERS,
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
            lambda key, shape: init.torch_conv_kernel_init(
                key, (k, k, shape[3], shape[2])
            ).transpose(0, 1, 3, 2),
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
        bias = self.param("bias", init.torch_uniform(self.features * k * k), (self.features,))
        return y + bias.astype(x.dtype)

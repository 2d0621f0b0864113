"""SSIM and MS-SSIM in JAX, reproducing `tf.image.ssim` and `tf.image.ssim_multiscale` (TF 2.x).

MS-SSIM convention (`ms_ssim`, the one evaluation reports): `tf.image.ssim_multiscale`'s.
  - SSIM per scale: 11x11 Gaussian window, σ = 1.5, separable, 'VALID' filtering (no padding;
    the maps shrink by 10 pixels a side); K1 = 0.01, K2 = 0.03, C1 = (K1·L)², C2 = (K2·L)²
    with L = `max_val` the data range (255 for 8-bit images); biased (1/N) local variances.
  - 5 scales with the weights `MS_SSIM_WEIGHTS` (0.0448, 0.2856, 0.3001, 0.2363, 0.1333);
    between scales a 2x2 average pool with stride 2, an odd side first padded at its end by
    repeating the last row or column (TF's SYMMETRIC pad).
  - Per channel, Π_{j<5} relu(CS_j)^β_j · relu(SSIM_5)^β_5: a negative mean contrast-structure
    (or final SSIM) counts as 0; then the mean over R, G and B. Images need ≥ 161 pixels a
    side.
CompressAI scores with `pytorch_msssim.ms_ssim(x, y, data_range=...)`: the same window, σ,
K1/K2, weights, 'valid' filtering, relu on CS and on the final SSIM, and mean over channels. It
differs in the pooling of an odd side: `avg_pool2d(padding=1)` pads a zero row or column on
*both* ends and averages the zeros in. On sizes that stay even for four halvings (Kodak's
768x512: 768 → 48, 512 → 32) the two agree to float32 rounding (measured on the 24 Kodak
images against JPEG at qualities 10, 30, 75: |Δ| ≤ 1e-5, ≤ 0.004 dB); on odd sizes they do not
(Kodak cropped to 767x511: |Δ| up to 0.015, 0.6 dB). docs/evaluation.md has the table;
tests/test_metrics.py checks both bounds.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mracnn_jax.metrics.pixels import _as_float, _broadcast_result, _check_pair

#: Power factors (weights) of the 5 MS-SSIM scales, Wang, Simoncelli & Bovik 2003 — the
#: values of `tf.image.ssim_multiscale`.
MS_SSIM_WEIGHTS: tuple[float, ...] = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def _gaussian_1d(filter_size: int, filter_sigma: float) -> np.ndarray:
    """Normalised 1-D Gaussian g_i ∝ exp(−c_i² / (2σ²)), c_i = i − (size − 1)/2 (float64).

    TF builds the 2-D kernel as softmax(−(c_i² + c_j²)/(2σ²)) = g_i·g_j: the outer product of
    this vector with itself, so filtering with it along H and then W is the same convolution.
    g is exactly symmetric (g_i = g_{k−1−i}), which `_gaussian_filter`'s gradient relies on.
    """
    c = np.arange(filter_size, dtype=np.float64) - (filter_size - 1) / 2.0
    g = np.exp(-0.5 * c**2 / filter_sigma**2)
    return g / g.sum()


def _filter_valid(x: jnp.ndarray, g: np.ndarray) -> jnp.ndarray:
    """Separable filter with the 1-D taps g along H, then W; 'VALID' padding, channels-first.
    `[N, C, H, W]` → `[N, C, H−k+1, W−k+1]`.

    Written as k shifted multiply-adds rather than as a (depthwise) convolution: XLA fuses
    them, which on CPU is >10x faster than its grouped convolution (and the channels-first
    layout another ~3x over NHWC), and on GPU/TPU it never drops to TF32/bf16 precision.
    """
    k = g.shape[0]
    g = [np.asarray(v, x.dtype) for v in g]
    h, w = x.shape[-2], x.shape[-1]
    t = g[0] * x[..., 0 : h - k + 1, :]
    for i in range(1, k):
        t = t + g[i] * x[..., i : i + h - k + 1, :]
    out = g[0] * t[..., 0 : w - k + 1]
    for i in range(1, k):
        out = out + g[i] * t[..., i : i + w - k + 1]
    return out


@functools.cache
def _gaussian_filter(filter_size: int, filter_sigma: float) -> Any:
    """The 'VALID' separable Gaussian filter `[N, C, H, W]` → `[N, C, H−k+1, W−k+1]`, with a
    hand-written gradient.

    The filter is linear, and its transpose is a 'FULL' correlation with the flipped taps;
    the taps are symmetric, so that is the same filter applied to the cotangent zero-padded by
    k − 1 on every side. Differentiating the k shifted slices instead would cost ~4x the
    compile time of the forward pass.
    """
    g = _gaussian_1d(filter_size, filter_sigma)
    k = filter_size

    @jax.custom_vjp
    def apply(x: jnp.ndarray) -> jnp.ndarray:
        return _filter_valid(x, g)

    def fwd(x: jnp.ndarray) -> tuple[jnp.ndarray, None]:
        return _filter_valid(x, g), None

    def bwd(_: None, ct: jnp.ndarray) -> tuple[jnp.ndarray]:
        padded = jnp.pad(ct, ((0, 0), (0, 0), (k - 1, k - 1), (k - 1, k - 1)))
        return (_filter_valid(padded, g),)

    apply.defvjp(fwd, bwd)
    return apply


def _ssim_per_channel(
    x: jnp.ndarray,
    y: jnp.ndarray,
    max_val: float,
    filter_size: int,
    filter_sigma: float,
    k1: float,
    k2: float,
) -> tuple[jnp.ndarray, jnp.ndarray]:
    """Mean SSIM and mean contrast-structure term per channel.

    x `[Nx, C, H, W]` and y `[Ny, C, H, W]` with Nx ∈ {1, Ny} → two `[Ny, C]`.

    With μ, σ², σ_xy the Gaussian-weighted local means, variances and covariance,
    C1 = (k1·max_val)², C2 = (k2·max_val)²:
      l  = (2 μx μy + C1) / (μx² + μy² + C1)
      cs = (2 σxy + C2) / (σx² + σy² + C2)
      SSIM = mean over positions of l·cs;  CS = mean over positions of cs.
    As in TF (and the MATLAB reference), the variances use no Bessel-like compensation and
    the filter runs with 'VALID' padding (no border effects).
    """
    h, w = x.shape[-2], x.shape[-1]
    if h < filter_size or w < filter_size:
        raise ValueError(
            f"SSIM needs images of at least {filter_size}x{filter_size} pixels (the Gaussian "
            f"filter size); got {h}x{w}"
        )
    c = x.shape[1]
    filt = _gaussian_filter(int(filter_size), float(filter_sigma))
    max_val = jnp.asarray(max_val, x.dtype)
    c1 = (k1 * max_val) ** 2
    c2 = (k2 * max_val) ** 2
    # Filter x, x² and y, y², x·y in two passes, so that an x broadcast over a batch of y
    # (N = 1 for x) is filtered once. TF filters x² + y² as one map; the filter is linear, so
    # this differs from it by rounding only.
    fx = filt(jnp.concatenate([x, jnp.square(x)], axis=1))
    fy = filt(jnp.concatenate([y, jnp.square(y), x * y], axis=1))
    mu_x, e_xx = fx[:, :c], fx[:, c:]
    mu_y, e_yy, e_xy = fy[:, :c], fy[:, c : 2 * c], fy[:, 2 * c :]
    e_xx_yy = e_xx + e_yy
    num0 = 2.0 * mu_x * mu_y
    den0 = jnp.square(mu_x) + jnp.square(mu_y)
    luminance = (num0 + c1) / (den0 + c1)
    cs = (2.0 * e_xy - num0 + c2) / (e_xx_yy - den0 + c2)
    return jnp.mean(luminance * cs, axis=(-2, -1)), jnp.mean(cs, axis=(-2, -1))


def _flatten_batch(x: jnp.ndarray, lead: tuple[int, ...]) -> jnp.ndarray:
    """`[..., H, W, C]` → channels-first `[N, C, H, W]` with N = prod(lead), or N = 1 when x
    holds a single image (left unbroadcast, so that its maps are computed once)."""
    if int(np.prod(x.shape[:-3], dtype=np.int64)) != 1:
        x = jnp.broadcast_to(x, lead + x.shape[-3:])
    return jnp.transpose(x.reshape((-1,) + x.shape[-3:]), (0, 3, 1, 2))


def ssim(
    x: Any,
    y: Any,
    max_val: float = 255.0,
    filter_size: int = 11,
    filter_sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> jnp.ndarray:
    """Single-scale SSIM (Wang et al. 2004) per image, averaged over channels, as `tf.image.ssim`.

    See `_ssim_per_channel` for the formula. `[..., H, W, C]` → `[...]`; H and W must be at
    least `filter_size`. Jitted (the filter parameters are static).
    """
    return _ssim_jit(x, y, max_val, int(filter_size), float(filter_sigma), float(k1), float(k2))


def _ssim_impl(x, y, max_val, filter_size, filter_sigma, k1, k2):
    x, y = _as_float(x), _as_float(y)
    lead = _check_pair(x, y, "ssim")
    xf, yf = _flatten_batch(x, lead), _flatten_batch(y, lead)
    if xf.shape[0] > yf.shape[0]:  # the single image must be x (see _ssim_per_channel)
        xf, yf = yf, xf
    s, _ = _ssim_per_channel(xf, yf, max_val, filter_size, filter_sigma, k1, k2)
    return _broadcast_result(jnp.mean(s, axis=-1), lead)


_ssim_jit = jax.jit(_ssim_impl, static_argnums=(3, 4, 5, 6))


def min_size_for_ms_ssim(num_scales: int = len(MS_SSIM_WEIGHTS), filter_size: int = 11) -> int:
    """Smallest H (and W) that MS-SSIM accepts: (filter_size − 1)·2^(num_scales − 1) + 1.

    Each scale halves the image, rounding up (ceil(n / 2), see `ms_ssim`), and the coarsest one
    must still hold the filter: ceil(H / 2^(S−1)) ≥ filter_size. With the defaults, 161.
    """
    return (filter_size - 1) * 2 ** (num_scales - 1) + 1


def _downsample2(x: jnp.ndarray) -> jnp.ndarray:
    """2x2 average pooling, stride 2, after padding an odd H or W by repeating the last row or
    column (TF's 'SYMMETRIC' pad of width 1). `[N, C, H, W]` → `[N, C, ceil(H/2), ceil(W/2)]`."""
    n, c, h, w = x.shape
    if h % 2 or w % 2:
        x = jnp.pad(x, ((0, 0), (0, 0), (0, h % 2), (0, w % 2)), mode="symmetric")
        h, w = h + h % 2, w + w % 2
    return x.reshape(n, c, h // 2, 2, w // 2, 2).mean(axis=(3, 5))


def _safe_pow(v: jnp.ndarray, p: jnp.ndarray) -> jnp.ndarray:
    """relu(v)^p with a finite gradient everywhere (0 where v ≤ 0) for p > 0.

    `relu(v) ** p` alone has the derivative p·0^(p−1) = inf at v ≤ 0, and inf·0 = NaN through
    relu. The forward value is the same.
    """
    pos = v > 0
    safe = jnp.where(pos, v, 1.0)
    return jnp.where(pos, jnp.exp(p * jnp.log(safe)), 0.0)


def ms_ssim(
    x: Any,
    y: Any,
    max_val: float = 255.0,
    power_factors: Sequence[float] = MS_SSIM_WEIGHTS,
    filter_size: int = 11,
    filter_sigma: float = 1.5,
    k1: float = 0.01,
    k2: float = 0.03,
) -> jnp.ndarray:
    """Multi-scale SSIM (Wang, Simoncelli & Bovik 2003) per image, as `tf.image.ssim_multiscale`.

    For scales j = 1..S (S = len(power_factors) = 5, weights β_j = `MS_SSIM_WEIGHTS`), per
    channel:
      MS-SSIM_c = Π_{j<S} relu(CS_j)^β_j · relu(SSIM_S)^β_S,
    where CS_j and SSIM_j are the mean contrast-structure and mean SSIM of scale j
    (`_ssim_per_channel`: 11x11 Gaussian σ = 1.5, K1 = 0.01, K2 = 0.03, 'VALID' filtering).
    Scale j + 1 is scale j average-pooled 2x2 with stride 2, an odd H or W being first padded
    by repeating its last row/column. The result is the mean of MS-SSIM_c over the channels
    (TF's order: per channel, then averaged — not MS-SSIM of a channel-averaged SSIM).

    Small images: like TF, the coarsest scale must still hold the filter, so H and W must be
    ≥ `min_size_for_ms_ssim()` (161 for the defaults; TF raises InvalidArgumentError below
    that). Here a ValueError says so at trace time. Crop or pad larger, or pass fewer
    `power_factors`, for smaller images.

    Differentiable: the relu'd factors use a gradient-safe power, so a negative CS gives a zero
    gradient rather than NaN, and the Gaussian filter has a hand-written (transposed-filter)
    gradient. Jitted, with all arguments but x, y and max_val static.

    Args:
      x, y: images `[..., H, W, C]`, any number of leading batch axes (broadcasting).
      max_val: peak value, 255 for 8-bit images and 1 for images in [0, 1].
      power_factors: per-scale weights; their count is the number of scales.
      filter_size, filter_sigma, k1, k2: SSIM parameters.

    Returns:
      `[...]` MS-SSIM in [0, 1].
    """
    return _ms_ssim_jit(
        x,
        y,
        max_val,
        tuple(float(p) for p in power_factors),
        int(filter_size),
        float(filter_sigma),
        float(k1),
        float(k2),
    )


def _ms_ssim_impl(x, y, max_val, power_factors, filter_size, filter_sigma, k1, k2):
    x, y = _as_float(x), _as_float(y)
    lead = _check_pair(x, y, "ms_ssim")
    num_scales = len(power_factors)
    if num_scales < 1:
        raise ValueError("ms_ssim: power_factors must hold at least one weight")
    h, w = x.shape[-3], x.shape[-2]
    need = min_size_for_ms_ssim(num_scales, filter_size)
    if h < need or w < need:
        raise ValueError(
            f"ms_ssim: with {num_scales} scales and an {filter_size}x{filter_size} filter, H and W "
            f"must be at least {need} (the coarsest scale, ceil(n / 2^{num_scales - 1}), must be "
            f"≥ {filter_size}); got {h}x{w}. Use larger images or fewer power_factors."
        )
    xf, yf = _flatten_batch(x, lead), _flatten_batch(y, lead)
    if xf.shape[0] > yf.shape[0]:  # SSIM is symmetric in x and y; the single image goes first
        xf, yf = yf, xf
    factors = []
    for j in range(num_scales):
        if j > 0:
            xf, yf = _downsample2(xf), _downsample2(yf)
        s, cs = _ssim_per_channel(xf, yf, max_val, filter_size, filter_sigma, k1, k2)
        factors.append(cs if j < num_scales - 1 else s)
    stacked = jnp.stack(factors, axis=-1)  # [N, C, S]
    p = jnp.asarray(power_factors, stacked.dtype)
    per_channel = jnp.prod(_safe_pow(stacked, p), axis=-1)  # [N, C]
    return _broadcast_result(jnp.mean(per_channel, axis=-1), lead)


_ms_ssim_jit = jax.jit(_ms_ssim_impl, static_argnums=(3, 4, 5, 6, 7))


def ms_ssim_db(v: Any) -> Any:
    """MS-SSIM in decibels: −10·log10(1 − v). 1 gives +inf.

    Works on Python floats and NumPy arrays (NumPy result) and on JAX arrays and tracers (JAX
    result).
    """
    if isinstance(v, jax.Array):
        return -10.0 * jnp.log10(1.0 - v)
    with np.errstate(divide="ignore"):
        out = -10.0 * np.log10(1.0 - np.asarray(v, dtype=np.float64))
    return float(out) if np.ndim(out) == 0 else out

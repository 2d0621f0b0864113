"""Image-quality metrics in JAX: PSNR, SSIM, MS-SSIM, plus rate helpers (used by training and
evaluation alike).

Everything here is plain `jax.numpy`, differentiable and jittable (shapes are static), so the
same MS-SSIM serves the evaluation and the training loss λ·(1 − MS-SSIM) + bpp. TensorFlow is
never imported: the functions reproduce `tf.image.psnr`, `tf.image.ssim` and
`tf.image.ssim_multiscale` (TF 2.x) and the tests check them against those to 1e-4.

Images are `[..., H, W, C]` (NHWC with any number of leading batch axes; C is usually 3). The
leading axes of the two arguments broadcast against each other, so one original `[H, W, C]`
can be compared with a stack of reconstructions `[N, H, W, C]` (its filtered maps are then
computed once). Any dtype is accepted and computed in float32 (or wider if the input is
wider) *without* rescaling, so `max_val` must describe the values given: 255 for 8-bit
images, 1 for images in [0, 1].
(TF rescales integer images to [0, 1] and `max_val` with them; SSIM and PSNR are invariant to
that common scaling, so the results agree.)

Modules: ``pixels`` (MSE, PSNR and the array conventions), ``ssim`` (SSIM, MS-SSIM and their
exact convention against TensorFlow's and CompressAI's); this package holds the rate helper and
``image_metrics``, the evaluation's scoring of 8-bit images.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mracnn_jax.metrics.pixels import mse, psnr
from mracnn_jax.metrics.ssim import MS_SSIM_WEIGHTS, min_size_for_ms_ssim, ms_ssim, ms_ssim_db, ssim

__all__ = [
    "MS_SSIM_WEIGHTS",
    "bpp_from_file_size",
    "image_metrics",
    "min_size_for_ms_ssim",
    "ms_ssim",
    "ms_ssim_db",
    "mse",
    "psnr",
    "ssim",
]


def bpp_from_file_size(num_bytes: int, height: int, width: int) -> float:
    """Bits per pixel of a file of `num_bytes` bytes for an H x W image: 8·num_bytes / (H·W).

    Integer inputs are divided exactly once (Python's correctly rounded int / int).
    """
    for name, v in (("num_bytes", num_bytes), ("height", height), ("width", width)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"bpp_from_file_size: {name} must be an integer, got {v!r}")
    if num_bytes < 0 or height <= 0 or width <= 0:
        raise ValueError(
            f"bpp_from_file_size: need num_bytes ≥ 0 and a positive size, got {num_bytes} bytes "
            f"for {height}x{width}"
        )
    return (8 * int(num_bytes)) / (int(height) * int(width))


@jax.jit
def _metrics_8bit(x: jnp.ndarray, y: jnp.ndarray) -> tuple[jnp.ndarray, jnp.ndarray]:
    return psnr(x, y, 255.0), ms_ssim(x, y, 255.0)


def with_channel_axis(original: Any, reconstruction: Any) -> tuple[np.ndarray, np.ndarray]:
    """Both arrays with a channel axis: a grayscale ``original`` ``[H, W]`` (two axes) and its
    reconstruction ``[H, W]`` or stack ``[N, H, W]`` get a last axis of 1; anything else (an
    ``original`` with three axes, ``[H, W, C]``) is returned as is. The one rule by which the
    evaluation scores grayscale images on their one channel."""
    original, reconstruction = np.asarray(original), np.asarray(reconstruction)
    if original.ndim == 2:
        return original[..., None], reconstruction[..., None]
    return original, reconstruction


def image_metrics(original: np.ndarray, reconstruction: np.ndarray) -> dict[str, Any]:
    """PSNR, MS-SSIM and MS-SSIM dB of 8-bit images, as Python floats or NumPy arrays.

    A convenience for evaluation loops: both images are `[..., H, W, C]` uint8 (or values on
    the 0..255 scale) at the original size, their leading axes broadcasting (one original
    `[H, W, C]` against a stack of reconstructions `[N, H, W, C]` is the fast way to score a
    quality sweep); the computation is jitted once per pair of shapes. A grayscale original
    `[H, W]` with reconstructions `[H, W]` or `[N, H, W]` is scored on its one channel
    (`with_channel_axis`); RGB images give PSNR-RGB.
    Images smaller than `min_size_for_ms_ssim()` raise ValueError (see `ms_ssim`).

    Returns:
      {"psnr": dB, "ms_ssim": in [0, 1], "ms_ssim_db": −10·log10(1 − ms_ssim)}.
    """
    original, reconstruction = with_channel_axis(original, reconstruction)
    if original.shape[-3:] != reconstruction.shape[-3:]:
        raise ValueError(
            f"image_metrics: image sizes differ, {original.shape} vs {reconstruction.shape}; "
            "compare at the original size (crop the reconstruction first)"
        )
    p, m = _metrics_8bit(original, reconstruction)
    p, m = np.asarray(p, np.float64), np.asarray(m, np.float64)
    if p.ndim == 0:
        p, m = float(p), float(m)
    return {"psnr": p, "ms_ssim": m, "ms_ssim_db": ms_ssim_db(m)}

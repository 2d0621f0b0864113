"""Pixel-wise metrics (MSE, PSNR) and the array conventions every metric here shares.

Images are `[..., H, W, C]` (NHWC with any number of leading batch axes). The leading axes of the
two arguments broadcast against each other (`_check_pair` returns the broadcast shape). Any dtype
is computed in float32, or wider for a wider float input, *without* rescaling: `max_val` must
describe the values given (255 for 8-bit images, 1 for images in [0, 1]).
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp
import numpy as np


def _as_float(x: Any) -> jnp.ndarray:
    x = jnp.asarray(x)
    if jnp.issubdtype(x.dtype, jnp.floating):
        return x.astype(jnp.promote_types(x.dtype, jnp.float32))
    return x.astype(jnp.float32)


def _check_pair(x: jnp.ndarray, y: jnp.ndarray, fn: str) -> tuple[int, ...]:
    """Validate two image batches; return their broadcast leading shape."""
    if x.ndim < 3 or y.ndim < 3:
        raise ValueError(f"{fn}: images must be [..., H, W, C], got shapes {x.shape} and {y.shape}")
    if x.shape[-3:] != y.shape[-3:]:
        raise ValueError(
            f"{fn}: the two images must have the same [H, W, C], got {x.shape} and {y.shape}"
        )
    try:
        return tuple(np.broadcast_shapes(x.shape[:-3], y.shape[:-3]))
    except ValueError:
        raise ValueError(
            f"{fn}: leading (batch) shapes do not broadcast: {x.shape} and {y.shape}"
        ) from None


def _broadcast_result(v: jnp.ndarray, lead: tuple[int, ...]) -> jnp.ndarray:
    """`[N]` (N = 1 or prod(lead)) → `lead`."""
    n = int(np.prod(lead, dtype=np.int64))
    return jnp.broadcast_to(v, (n,)).reshape(lead)


def mse(x: Any, y: Any) -> jnp.ndarray:
    """Mean squared error over H, W and C: mean((x − y)²). `[..., H, W, C]` → `[...]`."""
    x, y = _as_float(x), _as_float(y)
    lead = _check_pair(x, y, "mse")
    return jnp.broadcast_to(jnp.mean(jnp.square(x - y), axis=(-3, -2, -1)), lead)


def psnr(x: Any, y: Any, max_val: float = 255.0) -> jnp.ndarray:
    """Peak signal-to-noise ratio in dB, per image, as `tf.image.psnr`.

    PSNR = 20·log10(max_val) − 10·log10(MSE), with MSE the mean of (x − y)² over H, W and all
    C channels together ("PSNR-RGB"). Identical images give +inf.

    Args:
      x, y: images `[..., H, W, C]`.
      max_val: peak value, 255 for 8-bit images and 1 for images in [0, 1].

    Returns:
      `[...]` PSNR in dB.
    """
    m = mse(x, y)
    max_val = jnp.asarray(max_val, m.dtype)
    return 20.0 * jnp.log10(max_val) - 10.0 * jnp.log10(m)

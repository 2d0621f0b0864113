"""Padding images of any size to the codec's multiple of 64, and cropping back.

The padding is centred zero padding (CompressAI's evaluation convention): an ``H x W`` image gets
``(P_H - H) // 2`` rows on top and the rest at the bottom, ``P_H = ceil(H / 64) * 64``; columns
likewise. ``crop`` undoes it exactly.
"""

from __future__ import annotations

import jax.numpy as jnp

from mracnn_jax.models.compressor import DOWNSAMPLING


def padded_size(height: int, width: int, multiple: int = DOWNSAMPLING) -> tuple[int, int]:
    """Smallest multiples of ``multiple`` that hold ``height x width`` (at least one block)."""
    if height < 1 or width < 1:
        raise ValueError(f"image size must be at least 1x1, got {height}x{width}")
    return -(-height // multiple) * multiple, -(-width // multiple) * multiple


def padding_amounts(height: int, width: int, multiple: int = DOWNSAMPLING):
    """((top, bottom), (left, right)) for centred padding."""
    ph, pw = padded_size(height, width, multiple)
    top, left = (ph - height) // 2, (pw - width) // 2
    return (top, ph - height - top), (left, pw - width - left)


def pad_to_multiple(x, multiple: int = DOWNSAMPLING):
    """``[B, H, W, C]`` -> ``[B, P_H, P_W, C]``, centred zero padding."""
    (t, b), (l, r) = padding_amounts(x.shape[1], x.shape[2], multiple)
    return jnp.pad(x, ((0, 0), (t, b), (l, r), (0, 0)))


def crop(x, height: int, width: int, multiple: int = DOWNSAMPLING):
    """Inverse of ``pad_to_multiple`` for an original ``height x width``."""
    (t, _), (l, _) = padding_amounts(height, width, multiple)
    return x[:, t : t + height, l : l + width, :]

"""The estimated rate of a model output: the ideal code length of its latents.

For likelihoods p (a pytree of arrays `[B, ...]`, probabilities > 0, e.g. {'y', 'z'}):

  total_bits      = Σ_arrays Σ −log2 p                     (a scalar: the whole batch)
  bits_per_image  = Σ_arrays Σ_{all but axis 0} −log2 p    (`[B]`)
  bits_per_pixel  = total_bits / (B·H·W)                    (H × W the image size)

The sums are in float32 whatever the likelihoods' dtype (a bfloat16 model's included). The
training loss, the validation step and the models' forward passes all take their bpp from here.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp


def _leaves(likelihoods: Any) -> list[jnp.ndarray]:
    leaves = jax.tree_util.tree_leaves(likelihoods)
    if not leaves:
        raise ValueError("the model returned no likelihoods")
    return [-jnp.log2(p.astype(jnp.float32)) for p in leaves]


def total_bits(likelihoods: Any) -> jnp.ndarray:
    """Σ −log2 p over every array in the (nested) ``likelihoods`` pytree: a scalar."""
    return sum(jnp.sum(bits) for bits in _leaves(likelihoods))


def bits_per_image(likelihoods: Any) -> jnp.ndarray:
    """Σ −log2 p per batch element: `[B]` (every likelihood array is `[B, ...]`)."""
    return sum(jnp.sum(bits.reshape(bits.shape[0], -1), axis=1) for bits in _leaves(likelihoods))


def bits_per_pixel(likelihoods: Any, num_pixels) -> jnp.ndarray:
    """``total_bits(likelihoods) / num_pixels`` (num_pixels = B·H·W)."""
    return total_bits(likelihoods) / num_pixels

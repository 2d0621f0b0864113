"""Quantisation for training and inference.

* ``add_noise``: x + u, u ~ U(-1/2, 1/2), the differentiable proxy used for the rate terms in
  training (the density of x + u is the density of x convolved with a unit box).
* ``ste_round``: round(x) forward, identity gradient (straight-through estimator).
* ``quantize_around``: round(x - offset) + offset, what the coder transmits (as integers
  ``round(x - offset)``) and what the decoder reconstructs. With ``ste=True`` the rounding is
  straight-through, which is what the synthesis and LRP see during training (architecture.md §1.4).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp


def add_noise(x, rng):
    """``x + U(-1/2, 1/2)`` elementwise.

    The bits come from threefry in its partitionable form (JAX's default since 0.5, opt-in on
    0.4.34), so a key gives the same noise on every JAX version the project runs on, and a sharded
    ``x`` draws each shard's bits where it lives.
    """
    with jax.threefry_partitionable(True):
        u = jax.random.uniform(rng, x.shape, x.dtype, -0.5, 0.5)
    return x + u


def ste_round(x):
    """Round with a straight-through (identity) gradient."""
    return x + jax.lax.stop_gradient(jnp.round(x) - x)


def quantize_around(x, offset, ste: bool = False):
    """``round(x - offset) + offset``; straight-through rounding if ``ste``."""
    r = ste_round(x - offset) if ste else jnp.round(x - offset)
    return r + offset

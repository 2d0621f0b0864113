"""Small differentiable operations shared by layers and entropy models."""

from __future__ import annotations

import jax
import jax.numpy as jnp


@jax.custom_vjp
def lower_bound(x, bound):
    """``max(x, bound)`` whose gradient also passes below the bound when it points upwards.

    Forward: max(x, bound). Backward: the incoming gradient g passes where ``x >= bound`` or
    ``g < 0`` (a descent step would raise x), and is zero elsewhere. This is CompressAI's
    ``LowerBound``; it lets a parameter or activation that fell below the bound recover.
    """
    return jnp.maximum(x, bound)


def _lower_bound_fwd(x, bound):
    return jnp.maximum(x, bound), (x, bound)


def _lower_bound_bwd(residual, g):
    x, bound = residual
    pass_through = (x >= bound) | (g < 0)
    return jnp.where(pass_through, g, 0.0).astype(g.dtype), jnp.zeros_like(bound)


lower_bound.defvjp(_lower_bound_fwd, _lower_bound_bwd)

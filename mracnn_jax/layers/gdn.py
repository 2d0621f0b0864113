"""Generalized divisive normalization (Ballé et al. 2016), as CompressAI parameterises it.

For an NHWC input x with C channels,

    GDN:   y_i = x_i / sqrt(beta_i + sum_j gamma_ij x_j^2)
    IGDN:  y_i = x_i * sqrt(beta_i + sum_j gamma_ij x_j^2)

computed as a 1x1 convolution of x^2 with gamma (``gamma[i, j]``: output i, input j), plus beta.

beta [C] and gamma [C, C] are stored through the non-negative reparameterisation

    stored p = sqrt(max(v + pedestal, pedestal)),   pedestal = (2^-18)^2
    used   v = lower_bound(p, sqrt(v_min + pedestal))^2 - pedestal

with v_min = 1e-6 for beta and 0 for gamma. ``lower_bound`` is max(p, bound) with a gradient
that passes where p >= bound or where the gradient would push p upwards (as CompressAI's
``LowerBound``), so a parameter stuck at the bound can leave it. Initial values: beta = 1,
gamma = 0.1 * I, so GDN starts close to x / sqrt(1 + 0.1 x^2).
"""

from __future__ import annotations

import flax.linen as nn
import jax
import jax.numpy as jnp

from mracnn_jax.ops import lower_bound

REPARAM_OFFSET = 2.0**-18
PEDESTAL = REPARAM_OFFSET**2
BETA_MIN = 1e-6
GAMMA_INIT = 0.1


def reparameterize(value):
    """Stored form of a non-negative value."""
    return jnp.sqrt(jnp.maximum(value + PEDESTAL, PEDESTAL))


def deparameterize(stored, minimum: float):
    """Used form of a stored non-negative parameter, bounded below by ``minimum``."""
    bound = jnp.asarray((minimum + PEDESTAL) ** 0.5, stored.dtype)
    return lower_bound(stored, bound) ** 2 - PEDESTAL


class GDN(nn.Module):
    """GDN (``inverse=False``) or IGDN (``inverse=True``) over the last axis of ``[B, H, W, C]``.

    Parameters ``beta`` [C] and ``gamma`` [C, C] are stored reparameterised (see module doc);
    ``gamma[i, j]`` weights input channel j in the norm of output channel i (CompressAI's layout).
    """

    inverse: bool = False

    @nn.compact
    def __call__(self, x):
        c = x.shape[-1]
        beta_p = self.param("beta", lambda key, shape: reparameterize(jnp.ones(shape)), (c,))
        gamma_p = self.param(
            "gamma", lambda key, shape: reparameterize(GAMMA_INIT * jnp.eye(shape[0])), (c, c)
        )
        beta = deparameterize(beta_p, BETA_MIN)
        gamma = deparameterize(gamma_p, 0.0)
        norm = jnp.einsum("...j,ij->...i", x * x, gamma.astype(x.dtype)) + beta.astype(x.dtype)
        if self.inverse:
            return x * jnp.sqrt(norm)
        return x * jax.lax.rsqrt(norm)

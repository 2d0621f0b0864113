"""Gaussian conditional likelihood of a quantised latent (Ballé et al. 2018; CompressAI).

For a latent y with predicted mean mu and scale sigma, the probability of the unit bin around y is

    p(y) = Phi((1/2 - |y - mu|) / s) - Phi((-1/2 - |y - mu|) / s),   s = max(sigma, 0.11)

i.e. the density of N(mu, s^2) convolved with U(-1/2, 1/2), evaluated at y. Taking |y - mu|
puts both arguments on the left tail, where Phi is accurate in float32. The result is bounded
below by 1e-9 (so -log2 p <= 29.9 bits per element). Both bounds use the recovering gradient of
``mracnn_jax.ops.lower_bound``.

The coder (tensorflow-compression's ``LocationScaleIndexedEntropyModel`` with ``NoisyNormal``)
uses the same density with sigma snapped to a 64-entry table exp(linspace(ln 0.11, ln 256, 64)).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from mracnn_jax.ops import lower_bound

SCALE_BOUND = 0.11
LIKELIHOOD_BOUND = 1e-9
NUM_SCALES = 64
SCALE_MAX = 256.0


def standard_normal_cdf(x):
    """Phi(x) = erfc(-x / sqrt 2) / 2."""
    return 0.5 * jax.scipy.special.erfc(-x * (2.0**-0.5))


def gaussian_likelihood(y, mu, sigma, scale_bound=SCALE_BOUND, likelihood_bound=LIKELIHOOD_BOUND):
    """Probability of the unit bin centred on ``y`` under N(mu, max(sigma, bound)^2); same shapes."""
    s = lower_bound(sigma, jnp.asarray(scale_bound, sigma.dtype))
    v = jnp.abs(y - mu)
    p = standard_normal_cdf((0.5 - v) / s) - standard_normal_cdf((-0.5 - v) / s)
    return lower_bound(p, jnp.asarray(likelihood_bound, p.dtype))


def scale_table(num_scales: int = NUM_SCALES, lo: float = SCALE_BOUND, hi: float = SCALE_MAX):
    """The coder's scales: exp(linspace(ln lo, ln hi, num_scales))."""
    return np.exp(np.linspace(np.log(lo), np.log(hi), num_scales))


def scale_to_index(
    sigma, num_scales: int = NUM_SCALES, lo: float = SCALE_BOUND, hi: float = SCALE_MAX
):
    """Continuous position of sigma in the scale table: (ln max(sigma, lo) - ln lo) / step.

    The coder clips it to [0, num_scales - 1] and rounds it to the nearest table entry.
    """
    step = (np.log(hi) - np.log(lo)) / (num_scales - 1)
    return (jnp.log(jnp.maximum(sigma, lo)) - np.log(lo)) / step

"""A decoder whose floating point differs from the encoder's: the portability contract's test rig.

``perturbed(model, relative, seed)`` returns a copy of a ``LoadedModel`` whose decoder-side
entropy parameters carry relative noise, as another machine, backend or library version would
produce (only much larger than what they are seen to produce):

    means, scales of h_s(z^)     ->  v (1 + relative u)
    mu_i                         ->  mu_i (1 + relative u)
    sigma_i (before rounding)    ->  sigma_i (1 + relative u),  i.e. f_i + ln(1 + relative u) / step
    y^_i after the LRP           ->  y^_i (1 + relative u)

with u uniform in [-1, 1], drawn afresh for every call. The file's integers must still come out
the same (``coding.scale_agreement``'s tolerance is a relative sigma difference of 1.11e-4), and
the reconstruction may only differ by float noise. Used by the tests and by
``benchmarks/check_portability.py``.
"""

from __future__ import annotations

import copy

import jax.numpy as jnp
import numpy as np

from mracnn_jax.entropy.gaussian import NUM_SCALES, SCALE_BOUND, SCALE_MAX

_STEP = (np.log(SCALE_MAX) - np.log(SCALE_BOUND)) / (NUM_SCALES - 1)


def perturbed(model, relative: float = 1e-4, seed: int = 0):
    """A shallow copy of ``model`` (same parameters, same compiled pieces) with noisy outputs."""
    rng = np.random.default_rng(seed)
    noisy = copy.copy(model)

    def noise(shape) -> np.ndarray:
        return (1.0 + relative * rng.uniform(-1.0, 1.0, size=shape)).astype(np.float32)

    def hyper_synthesis(z_hat):
        means, scales = model.hyper_synthesis(z_hat)
        return (
            jnp.asarray(np.asarray(means) * noise(means.shape)),
            jnp.asarray(np.asarray(scales) * noise(scales.shape)),
        )

    def slice_parameters(i, means, scales, decoded):
        mu, f, support = model.slice_parameters(i, means, scales, decoded)
        f = np.asarray(f, np.float64) + np.log(noise(f.shape).astype(np.float64)) / _STEP
        return jnp.asarray(np.asarray(mu) * noise(mu.shape)), f.astype(np.float32), support

    def refine(i, mean_support, mu, symbols):
        y_tilde, y_hat = model.refine(i, mean_support, mu, symbols)
        return y_tilde, jnp.asarray(np.asarray(y_hat) * noise(y_hat.shape))

    noisy.hyper_synthesis = hyper_synthesis
    noisy.slice_parameters = slice_parameters
    noisy.refine = refine
    return noisy

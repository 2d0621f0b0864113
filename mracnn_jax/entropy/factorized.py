"""Deep factorized density for the hyper-latent z (Ballé et al. 2018, appendix 6.1).

Each of the C channels has its own univariate, monotone cumulative function built from K layers
(filters f = (1, f_1, ..., f_{K-1}, 1), default (1, 3, 3, 3, 3, 1)):

    l_0 = x
    l_{k+1} = softplus(H_k) l_k + b_k                     H_k: [C, f_{k+1}, f_k], b_k: [C, f_{k+1}, 1]
    l_{k+1} += tanh(a_k) * tanh(l_{k+1})                   for all but the last layer, a_k like b_k
    CDF(x) = sigmoid(l_K(x))

softplus(H) > 0 and tanh(a) > -1 make every layer increasing, so the CDF is monotone.
The likelihood of the unit bin around v is CDF(v + 1/2) - CDF(v - 1/2), evaluated on the side of
the median where the sigmoids are far from 1 (sign flip) for float accuracy, bounded below by 1e-9.
The flip is -1 where l_K(v - 1/2) + l_K(v + 1/2) > 0 and +1 otherwise, never 0: CompressAI's
-sign(...) loses the whole mass of a bin centred exactly on the median (the sum is then 0).

Parameter names (``matrix_k``, ``bias_k``, ``factor_k``) and shapes are those of
tensorflow-compression's ``DeepFactorized`` and CompressAI's ``EntropyBottleneck``
(``_matrix{k}``, ``_bias{k}``, ``_factor{k}``), so the coder can build its tables from them.
Initialisation as both: scale = init_scale^(1 / K), H_k = log(expm1(1 / scale / f_{k+1})),
b_k ~ U(-1/2, 1/2), a_k = 0.

The quantisation offset of z is the median of each channel's density (the point where the
cumulative logit is 0), found by bisection (``logit_quantiles``, the one quantile search of this
density: the coding tables' tails and the export to CompressAI use it too); CompressAI learns the
same point as a "quantile" parameter with an auxiliary loss, which we do not need.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from mracnn_jax.layers import init
from mracnn_jax.ops import lower_bound

LIKELIHOOD_BOUND = 1e-9


def logits_cumulative(params: dict, x, num_layers: int):
    """Cumulative logits ``l_K(x)`` for ``x`` of shape ``[C, 1, N]`` -> ``[C, 1, N]``."""
    logits = x
    for k in range(num_layers):
        matrix = jax.nn.softplus(params[f"matrix_{k}"])
        logits = jnp.matmul(matrix, logits) + params[f"bias_{k}"]
        if k < num_layers - 1:
            logits = logits + jnp.tanh(params[f"factor_{k}"]) * jnp.tanh(logits)
    return logits


def logit_quantiles(
    params: dict, targets, num_layers: int, iterations: int = 64, bound: float = 1e4
) -> jnp.ndarray:
    """Per channel c and target t, the point ``x`` with ``l_K(x) = t``: ``[C, T]`` (float32).

    ``targets [T]`` are cumulative logits: ``t = ln(q / (1 - q))`` is the q-quantile of the density
    (``t = 0`` its median). Bisection on ``[-bound, bound]``: ``iterations`` halvings of
    ``[lo, hi]``, keeping ``l_K(lo) <= t < l_K(hi)``, then the midpoint. Once ``lo`` and ``hi``
    are adjacent float32 numbers the bracket stops moving; with the defaults that happens for
    ``|x|`` above about 1e-8, nearer 0 the float32 spacing is finer and each halving still counts,
    so callers whose results are stored keep their iteration count (the medians: 60). Not
    differentiated.

    The one quantile search of the factorized density: the quantisation offsets
    (``channel_medians``), the z coding tables' tails (``coding.tables``) and CompressAI's
    ``quantiles`` on export (``convert``) all call it.
    """
    params = jax.lax.stop_gradient(params)
    c = params["matrix_0"].shape[0]
    targets = jnp.asarray(targets, jnp.float32).reshape(1, 1, -1)
    t = targets.shape[-1]
    lo = jnp.full((c, 1, t), -bound, jnp.float32)
    hi = jnp.full((c, 1, t), bound, jnp.float32)

    def step(_, bounds):
        lo, hi = bounds
        mid = 0.5 * (lo + hi)
        above = logits_cumulative(params, mid, num_layers) > targets
        return jnp.where(above, lo, mid), jnp.where(above, mid, hi)

    lo, hi = jax.lax.fori_loop(0, iterations, step, (lo, hi))
    return (0.5 * (lo + hi)).reshape(c, t)


def channel_medians(params: dict, num_layers: int, iterations: int = 60, bound: float = 1e4):
    """Per-channel median ``m`` with ``l_K(m) = 0``: ``[C]`` (``logit_quantiles`` at 0, 60
    halvings).

    Not differentiated (the offset is a constant for the gradient, as CompressAI's medians are).
    """
    zero = jnp.zeros((1,), jnp.float32)
    return logit_quantiles(params, zero, num_layers, iterations, bound)[:, 0]


class FactorizedPrior(nn.Module):
    """Deep factorized density over the last axis (channels) of ``[..., C]`` latents."""

    channels: int
    filters: Sequence[int] = (3, 3, 3, 3)
    init_scale: float = 10.0

    def setup(self):
        dims = (1,) + tuple(self.filters) + (1,)
        self.num_layers = len(dims) - 1
        scale = self.init_scale ** (1.0 / self.num_layers)
        c = self.channels
        params = {}
        for k in range(self.num_layers):
            matrix_init = float(np.log(np.expm1(1.0 / scale / dims[k + 1])))
            params[f"matrix_{k}"] = self.param(
                f"matrix_{k}", nn.initializers.constant(matrix_init), (c, dims[k + 1], dims[k])
            )
            params[f"bias_{k}"] = self.param(
                f"bias_{k}",
                init.uniform(-0.5, 0.5),
                (c, dims[k + 1], 1),
            )
            if k < self.num_layers - 1:
                params[f"factor_{k}"] = self.param(
                    f"factor_{k}", nn.initializers.zeros, (c, dims[k + 1], 1)
                )
        self.density_params = params

    def _to_channel_rows(self, z):
        c = z.shape[-1]
        return jnp.moveaxis(z, -1, 0).reshape(c, 1, -1)

    def _from_channel_rows(self, rows, shape):
        return jnp.moveaxis(rows.reshape((shape[-1],) + tuple(shape[:-1])), 0, -1)

    def cdf(self, z):
        """CDF of each channel's density at ``z`` ``[..., C]`` (no noise)."""
        rows = self._to_channel_rows(z)
        return self._from_channel_rows(
            jax.nn.sigmoid(logits_cumulative(self.density_params, rows, self.num_layers)), z.shape
        )

    def likelihood(self, z):
        """P(unit bin around z) = CDF(z + 1/2) - CDF(z - 1/2), bounded below by 1e-9."""
        rows = self._to_channel_rows(z)
        lower = logits_cumulative(self.density_params, rows - 0.5, self.num_layers)
        upper = logits_cumulative(self.density_params, rows + 0.5, self.num_layers)
        # -sign(lower + upper), but never 0: where the bin straddles the median exactly
        # (lower == -upper) both sides give the same difference, and jnp.sign would give p = 0.
        sign = jax.lax.stop_gradient(jnp.where(lower + upper > 0, -1.0, 1.0).astype(lower.dtype))
        p = jnp.abs(jax.nn.sigmoid(sign * upper) - jax.nn.sigmoid(sign * lower))
        p = lower_bound(p, jnp.asarray(LIKELIHOOD_BOUND, p.dtype))
        return self._from_channel_rows(p, z.shape)

    def medians(self):
        """Per-channel medians ``[C]``, the quantisation offsets of z."""
        return channel_medians(self.density_params, self.num_layers)

    def __call__(self, z):
        return self.likelihood(z)

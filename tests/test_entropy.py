"""Entropy-model maths: factorized prior, Gaussian conditional, quantisation, channel context."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mracnn_jax.entropy.factorized import (
    FactorizedPrior,
    channel_medians,
    logit_quantiles,
    logits_cumulative,
)
from mracnn_jax.entropy.gaussian import gaussian_likelihood, scale_table, scale_to_index
from mracnn_jax.entropy.quantize import add_noise, quantize_around, ste_round


@pytest.fixture(scope="module")
def prior():
    module = FactorizedPrior(4)
    params = module.init(jax.random.PRNGKey(0), jnp.zeros((1, 2, 2, 4)))
    # move away from the symmetric initialisation so the test sees a non-trivial density
    params = jax.tree_util.tree_map(
        lambda p: p + 0.3 * jax.random.normal(jax.random.PRNGKey(1), p.shape), params
    )
    return module, params


def test_factorized_parameter_count_and_names(prior):
    _module, params = prior
    p = params["params"]
    assert sorted(p) == sorted(
        [f"matrix_{k}" for k in range(5)]
        + [f"bias_{k}" for k in range(5)]
        + [f"factor_{k}" for k in range(4)]
    )
    assert p["matrix_0"].shape == (4, 3, 1) and p["matrix_4"].shape == (4, 1, 3)
    full = FactorizedPrior(192).init(jax.random.PRNGKey(0), jnp.zeros((1, 1, 1, 192)))
    assert (
        sum(v.size for v in jax.tree_util.tree_leaves(full)) == 11_712 - 576
    )  # CompressAI minus quantiles


def test_factorized_cdf_is_monotone_and_density_integrates_to_one(prior):
    module, params = prior
    grid = jnp.linspace(-400.0, 400.0, 80001)  # step 0.01
    z = jnp.broadcast_to(grid[:, None], (grid.size, 4))
    cdf = np.asarray(module.apply(params, z, method=module.cdf), np.float64)
    assert np.all(np.diff(cdf, axis=0) >= -1e-7)
    assert cdf.min() >= 0.0 and cdf.max() <= 1.0
    # density of channel c = d CDF_c / d z_c (channels are independent)
    cdf_sum = lambda row: jnp.sum(module.apply(params, row[None], method=module.cdf))
    density = np.asarray(jax.vmap(jax.grad(cdf_sum))(z), np.float64)
    assert np.all(density >= 0.0)
    trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy 2 renamed it
    integral = trapezoid(density, np.asarray(grid, np.float64), axis=0)
    np.testing.assert_allclose(integral, 1.0, atol=1e-3)


def test_factorized_likelihood_is_bin_mass_and_sums_to_one(prior):
    module, params = prior
    ints = jnp.arange(-200.0, 201.0)
    z = jnp.broadcast_to(ints[:, None], (ints.size, 4))
    p = np.asarray(module.apply(params, z), np.float64)
    np.testing.assert_allclose(p.sum(0), 1.0, atol=1e-4)
    cdf = lambda v: np.asarray(module.apply(params, v, method=module.cdf), np.float64)
    np.testing.assert_allclose(p, np.maximum(cdf(z + 0.5) - cdf(z - 0.5), 1e-9), atol=1e-6)


def _odd_prior(channels=3):
    """A prior with zero biases and factors, and the mass of the bin centred on its median 0.

    l_K is then odd (a product of matrices times x), so the bin around the median 0 has
    l_K(-1/2) == -l_K(1/2) exactly and mass 2 sigmoid(l_K(1/2)) - 1 (float64, from l_K(1/2)).
    """
    module = FactorizedPrior(channels)
    params = module.init(jax.random.PRNGKey(0), jnp.zeros((1, 1, 1, channels)))
    params = jax.tree_util.tree_map_with_path(
        lambda path, v: v if "matrix" in jax.tree_util.keystr(path) else jnp.zeros_like(v), params
    )
    p = params["params"]
    logit = lambda x: np.asarray(logits_cumulative(p, jnp.full((channels, 1, 1), x), 5)).ravel()
    upper, lower = logit(0.5).astype(np.float64), logit(-0.5).astype(np.float64)
    np.testing.assert_array_equal(lower, -upper)  # the case itself, exactly
    mass = 2.0 / (1.0 + np.exp(-upper)) - 1.0
    assert np.all(mass > 0.01)
    return module, params, mass


def test_factorized_likelihood_keeps_the_mass_of_a_bin_centred_on_the_median():
    """-sign(lower + upper) is 0 when the bin straddles the median exactly; the likelihood must
    still be CDF(1/2) - CDF(-1/2), not the 1e-9 floor (it was, in XLA's default optimisation)."""
    module, params, mass = _odd_prior()
    for fn in (lambda z: module.apply(params, z), jax.jit(lambda z: module.apply(params, z))):
        got = np.asarray(fn(jnp.zeros((1, 1, 1, 3))), np.float64).ravel()
        np.testing.assert_allclose(got, mass, rtol=1e-5)


def test_torch_factorized_likelihood_keeps_the_mass_of_a_bin_centred_on_the_median():
    torch = pytest.importorskip("torch")
    from mracnn_jax.torch_models.entropy import EntropyBottleneck

    _module, params, mass = _odd_prior()
    twin = EntropyBottleneck(3)
    with torch.no_grad():
        for name, value in params["params"].items():
            kind, k = name.split("_")
            getattr(twin, f"_{kind}{k}").copy_(torch.from_numpy(np.array(value)))
        got = twin.likelihood(torch.zeros(3, 1, 1)).numpy().ravel()
    np.testing.assert_allclose(got, mass, rtol=1e-5)


def test_factorized_medians_are_the_half_points(prior):
    module, params = prior
    m = module.apply(params, method=module.medians)
    cdf = module.apply(params, jnp.diag(m)[None].reshape(4, 4) * 0 + m[None, :], method=module.cdf)
    np.testing.assert_allclose(cdf[0], 0.5, atol=1e-5)


def test_factorized_quantiles_are_the_cdf_inverse(prior):
    """logit_quantiles inverts the cumulative logit: l_K(x_t) = t (CDF(x_t) = sigmoid(t)) to float32
    precision, x_t increasing in t; its t = 0 column is the medians."""
    module, params = prior
    p = params["params"]
    t = np.log(2.0 / 1e-9 - 1.0)  # CompressAI's quantile targets (tail mass 1e-9)
    targets = np.asarray([-t, -2.0, 0.0, 0.5, t], np.float32)
    x = np.asarray(logit_quantiles(p, targets, 5))  # [C, T]
    assert x.shape == (4, 5) and x.dtype == np.float32
    assert np.all(np.diff(x, axis=1) > 0)
    logits = np.asarray(logits_cumulative(p, jnp.asarray(x)[:, None, :], 5))[:, 0, :]
    above = np.asarray(logits_cumulative(p, jnp.asarray(np.nextafter(x, np.inf))[:, None, :], 5))
    assert np.all(logits <= targets + 1e-3) and np.all(above[:, 0, :] > targets - 1e-3)
    cdf = module.apply(params, jnp.asarray(x.T), method=module.cdf)  # [T, C]
    expected = np.broadcast_to(1 / (1 + np.exp(-targets[1:4])), (4, 3))
    np.testing.assert_allclose(np.asarray(cdf)[1:4].T, expected, atol=1e-5)
    medians = np.asarray(channel_medians(p, 5))
    np.testing.assert_allclose(x[:, 2], medians, rtol=0, atol=1e-6)


def test_gaussian_likelihood_matches_closed_form():
    rng = np.random.default_rng(0)
    y = rng.standard_normal(1000) * 5
    mu = rng.standard_normal(1000)
    sigma = np.exp(rng.uniform(np.log(0.05), np.log(50), 1000))
    s = np.maximum(sigma, 0.11)
    phi = lambda t: 0.5 * np.vectorize(math.erfc)(-t / math.sqrt(2))
    ref = np.maximum(phi((y - mu + 0.5) / s) - phi((y - mu - 0.5) / s), 1e-9)
    got = gaussian_likelihood(
        jnp.asarray(y, jnp.float32), jnp.asarray(mu, jnp.float32), jnp.asarray(sigma, jnp.float32)
    )
    np.testing.assert_allclose(got, ref, rtol=2e-3, atol=1e-7)
    # the bin masses of a whole grid sum to one
    grid = jnp.arange(-100.0, 101.0) + 0.3
    total = jnp.sum(gaussian_likelihood(grid, 0.3, jnp.full_like(grid, 7.0)))
    assert float(total) == pytest.approx(1.0, abs=1e-5)


def test_scale_index_hits_table_entries():
    table = scale_table()
    assert table[0] == pytest.approx(0.11) and table[-1] == pytest.approx(256.0)
    np.testing.assert_allclose(
        scale_to_index(jnp.asarray(table, jnp.float32)), np.arange(64), atol=1e-3
    )
    assert float(scale_to_index(jnp.asarray(0.01))) == 0.0


def test_quantisation_forms():
    x = jnp.asarray([0.2, 0.7, -1.6, 2.5])
    np.testing.assert_array_equal(quantize_around(x, 0.25), jnp.round(x - 0.25) + 0.25)
    assert jnp.all(jax.grad(lambda v: jnp.sum(ste_round(v)))(x) == 1.0)
    noisy = add_noise(jnp.zeros(10000), jax.random.PRNGKey(0))
    assert float(noisy.min()) >= -0.5 and float(noisy.max()) <= 0.5
    assert abs(float(noisy.mean())) < 0.02

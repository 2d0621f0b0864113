"""The rate–distortion objective (models/objective.py) against a hand computation in float64, and
its MS-SSIM term against the evaluation's metric."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mracnn_jax.entropy import rate
from mracnn_jax.metrics import ms_ssim
from mracnn_jax.models import objective


def _fake_out(rng, b=2, h=64, w=64):
    k1, k2, k3 = jax.random.split(rng, 3)
    return {
        "x_hat": jax.random.uniform(k1, (b, h, w, 3)),
        "likelihoods": {
            "y": jax.random.uniform(k2, (b, h // 16, w // 16, 8), minval=0.01),
            "z": jax.random.uniform(k3, (b, h // 64, w // 64, 4), minval=0.01),
        },
    }


def test_loss_mse_against_hand_computation():
    x = jax.random.uniform(jax.random.PRNGKey(0), (2, 64, 64, 3))
    out = _fake_out(jax.random.PRNGKey(1))
    loss, m = objective.rate_distortion_loss(x, out, lmbda=0.013, metric="mse")
    xn, xh = np.asarray(x, np.float64), np.asarray(out["x_hat"], np.float64)
    bits = sum(-np.log2(np.asarray(v, np.float64)).sum() for v in out["likelihoods"].values())
    bpp = bits / (2 * 64 * 64)
    mse = np.mean((xn - xh) ** 2)
    np.testing.assert_allclose(float(m["bpp"]), bpp, rtol=1e-5)
    np.testing.assert_allclose(float(m["mse"]), mse, rtol=1e-5)
    np.testing.assert_allclose(float(m["psnr"]), 10 * np.log10(1 / mse), rtol=1e-5)
    np.testing.assert_allclose(float(loss), 0.013 * 255**2 * mse + bpp, rtol=1e-5)
    assert float(m["loss"]) == float(loss)
    np.testing.assert_allclose(
        np.asarray(rate.bits_per_image(out["likelihoods"])).sum(), bits, rtol=1e-5
    )


def test_loss_ms_ssim_uses_evaluation_metric():
    x = jax.random.uniform(jax.random.PRNGKey(0), (2, 192, 192, 3))
    out = _fake_out(jax.random.PRNGKey(1), h=192, w=192)
    out["x_hat"] = jnp.clip(x + 0.05 * out["x_hat"], 0, 1)
    loss, m = objective.rate_distortion_loss(x, out, lmbda=8.0, metric="ms-ssim")
    want_ssim = float(jnp.mean(ms_ssim(out["x_hat"], x, max_val=1.0)))
    np.testing.assert_allclose(float(m["ms_ssim"]), want_ssim, rtol=1e-6)
    np.testing.assert_allclose(float(loss), 8.0 * (1 - want_ssim) + float(m["bpp"]), rtol=1e-6)
    with pytest.raises(ValueError, match="loss metric"):
        objective.rate_distortion_loss(x, out, lmbda=1.0, metric="psnr")

"""Tests of mracnn_jax.metrics: PSNR, SSIM and MS-SSIM against TensorFlow, MS-SSIM's gradient."""

from __future__ import annotations

import os
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mracnn_jax import metrics
from mracnn_jax.evaluation import anchors

KODAK = Path(__file__).resolve().parents[2] / "shared" / "data" / "kodak"

try:  # TensorFlow is only the reference here; the metrics never import it.
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import tensorflow as tf

    tf.config.set_visible_devices([], "GPU")
except (ImportError, AttributeError, RuntimeError):  # absent or broken install
    tf = None
needs_tf = pytest.mark.skipif(
    tf is None, reason="tensorflow not importable: no reference for the metrics"
)

# metrics.ms_ssim and metrics.ssim are jitted already; the tests reuse a few shapes so that
# the file stays well under a minute (each new shape is a new XLA compilation).


def _kodak(i: int) -> np.ndarray:
    path = KODAK / f"kodim{i:02d}.png"
    if not path.exists():
        pytest.skip(f"Kodak image not found at {path}")
    return anchors.load_rgb(path)


def _noisy(rng, x, sigma, lo=0.0, hi=1.0):
    return np.clip(x + sigma * rng.standard_normal(x.shape), lo, hi).astype(x.dtype)


# --------------------------------------------------------------------------- metrics vs TF


@needs_tf
def test_ssim_and_psnr_match_tf_random_float():
    """Random [0, 1] pairs, a batch of 2, odd width, 161 rows (the 5-scale minimum)."""
    rng = np.random.default_rng(0)
    x = rng.random((2, 161, 175, 3), dtype=np.float32)
    y = _noisy(rng, x, 0.08)
    ref = tf.image.ssim_multiscale(x, y, 1.0).numpy()
    np.testing.assert_allclose(metrics.ms_ssim(x, y, 1.0), ref, atol=1e-4, rtol=0)
    np.testing.assert_allclose(
        metrics.psnr(x, y, 1.0), tf.image.psnr(x, y, 1.0).numpy(), atol=1e-4, rtol=0
    )
    np.testing.assert_allclose(
        metrics.ssim(x, y, 1.0), tf.image.ssim(x, y, 1.0).numpy(), atol=1e-4, rtol=0
    )
    # One image broadcast against a batch equals TF on the explicitly repeated batch.
    ref_b = tf.image.ssim_multiscale(np.broadcast_to(x[0], y.shape), y, 1.0).numpy()
    np.testing.assert_allclose(metrics.ms_ssim(x[0], y, 1.0), ref_b, atol=1e-4, rtol=0)


@needs_tf
def test_ssim_and_psnr_match_tf_kodak_uint8():
    """Real 8-bit pairs: Kodak crops (257x341, odd) through JPEG, max_val 255."""
    xs = np.stack([_kodak(i)[:257, :341] for i in (1, 7)])
    ys = np.stack([anchors.encode_decode(x, "jpeg", q).decoded for x, q in zip(xs, (10, 40))])
    ref_ms = tf.image.ssim_multiscale(tf.constant(xs), tf.constant(ys), 255).numpy()
    ref_p = tf.image.psnr(tf.constant(xs), tf.constant(ys), 255).numpy()
    m = metrics.image_metrics(xs, ys)
    np.testing.assert_allclose(m["ms_ssim"], ref_ms, atol=1e-4, rtol=0)
    np.testing.assert_allclose(m["psnr"], ref_p, atol=1e-4, rtol=0)
    np.testing.assert_allclose(m["ms_ssim_db"], -10 * np.log10(1 - m["ms_ssim"]))
    assert m["psnr"][0] < m["psnr"][1] and ref_ms[0] < 0.99


def test_ms_ssim_small_image_rule():
    """Below 161 px TF fails (InvalidArgumentError); we raise a ValueError naming the minimum."""
    rng = np.random.default_rng(0)
    assert metrics.min_size_for_ms_ssim() == 161
    assert metrics.min_size_for_ms_ssim(num_scales=3) == 41
    x = rng.random((160, 200, 3), dtype=np.float32)
    with pytest.raises(ValueError, match="at least 161"):
        metrics.ms_ssim(x, x, 1.0)
    if tf is not None:
        with pytest.raises(tf.errors.InvalidArgumentError):
            tf.image.ssim_multiscale(x, x, 1.0)


# --------------------------------------------------------------------------- metrics, no TF


def test_ms_ssim_gradient_is_finite_and_db():
    rng = np.random.default_rng(1)
    x = rng.random((161, 175, 3), dtype=np.float32)
    # y anti-correlated with x at fine scales: some CS terms are negative and relu'd to 0.
    grad = jax.jit(jax.grad(lambda a, b: metrics.ms_ssim(a, b, 1.0)))
    g = np.asarray(grad(x, _noisy(rng, x, 0.1)))
    assert np.all(np.isfinite(g)) and np.any(g != 0)
    assert float(metrics.ms_ssim(x, 1.0 - x, 1.0)) == 0.0  # relu'd negative CS: a flat zero
    assert np.all(np.asarray(grad(x, 1.0 - x)) == 0.0)  # with a zero, not NaN, gradient
    assert metrics.ms_ssim_db(0.99) == pytest.approx(20.0)
    assert metrics.ms_ssim_db(0.9) == pytest.approx(10.0)
    assert float(metrics.ms_ssim_db(jnp.float32(0.9))) == pytest.approx(10.0, rel=1e-5)


# --------------------------------------------------------------------------- vs pytorch_msssim


def test_ms_ssim_against_pytorch_msssim_compressais_convention():
    """CompressAI scores MS-SSIM with `pytorch_msssim.ms_ssim` (data_range 255 on rounded
    8-bit images). On Kodak's sizes (even at every scale) it is our MS-SSIM up to float32
    rounding; docs/evaluation.md measured |Δ| ≤ 9.4e-6 (≤ 3.3e-3 dB) on all 24 images at JPEG
    qualities 10, 30 and 75. On odd sizes the 2x2 pooling differs (theirs zero-pads both
    sides, counting the zeros; ours repeats the last row/column): up to 0.015 (0.62 dB) on
    Kodak cropped to 767x511."""
    torch = pytest.importorskip("torch")
    pt = pytest.importorskip("pytorch_msssim")

    def theirs(xs, ys):
        def t(a):
            return torch.from_numpy(np.ascontiguousarray(a)).permute(0, 3, 1, 2).float()

        return pt.ms_ssim(t(xs), t(ys), data_range=255.0, size_average=False).numpy()

    xs = np.stack([_kodak(i) for i in (1, 3, 5, 13)])  # 512x768 each
    xs = np.concatenate([xs, xs])
    ys = np.stack(
        [anchors.encode_decode(x, "jpeg", q).decoded for x, q in zip(xs, [10] * 4 + [75] * 4)]
    )
    ours = np.asarray(metrics.ms_ssim(xs, ys, 255.0), np.float64)
    ref = theirs(xs, ys).astype(np.float64)
    assert np.max(np.abs(ours - ref)) <= 2e-5
    assert np.max(np.abs(metrics.ms_ssim_db(ours) - metrics.ms_ssim_db(ref))) <= 5e-3

    x, y = xs[:1, :-1, :-1], ys[:1, :-1, :-1]  # 511x767, quality 10
    diff = abs(float(metrics.ms_ssim(x, y, 255.0)[0]) - float(theirs(x, y)[0]))
    assert 1e-4 < diff <= 0.02

"""Tests of mracnn_jax.evaluation: metrics against TensorFlow, bpp, BD-rate, anchors, files."""

from __future__ import annotations

import json
import os
from fractions import Fraction
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mracnn_jax.evaluation import anchors, bd_rate, metrics, plots, results

REPO = Path(__file__).resolve().parents[1]
KODAK = REPO.parent / "shared" / "data" / "kodak"
SHARED_PUBLISHED = REPO.parent / "shared" / "data" / "published"

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
CROP = (slice(64, 64 + 192), slice(96, 96 + 256))  # 192x256, the anchor tests' crop


def _kodak(i: int) -> np.ndarray:
    path = KODAK / f"kodim{i:02d}.png"
    if not path.exists():
        pytest.skip(f"Kodak image not found at {path}")
    return anchors.load_rgb(path)


def _noisy(rng, x, sigma, lo=0.0, hi=1.0):
    return np.clip(x + sigma * rng.standard_normal(x.shape), lo, hi).astype(x.dtype)


# --------------------------------------------------------------------------- rate


def test_bpp_is_file_bytes_exactly(tmp_path):
    image = _kodak(3)[CROP]
    q = anchors.DEFAULT_QUALITIES["jpeg"][3]
    coded = anchors.encode_decode(image, "jpeg", q)
    f = tmp_path / "x.jpg"
    f.write_bytes(coded.data)
    size = os.path.getsize(f)
    h, w = image.shape[:2]
    assert metrics.bpp_from_file_size(size, h, w) == float(Fraction(8 * size, h * w))
    # The records of the default sweep use the same byte count.
    records, means = anchors.run_codec("jpeg", [image])
    (rec,) = [r for r in records if r["quality"] == q]
    assert rec["num_bytes"] == size
    assert rec["bpp"] == float(Fraction(8 * size, h * w))
    assert [m["bpp"] for m in means if m["quality"] == q] == [rec["bpp"]]
    with pytest.raises(TypeError):
        metrics.bpp_from_file_size(10.5, h, w)


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


# --------------------------------------------------------------------------- BD-rate


def _pchip_slopes(x, y):
    """Fritsch–Carlson PCHIP derivatives with the 3-point shape-preserving end rule."""
    h, m = np.diff(x), np.diff(y) / np.diff(x)
    n = len(x)
    if n == 2:
        return np.array([m[0], m[0]])
    d = np.zeros(n)
    for k in range(1, n - 1):
        if m[k - 1] * m[k] > 0:
            w1, w2 = 2 * h[k] + h[k - 1], h[k] + 2 * h[k - 1]
            d[k] = (w1 + w2) / (w1 / m[k - 1] + w2 / m[k])

    def end(h0, h1, m0, m1):
        e = ((2 * h0 + h1) * m0 - h0 * m1) / (h0 + h1)
        if np.sign(e) != np.sign(m0):
            return 0.0
        if np.sign(m0) != np.sign(m1) and abs(e) > 3 * abs(m0):
            return 3 * m0
        return e

    d[0] = end(h[0], h[1], m[0], m[1])
    d[-1] = end(h[-1], h[-2], m[-1], m[-2])
    return d


def _hermite_integral(x, y, lo, hi):
    """∫_lo^hi of the PCHIP through (x, y), by 3-point Gauss–Legendre per piece (exact for cubics)."""
    d = _pchip_slopes(x, y)
    gx, gw = np.polynomial.legendre.leggauss(3)
    total = 0.0
    for k in range(len(x) - 1):
        a, b = max(lo, x[k]), min(hi, x[k + 1])
        if b <= a:
            continue
        t_nodes = (a + b) / 2 + (b - a) / 2 * gx
        hk = x[k + 1] - x[k]
        s = (t_nodes - x[k]) / hk
        h00, h10 = 2 * s**3 - 3 * s**2 + 1, s**3 - 2 * s**2 + s
        h01, h11 = -2 * s**3 + 3 * s**2, s**3 - s**2
        f = h00 * y[k] + h10 * hk * d[k] + h01 * y[k + 1] + h11 * hk * d[k + 1]
        total += (b - a) / 2 * np.sum(gw * f)
    return total


def _own_bd_rate(ra, da, rt, dt):
    ia, it = np.argsort(da), np.argsort(dt)
    da, la = np.asarray(da)[ia], np.log10(ra)[ia]
    dt, lt = np.asarray(dt)[it], np.log10(rt)[it]
    lo, hi = max(da[0], dt[0]), min(da[-1], dt[-1])
    avg = (_hermite_integral(dt, lt, lo, hi) - _hermite_integral(da, la, lo, hi)) / (hi - lo)
    return (10**avg - 1) * 100


# The usage example of the bjontegaard package's README (x265 presets, 4 points each).
README_ANCHOR = ([9487.76, 4593.60, 2486.44, 1358.24], [40.037, 38.615, 36.845, 34.851])
README_TEST = ([9787.80, 4469.00, 2451.52, 1356.24], [40.121, 38.651, 36.970, 34.987])


def test_bd_rate_self_zero_and_scaled_rate():
    wacnn = json.loads((results.published_dir() / "wacnn.json").read_text())
    r, d = wacnn["results"]["bpp"], wacnn["results"]["psnr-rgb"]
    assert abs(bd_rate.bd_rate(r, d, r, d)) < 1e-9
    assert bd_rate.bd_rate(r, d, [0.9 * v for v in r], d) == pytest.approx(-10.0, abs=0.01)
    assert bd_rate.bd_rate(*README_ANCHOR, *README_ANCHOR) == pytest.approx(0.0, abs=1e-9)
    scaled = [0.9 * v for v in README_ANCHOR[0]]
    assert bd_rate.bd_rate(*README_ANCHOR, scaled, README_ANCHOR[1]) == pytest.approx(
        -10.0, abs=0.01
    )


def test_bd_rate_worked_examples():
    # 1. Closed form: straight lines PSNR = a + 10·log10(bpp), the test 0.5 dB higher.
    # Then log10 rate differs by −0.05 everywhere: BD-rate = 10^−0.05 − 1 = −10.8749 %.
    rates = np.array([0.1, 0.2, 0.4, 0.8, 1.6])
    psnr_a = 30 + 10 * np.log10(rates)
    got = bd_rate.bd_rate(rates, psnr_a, rates * 1.1, psnr_a + 0.5 + 10 * np.log10(1.1))
    assert got == pytest.approx((10**-0.05 - 1) * 100, abs=1e-6)
    assert (10**-0.05 - 1) * 100 == pytest.approx(-10.8749, abs=1e-4)
    # 2. The package README data: our own PCHIP integration and the package agree, −4.4175 %.
    own = _own_bd_rate(*README_ANCHOR, *README_TEST)
    pkg = bd_rate.bd_rate(*README_ANCHOR, *README_TEST)
    assert pkg == pytest.approx(own, abs=1e-9)
    assert pkg == pytest.approx(-4.4175, abs=1e-4)
    # Point order does not matter.
    rev = bd_rate.bd_rate(*(v[::-1] for v in README_ANCHOR), *README_TEST)
    assert rev == pytest.approx(pkg, abs=1e-12)


def test_bd_rate_input_errors():
    with pytest.raises(ValueError, match="at least 2"):
        bd_rate.bd_rate([1.0], [30.0], [1.0, 2.0], [30.0, 32.0])
    with pytest.raises(ValueError, match="increase strictly"):
        bd_rate.bd_rate([0.1, 0.2, 0.4], [30.0, 29.0, 33.0], [0.1, 0.2], [30.0, 32.0])
    with pytest.raises(ValueError, match="positive"):
        bd_rate.bd_rate([0.0, 0.2], [30.0, 31.0], [0.1, 0.2], [30.0, 32.0])
    with pytest.raises(ValueError, match="do not overlap"):
        bd_rate.bd_rate([0.1, 0.2], [20.0, 21.0], [0.1, 0.2], [30.0, 32.0])


# --------------------------------------------------------------------------- anchors


def test_anchor_codecs_available_and_monotone():
    avail = anchors.available_codecs()
    assert all(avail.values()), f"missing Pillow codecs: {[c for c, ok in avail.items() if not ok]}"
    crops = [_kodak(i)[CROP] for i in (5, 14, 21)]
    for codec in anchors.CODECS:
        records, means = anchors.run_codec(codec, crops, names=["a", "b", "c"])
        assert len(records) == 3 * len(anchors.DEFAULT_QUALITIES[codec])
        for key in ("bpp", "psnr", "ms_ssim"):
            vals = [m[key] for m in means]
            assert np.all(np.diff(vals) > 0), f"{codec} {key} not increasing: {vals}"
        assert all(r["encode_s"] > 0 and r["decode_s"] > 0 for r in records)


# --------------------------------------------------------------------------- files and plots


def _fake_means(bpps, psnrs, msssims):
    return [
        {
            "quality": i,
            "bpp": b,
            "psnr": p,
            "ms_ssim": m,
            "ms_ssim_db": 0.0,
            "encode_s": 0.01,
            "decode_s": 0.002,
            "num_images": 24,
        }
        for i, (b, p, m) in enumerate(zip(bpps, psnrs, msssims))
    ]


def test_results_files_summary_and_plot(tmp_path):
    a = results.make_result(
        "anchor",
        "test anchor",
        _fake_means([0.1, 0.3, 0.9, 1.5], [27.0, 30.0, 34.0, 37.0], [0.9, 0.95, 0.98, 0.99]),
    )
    b = results.make_result(
        "better",
        "0.9x rate",
        _fake_means([0.09, 0.27, 0.81, 1.35], [27.0, 30.0, 34.0, 37.0], [0.9, 0.95, 0.98, 0.99]),
        compile_time=1.5,
    )
    assert set(a["results"]) == {
        "quality",
        "bpp",
        "psnr-rgb",
        "ms-ssim-rgb",
        "encoding_time",
        "decoding_time",
    }
    path = results.write_result_json(tmp_path / "b.json", b)
    assert results.read_result_json(path) == b
    bad = dict(b, results={**b["results"], "bpp": [0.1]})
    with pytest.raises(ValueError, match="entries"):
        results.validate_result(bad)

    recs = [
        {"image": "k1", "bpp": 0.5, "psnr": 30.25},
        {"image": "k2", "bpp": 0.75, "psnr": 31.0, "est_bpp": 0.7},
    ]
    back = results.read_records_csv(results.write_records_csv(tmp_path / "r.csv", recs))
    assert back[1] == recs[1] and back[0]["est_bpp"] is None

    published = results.load_published()
    assert [p["name"] for p in published] == ["WACNN", "MRACNN (paper Table 3)"]
    assert all(p["description"] for p in published)
    for stem in results.PUBLISHED:
        shared = SHARED_PUBLISHED / f"{stem}.json"
        if shared.exists():
            assert json.loads(shared.read_text()) == json.loads(
                (results.published_dir() / f"{stem}.json").read_text()
            )

    md = results.markdown_summary([a, b] + published, anchor="anchor")
    assert "| better | -10.00 | -10.00 |" in md.replace("+", "")
    assert "| WACNN |" in md and "†" in md  # partial overlap with the fake anchor is flagged

    fig = plots.plot_rd([a, b], tmp_path / "rd.png", published=published)
    assert (tmp_path / "rd.png").stat().st_size > 10_000
    labels = fig.axes[0].get_legend_handles_labels()[1]
    assert "WACNN (published)" in labels and "MRACNN (paper Table 3) (published)" in labels
    assert (
        "WACNN (published)" not in fig.axes[1].get_legend_handles_labels()[1]
    )  # no MS-SSIM published

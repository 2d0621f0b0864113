"""Tests of mracnn_jax.evaluation: bpp, BD-rate, anchors, files (the metrics: test_metrics.py)."""

from __future__ import annotations

import json
import math
import os
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest

from mracnn_jax import metrics
from mracnn_jax.evaluation import anchors, bd_rate, compare, plots, results

REPO = Path(__file__).resolve().parents[1]
KODAK = REPO.parent / "shared" / "data" / "kodak"
SHARED_PUBLISHED = REPO.parent / "shared" / "data" / "published"

CROP = (slice(64, 64 + 192), slice(96, 96 + 256))  # 192x256, the anchor tests' crop


def _kodak(i: int) -> np.ndarray:
    path = KODAK / f"kodim{i:02d}.png"
    if not path.exists():
        pytest.skip(f"Kodak image not found at {path}")
    return anchors.load_rgb(path)


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


def test_points_are_measured_against_the_anchor_at_their_own_rate():
    """An anchor linear in ln rate is its own PCHIP, so each point's distance to it is exact, and
    the summary's per-point table gives it; no distance outside the anchor's rates."""

    def linear(r):
        return 24.0 + 4.0 * math.log(r / 0.1)

    rates = [0.1, 0.2, 0.4, 0.7, 1.2]
    anchor = {"name": "webp", "results": {"bpp": rates, "psnr-rgb": [linear(r) for r in rates]}}
    assert bd_rate.quality_at_rate(anchor, 0.3) == pytest.approx(linear(0.3), abs=1e-12)
    assert bd_rate.quality_at_rate(anchor, 0.09) is None
    assert bd_rate.quality_at_rate(anchor, 1.3) is None
    twice = {"results": {"bpp": [0.1, 0.1, 0.4], "psnr-rgb": [24.0, 25.0, 30.0]}}
    assert bd_rate.quality_at_rate(twice, 0.2) is None  # no function of the rate: no answer

    ours = [(0.12, -0.2), (0.5, -0.7), (1.0, -2.3)]  # below the anchor by these dB
    test = {
        "name": "ours",
        "results": {
            "bpp": [r for r, _ in ours],
            "psnr-rgb": [linear(r) + d for r, d in ours],
            "point": ["a", "b", "c"],
        },
    }
    md = results.markdown_summary([anchor, test], anchor="webp")
    table = md[md.index("| curve | point | bpp | PSNR (dB) | webp (dB) |") :].splitlines()[2:]
    assert [row.split("|")[-2].strip() for row in table] == ["-0.20", "-0.70", "-2.30"]


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


# --------------------------------------------------------------------------- reference curves

KODAK_SET = [(f"kodim{i:02d}.png", (512, 768, 3) if i % 3 else (768, 512, 3)) for i in range(1, 25)]


def test_kodak_is_the_24_images_by_name_and_size():
    names, shapes = zip(*KODAK_SET)
    assert compare.kodak_mismatch(names, shapes) is None
    upper = [n.upper().replace(".PNG", ".jpg") for n in names]  # case and suffix do not matter
    assert compare.kodak_mismatch(upper, shapes) is None
    why = compare.kodak_mismatch(names[:23], shapes[:23])  # a subset is not Kodak's average
    assert why and "23 images" in why and "kodim24" in why
    why = compare.kodak_mismatch([*names, "extra.png"], [*shapes, (512, 768, 3)])
    assert why and "extra.png" in why
    crops = [*shapes[:4], (256, 256, 3), *shapes[5:]]
    assert "kodim05.png is 256x256" in compare.kodak_mismatch(names, crops)
    assert compare.kodak_mismatch(["a.png", "b.png"], [(64, 64, 3)] * 2).startswith("2 images")


def test_shipped_curves_load_by_name_with_their_source():
    assert {"vtm", "bpg444", "wacnn", "mracnn-paper-table3"} <= set(compare.shipped_names())
    vtm = compare.load_reference("vtm")
    assert vtm.shipped and vtm.name == "VTM" and compare.states_kodak(vtm.dataset)
    assert set(vtm.result["results"]) >= {"bpp", "psnr-rgb", "ms-ssim-rgb"}
    assert "CompressAI" in vtm.result["description"]
    assert "BSD 3-Clause Clear" in (results.published_dir() / "README.md").read_text()
    for stem in ("vtm", "bpg444"):  # the numbers are CompressAI's, as in the shared copy
        shared = SHARED_PUBLISHED / f"{stem}.json"
        if shared.exists():
            ours = compare.load_reference(stem).result
            assert ours["results"] == json.loads(shared.read_text())["results"]
    assert [r.name for r in compare.default_published()] == ["WACNN", "MRACNN (paper Table 3)"]


def test_reference_files_are_checked(tmp_path):
    def write(name, data):
        path = tmp_path / name
        path.write_text(data if isinstance(data, str) else json.dumps(data))
        return str(path)

    good = {"name": "x", "results": {"bpp": [0.1, 0.2], "psnr-rgb": [30.0, 32.0]}}
    ref = compare.load_reference(write("good.json", good))
    assert not ref.shipped and ref.dataset is None and ref.name == "x"
    cases = [
        (str(tmp_path / "missing.json"), "no such curve file"),
        (write("text.json", "bpp,psnr\n"), "not a CompressAI results JSON: not valid JSON"),
        (write("list.json", [1, 2]), "not a CompressAI results JSON"),
        (write("noname.json", {"results": good["results"]}), "lacks the 'name' entry"),
        (write("short.json", {**good, "results": {"bpp": [0.1], "psnr-rgb": []}}), "entries"),
        (write("nopsnr.json", {**good, "results": {"bpp": [0.1, 0.2]}}), "no bpp and psnr-rgb"),
        (write("nobpp.json", {**good, "results": {"psnr-rgb": [30.0]}}), "'bpp' list"),
        (write("strings.json", {**good, "results": {"bpp": ["a"], "psnr-rgb": [1]}}), "non-number"),
    ]
    for spec, message in cases:
        with pytest.raises(compare.CompareError, match=message):
            compare.load_reference(spec)


def test_dataset_notes():
    def ref(dataset):
        return compare.Reference({"name": "c", "results": {}}, "c.json", False, dataset)

    evaluated = "kodak (24 images, 512x768, 768x512)"
    crops = "crops (2 images, 64x64)"
    assert compare.dataset_note(ref(None), crops, False) is None
    assert compare.dataset_note(ref(crops), crops, False) is None  # an earlier run's own curve
    assert compare.dataset_note(ref("Kodak"), evaluated, True) is None
    assert compare.dataset_note(ref("kodak (24 images, 512x768)"), evaluated, True) is None
    note = compare.dataset_note(ref("kodak (2 images, 176x168)"), evaluated, True)
    assert note and "'c'" in note and "kodak (2 images" in note
    assert compare.dataset_note(ref("Kodak"), crops, False)
    assert compare.dataset_note(ref("CLIC 2020"), evaluated, True)
    assert compare.dataset_note(compare.load_reference("vtm"), evaluated, True) is None


def test_compared_curves_are_drawn_by_name():
    vtm, bpg = (compare.load_reference(n).result for n in ("vtm", "bpg444"))
    fig = plots.plot_rd([vtm], compared=[bpg], published=results.load_published())
    for ax in fig.axes:  # both have MS-SSIM
        assert "BPG 444 x265" in ax.get_legend_handles_labels()[1]


def test_compared_curves_do_not_squash_the_measured_ones():
    """VTM reaches 1.6 bpp and 40 dB; a model curve at 0.2-0.6 bpp keeps the frame."""
    ours = results.make_result(
        "ours", "", [{"bpp": b, "psnr": p, "ms_ssim": 0.95} for b, p in ((0.2, 28.0), (0.6, 31.5))]
    )
    vtm = compare.load_reference("vtm").result
    assert max(vtm["results"]["bpp"]) > 1.0  # the reference reaches well past our curve
    ax = plots.plot_rd([ours], compared=[vtm]).axes[0]
    assert ax.get_xlim() == pytest.approx((0.0, 0.66))
    assert ax.get_ylim() == pytest.approx((27.0, 32.5))
    assert "VTM" in " ".join(ax.get_legend_handles_labels()[1])  # still drawn, clipped


def test_grayscale_plots_name_the_psnr_axis_without_rgb():
    ours = results.make_result(
        "ours", "", [{"bpp": b, "psnr": p, "ms_ssim": 0.95} for b, p in ((0.2, 28.0), (0.6, 31.5))]
    )
    colour, gray = plots.plot_rd([ours]), plots.plot_rd([ours], grayscale=True)
    assert colour.axes[0].get_ylabel() == "PSNR-RGB (dB)"
    assert gray.axes[0].get_ylabel() == "PSNR (dB)"
    assert gray.axes[1].get_ylabel() == colour.axes[1].get_ylabel()  # MS-SSIM unchanged

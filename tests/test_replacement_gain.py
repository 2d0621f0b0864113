"""scripts/replacement_gain.py, the rule a bundled model is replaced by: the gain at equal rate
against an exact answer, the merge of a candidate point, and the BD-rates printed for it."""

from __future__ import annotations

import json
import math
import pathlib

import pytest
from load_script import load_script  # a sibling helper module

from mracnn_jax.evaluation import bd_rate

REPO = pathlib.Path(__file__).resolve().parents[1]
gain = load_script(REPO / "scripts" / "replacement_gain.py")

LABELS = ["lambda=0.0018", "lambda=0.013", "lambda=0.05"]
RATES = [0.2, 0.55, 0.9]


def _psnr(bpp: float) -> float:
    """A curve linear in ln(rate): PCHIP through its points is the line itself."""
    return 24.0 + 4.0 * math.log(bpp / 0.1)


def _result(name, labels, rates, shift=0.0):
    return {
        "name": name,
        "results": {
            "point": list(labels),
            "bpp": list(rates),
            "psnr-rgb": [_psnr(r) + shift for r in rates],
            "ms-ssim-rgb": [1.0 - 10 ** (-(_psnr(r) + shift) / 20.0) for r in rates],
            "encoding_time": [1.0] * len(rates),
        },
    }


def test_gain_is_the_distance_to_the_curve_at_the_same_rate():
    bundled = _result("bundled", LABELS, RATES)
    for bpp in (0.2, 0.31, 0.55, 0.777, 0.9):
        assert gain.gain_at_equal_rate(bundled, bpp, _psnr(bpp) + 0.25) == pytest.approx(
            0.25, abs=1e-9
        )
    # A gain read off at another rate than the candidate's would be off by the slope.
    assert gain.gain_at_equal_rate(bundled, 0.5, _psnr(0.55)) == pytest.approx(4 * math.log(1.1))
    assert gain.gain_at_equal_rate(bundled, 0.19, 30.0) is None
    assert gain.gain_at_equal_rate(bundled, 0.95, 30.0) is None


def test_a_candidate_replaces_its_label_and_a_new_label_is_added_in_rate_order():
    bundled = _result("bundled", LABELS, RATES)
    cand = _result("cand", ["lambda=0.013"], [0.5], shift=0.4)
    del cand["results"]["encoding_time"]
    merged = gain.merge(bundled, cand)
    res = merged["results"]
    assert res["point"] == LABELS and res["bpp"] == [0.2, 0.5, 0.9]
    assert res["psnr-rgb"][1] == _psnr(0.5) + 0.4
    assert math.isnan(res["encoding_time"][1]) and res["encoding_time"][0] == 1.0
    assert bundled["results"]["bpp"] == RATES  # the bundled result is left as it was

    new = _result("q0", ["lambda=0.0004"], [0.1])
    merged = gain.merge(merged, new)
    assert merged["results"]["point"] == ["lambda=0.0004", *LABELS]
    assert merged["results"]["bpp"] == [0.1, 0.2, 0.5, 0.9]


def test_the_report_gives_the_verdict_and_the_merged_curves_bd_rates(tmp_path, capsys):
    bundled = _result("bundled", LABELS, RATES)
    anchor = _result("webp", ["q1", "q2", "q3", "q4"], [0.25, 0.45, 0.7, 1.0], shift=-1.0)
    (tmp_path / "bundled.json").write_text(json.dumps(bundled))
    (tmp_path / "webp.json").write_text(json.dumps(anchor))
    over = _result("cand", ["lambda=0.013"], [0.5], shift=0.31)
    under = _result("cand", ["lambda=0.05"], [0.8], shift=0.29)
    for name, cand in (("over", over), ("under", under)):
        (tmp_path / f"{name}.json").write_text(json.dumps(cand))

    argv = [str(tmp_path / "over.json"), str(tmp_path / "under.json")]
    assert gain.main([*argv, "--bundled", str(tmp_path / "bundled.json")]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].endswith("+0.310 dB at equal rate (bar 0.3 dB): replace")
    assert lines[1].endswith("+0.290 dB at equal rate (bar 0.3 dB): keep the bundled file")
    merged = gain.merge(gain.merge(bundled, over), under)
    expected = bd_rate.bd_rate_results(anchor, merged, "psnr", min_overlap=0)
    row = next(line for line in lines if line.startswith("webp") and " psnr " in line)
    old = bd_rate.bd_rate_results(anchor, bundled, "psnr", min_overlap=0)
    assert row.split()[2:6] == [f"{old:+.1f}", "%", f"{expected:+.1f}", "%"]
    assert expected < old  # both candidates are above the bundled curve


def test_a_missing_file_or_field_is_one_line(tmp_path, capsys):
    assert gain.main([str(tmp_path / "none.json")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("replacement_gain: ") and "none.json" in err[0]

    (tmp_path / "bundled.json").write_text(json.dumps(_result("bundled", LABELS, RATES)))
    cand = _result("cand", ["lambda=0.013"], [0.5])
    del cand["results"]["bpp"]
    (tmp_path / "cand.json").write_text(json.dumps(cand))
    argv = [str(tmp_path / "cand.json"), "--bundled", str(tmp_path / "bundled.json")]
    assert gain.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["replacement_gain: cand: the candidate result lacks ['bpp']"]


def test_a_point_below_the_curves_rates_is_measured_at_equal_quality():
    """Less rate and more PSNR than the lowest point: the rate saved at its PSNR, and that in dB
    at the curve's slope (4 dB per ln rate here), against the exact answers of the line."""
    bundled = _result("bundled", LABELS, RATES)
    bpp, psnr = 0.18, _psnr(0.2) + 0.1
    exact_rate = 0.1 * math.exp((psnr - 24.0) / 4.0)
    saved, db = gain.gain_at_equal_quality(bundled, bpp, psnr)
    assert saved == pytest.approx(1 - bpp / exact_rate, abs=1e-9)
    assert db == pytest.approx(4.0 * math.log(exact_rate / bpp), abs=1e-9)
    assert gain.gain_at_equal_rate(bundled, bpp, psnr) is None
    assert gain.gain_at_equal_quality(bundled, bpp, _psnr(0.2) - 0.1) is None  # below both


def test_an_end_point_beyond_the_curve_and_a_new_one_are_told_apart(tmp_path, capsys):
    (tmp_path / "bundled.json").write_text(json.dumps(_result("bundled", LABELS, RATES)))
    beyond = _result("cand", ["lambda=0.05", "lambda=0.0932"], [0.95, 1.2])
    (tmp_path / "cand.json").write_text(json.dumps(beyond))
    argv = [str(tmp_path / "cand.json"), "--bundled", str(tmp_path / "bundled.json")]
    assert gain.main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "it replaces an end point, with no gain at equal rate" in lines[0]
    assert "a new point, no gain at equal rate" in lines[1]


def test_curves_of_other_images_are_refused(tmp_path, capsys):
    """A candidate (or an anchor) measured on other images than the bundled curve: one line."""
    kodak = {"dataset": "kodak (24 images)", "num_images": 24}
    (tmp_path / "bundled.json").write_text(json.dumps(_result("bundled", LABELS, RATES) | kodak))
    gray = _result("cand", ["lambda=0.013"], [0.5]) | {"dataset": "kodak gray", "num_images": 24}
    (tmp_path / "cand.json").write_text(json.dumps(gray))
    argv = [str(tmp_path / "cand.json"), "--bundled", str(tmp_path / "bundled.json")]
    assert gain.main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "candidate 1 was measured on 'kodak gray' (24 images)" in err[0]
    (tmp_path / "cand.json").write_text(json.dumps(gray | kodak))
    webp = _result("webp", ["q1", "q2"], [0.3, 0.6]) | {
        "dataset": "kodak (24 images)",
        "num_images": 6,
    }
    (tmp_path / "webp.json").write_text(json.dumps(webp))
    assert gain.main(argv) == 2
    assert "webp was measured on 'kodak (24 images)' (6 images)" in capsys.readouterr().err


def test_every_point_is_measured_against_the_anchors_at_its_own_rate(tmp_path):
    """The distance of each merged point to an anchor at the point's rate: exact for an anchor
    one dB below a curve linear in ln rate, none for a point below the anchor's rates; a BD-rate
    alone would not show that the middle point lies under the anchor."""
    bundled = _result("bundled", LABELS, RATES)
    (tmp_path / "bundled.json").write_text(json.dumps(bundled))
    anchor = _result("webp", ["q1", "q2", "q3", "q4"], [0.25, 0.45, 0.7, 1.0], shift=-1.0)
    (tmp_path / "webp.json").write_text(json.dumps(anchor))
    cand = _result("cand", ["lambda=0.013"], [0.5], shift=-1.5)
    rows = gain.distances_to_anchors(gain.merge(bundled, cand), {"webp": anchor})
    assert [(label, r) for label, r, _, _ in rows] == list(zip(LABELS, [0.2, 0.5, 0.9]))
    assert rows[0][3] == {"webp": None}
    assert rows[1][3]["webp"] == pytest.approx(-0.5, abs=1e-9)
    assert rows[2][3]["webp"] == pytest.approx(1.0, abs=1e-9)

    lines = gain.report(tmp_path / "bundled.json", [cand], 0.3)
    table = lines[lines.index(next(x for x in lines if x.startswith("the merged curve's"))) + 2 :]
    assert [line.split()[3] for line in table] == ["-", "-0.50", "+1.00"]

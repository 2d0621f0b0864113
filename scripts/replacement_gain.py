"""Should a candidate model replace a bundled one? Its PSNR gain over the bundled curve at its own
rate, and the BD-rates the bundled curve would have with it.

    .venv/bin/python scripts/replacement_gain.py CANDIDATE.json [CANDIDATE.json ...] \
        [--bundled docs/results/bundled/mracnn-bundled-mse.json] [--bar 0.3]

Each ``CANDIDATE.json`` is an ``evaluate.py`` result (CompressAI layout) of one or more points on
the same images as the bundled curve, e.g. ``evaluate.py --model workdirs/colour-q2/model.mracnn
--anchor-for-bd none --out DIR`` gives ``DIR/mracnn-bundled-mse.json``. A candidate point replaces
the bundled point with the same label (``lambda=0.013``); a label the bundled curve lacks adds a
point (a new quality).

The gain at equal rate of a candidate point (r, D) over the bundled curve {(r_i, D_i)} is

    ΔD = D − P(ln r),  P the PCHIP interpolant of D_i over ln r_i

(the interpolation bd_rate uses, on the rate axis). It is defined only inside the bundled curve's
rate range: a point outside it has no bundled quality at its rate, and the script says so rather
than extrapolate. A point beyond an end of the curve in rate but within its range of quality
(an end point's replacement that moved along the rate axis: less rate and more PSNR) is measured
at equal quality instead, by interpolation on the other axis:

    ΔR = 1 − r / R(D),   R(D) = exp(Q(D)),  Q the PCHIP interpolant of ln r_i over D_i

(the rate it saves), and ΔD ≈ S · ln(R(D) / r), S = dP/d ln r at R(D) (the curve's own slope
there: a linearisation at the curve, not an extrapolation of it), which the bar is applied to. A
point beyond the curve on both axes has no gain to measure; the BD-rates decide. Every curve must come from the same images: the candidates' and the anchors'
``dataset`` and ``num_images`` must equal the bundled result's. A replacement is worth its 20 MB in every clone when ΔD ≥ ``--bar`` dB
(0.3, the rule for the bundled models). The BD-rates (PSNR and MS-SSIM dB) of the merged
curve are then printed against every anchor found beside the bundled curve (``jpeg.json``,
``webp.json``, ...), next to the bundled curve's own.

A BD-rate interpolates between a curve's points, and with three or four points far apart the
interpolant's bulge between them can carry it: a curve whose every point lies below an anchor can
still come out at a BD-rate near zero. So the script also prints, for every point of the merged
curve, its distance to each anchor at the point's own rate, D − A(ln r) with A the anchor's PCHIP
interpolant (the anchors' six points are dense, so this is close to a measurement); a point
outside an anchor's rate range has no distance ("-").
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
from scipy.interpolate import PchipInterpolator

from mracnn_jax.evaluation import bd_rate

REPO = Path(__file__).resolve().parents[1]

BUNDLED = REPO / "docs" / "results" / "bundled" / "mracnn-bundled-mse.json"
ANCHORS = ("jpeg", "webp", "avif", "jpeg2000")
#: The list of a CompressAI-layout result that labels its points.
POINT_KEY = "point"


def gain_at_equal_rate(curve: dict[str, Any], bpp: float, dist: float, metric: str = "psnr"):
    """``dist`` minus the curve's quality at rate ``bpp`` (PCHIP in ln rate), or None where
    ``bpp`` lies outside the curve's rate range."""
    quality = bd_rate.quality_at_rate(curve, bpp, metric)
    return None if quality is None else dist - quality


def gain_at_equal_quality(curve: dict[str, Any], bpp: float, dist: float, metric: str = "psnr"):
    """(rate saved at ``dist``, its dB at the curve's local slope) for a point whose quality lies
    in the curve's quality range (module docstring), or None."""
    rates, quality = bd_rate.curve(curve, metric)
    order = np.argsort(quality)
    rates, quality = rates[order], quality[order]
    if not quality[0] <= dist <= quality[-1]:
        return None
    ln_rate = float(PchipInterpolator(quality, np.log(rates))(dist))
    slope = float(PchipInterpolator(np.log(rates), quality).derivative()(ln_rate))
    return 1.0 - bpp / math.exp(ln_rate), slope * (ln_rate - math.log(bpp))


def distances_to_anchors(
    curve: dict[str, Any], anchors: dict[str, dict[str, Any]], metric: str = "psnr"
) -> list[tuple[str, float, float, dict[str, float | None]]]:
    """(label, bpp, quality, {anchor: quality minus the anchor's at that bpp, or None}) for each
    point of ``curve`` (module docstring)."""
    rates, quality = bd_rate.curve(curve, metric)
    return [
        (label, r, d, {name: gain_at_equal_rate(a, r, d, metric) for name, a in anchors.items()})
        for label, r, d in zip(curve["results"][POINT_KEY], rates, quality, strict=True)
    ]


def merge(bundled: dict[str, Any], candidate: dict[str, Any]) -> dict[str, Any]:
    """The bundled result with each candidate point replacing the point of the same label, or
    added; points sorted by rate. Every per-point list of the bundled result is carried along
    (NaN where the candidate lacks it)."""
    merged = copy.deepcopy(bundled)
    res, cand = merged["results"], candidate["results"]
    keys = [k for k, v in res.items() if isinstance(v, list) and len(v) == len(res[POINT_KEY])]
    missing = [k for k in ("bpp", "psnr-rgb", POINT_KEY) if k not in cand]
    if missing:
        raise ValueError(f"{candidate.get('name', '?')}: the candidate result lacks {missing}")
    for j, label in enumerate(cand[POINT_KEY]):
        i = res[POINT_KEY].index(label) if label in res[POINT_KEY] else None
        for k in keys:
            value = cand[k][j] if k in cand else math.nan
            if i is None:
                res[k].append(value)
            else:
                res[k][i] = value
    order = np.argsort(res["bpp"])
    for k in keys:
        res[k] = [res[k][i] for i in order]
    return merged


def anchors_beside(bundled_path: Path) -> dict[str, dict[str, Any]]:
    """The anchor curves stored beside the bundled result (those present)."""
    found = {}
    for name in ANCHORS:
        path = bundled_path.parent / f"{name}.json"
        if path.exists():
            found[name] = json.loads(path.read_text())
    return found


def _bd(anchor: dict[str, Any], test: dict[str, Any], metric: str) -> str:
    """The BD-rate as printed; the overlap of the quality ranges is a column of its own."""
    try:
        return f"{bd_rate.bd_rate_results(anchor, test, metric, min_overlap=0):+.1f} %"
    except (KeyError, ValueError) as e:
        return f"n/a ({e})"


def _overlap(anchor: dict[str, Any], test: dict[str, Any], metric: str) -> str:
    try:
        return f"{bd_rate.overlap_fraction(bd_rate.curve(anchor, metric)[1], bd_rate.curve(test, metric)[1]):.0%}"
    except KeyError:
        return "n/a"


def check_same_images(bundled: dict[str, Any], others: dict[str, dict[str, Any]]) -> None:
    """A ValueError (one line) naming the first of ``others`` measured on other images than the
    bundled curve (``dataset`` and ``num_images`` of the results)."""
    want = (bundled.get("dataset"), bundled.get("num_images"))
    for name, other in others.items():
        got = (other.get("dataset"), other.get("num_images"))
        if got != want:
            raise ValueError(
                f"{name} was measured on {got[0]!r} ({got[1]} images), the bundled curve on "
                f"{want[0]!r} ({want[1]} images): evaluate both on the same images"
            )


def report(bundled_path: Path, candidates: list[dict[str, Any]], bar: float) -> list[str]:
    """The printed lines: each candidate point's gain and verdict, then the BD-rate table."""
    bundled = json.loads(bundled_path.read_text())
    check_same_images(bundled, {f"candidate {i + 1}": c for i, c in enumerate(candidates)})
    check_same_images(bundled, anchors_beside(bundled_path))
    lines, merged = [], bundled
    old = bundled["results"]
    for cand in candidates:
        merged = merge(merged, cand)  # first: it names what a candidate lacks
        res = cand["results"]
        for j, label in enumerate(res[POINT_KEY]):
            bpp, psnr = res["bpp"][j], res["psnr-rgb"][j]
            gain = gain_at_equal_rate(bundled, bpp, psnr)
            was = ""
            if label in old[POINT_KEY]:
                i = old[POINT_KEY].index(label)
                was = f" (bundled: {old['bpp'][i]:.4f} bpp / {old['psnr-rgb'][i]:.3f} dB)"
            at_quality = gain_at_equal_quality(bundled, bpp, psnr) if gain is None else None
            if at_quality is not None:
                saved, db = at_quality
                keep = "replace" if db >= bar else "keep the bundled file"
                verdict = (
                    f"outside the bundled curve's rates; at equal PSNR {saved:+.1%} rate saved, "
                    f"{db:+.3f} dB at the curve's slope (bar {bar} dB): {keep}"
                )
            elif gain is None and was:
                verdict = (
                    "outside the bundled curve's rates: it replaces an end point, with no "
                    "gain at equal rate to measure (the merged curve's BD-rates decide)"
                )
            elif gain is None:
                verdict = "outside the bundled curve's rates: a new point, no gain at equal rate"
            else:
                keep = "replace" if gain >= bar else "keep the bundled file"
                verdict = f"{gain:+.3f} dB at equal rate (bar {bar} dB): {keep}"
            lines.append(f"{label}: {bpp:.4f} bpp / {psnr:.3f} dB{was}; {verdict}")
    lines.append(
        f"BD-rate of the merged curve against the bundled one (PSNR): {_bd(bundled, merged, 'psnr')}"
    )
    head = ("anchor", "metric", "bundled", "merged", "overlap of the merged")
    lines.append(f"{head[0]:10s} {head[1]:11s} {head[2]:>10s} {head[3]:>10s}  {head[4]}")
    anchors = anchors_beside(bundled_path)
    for name, anchor in anchors.items():
        for metric in bd_rate.METRICS:
            row = (_bd(anchor, bundled, metric), _bd(anchor, merged, metric))
            lap = _overlap(anchor, merged, metric)
            lines.append(f"{name:10s} {metric:11s} {row[0]:>10s} {row[1]:>10s}  {lap}")
    lines.append("the merged curve's points against each anchor at the point's rate (PSNR, dB):")
    lines.append(f"{'point':15s} {'bpp':>7s} {'PSNR':>7s} " + " ".join(f"{n:>9s}" for n in anchors))
    for label, r, d, gaps in distances_to_anchors(merged, anchors):
        cells = " ".join("-".rjust(9) if g is None else f"{g:+9.2f}" for g in gaps.values())
        lines.append(f"{label:15s} {r:7.4f} {d:7.2f} {cells}")
    return lines


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("candidates", nargs="+", type=Path, help="evaluate.py result JSON files")
    p.add_argument("--bundled", type=Path, default=BUNDLED, help="the bundled curve's result")
    p.add_argument("--bar", type=float, default=0.3, help="dB at equal rate a replacement needs")
    args = p.parse_args(argv)
    try:
        candidates = [json.loads(path.read_text()) for path in args.candidates]
        lines = report(args.bundled, candidates, args.bar)
    except (OSError, ValueError, KeyError) as e:
        print(f"replacement_gain: {e}", file=sys.stderr)
        return 2
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())

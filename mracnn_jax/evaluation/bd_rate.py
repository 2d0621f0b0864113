"""Bjøntegaard-delta rate (BD-rate) of rate–distortion curves, via the `bjontegaard` package.

BD-rate (Bjøntegaard, VCEG-M33) is the average relative rate difference between two RD curves
at equal quality. With r = log10(rate) interpolated as a function of the distortion metric D
(PSNR, or MS-SSIM in dB) for the anchor (r_A) and the test (r_T), over the overlap [D_lo, D_hi]
of the two curves' D ranges:

    ΔR = (1 / (D_hi − D_lo)) ∫_{D_lo}^{D_hi} (r_T(D) − r_A(D)) dD
    BD-rate = (10^ΔR − 1) · 100 %

Negative means the test needs fewer bits than the anchor for the same quality. The
interpolation is piecewise cubic Hermite (PCHIP, as in the JCT-VC/JVET CTC sheets and the
learned-compression literature; `method="pchip"`), through every point, not the original
single cubic polynomial fit. PCHIP needs at least 2 points per curve, with D strictly
increasing in rate (the classic method uses 4 points; the MRACNN paper's table has 3).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

#: Distortion metrics a CompressAI result dict can be scored on.
METRICS: tuple[str, ...] = ("psnr", "ms-ssim-db")
MIN_POINTS = 2


def _validate_curve(
    rate: Sequence[float], dist: Sequence[float], label: str
) -> tuple[np.ndarray, np.ndarray]:
    """Check one RD curve and return it sorted by rate (float64 arrays)."""
    r = np.asarray(rate, dtype=np.float64).reshape(-1)
    d = np.asarray(dist, dtype=np.float64).reshape(-1)
    if r.shape != d.shape:
        raise ValueError(f"{label}: {r.size} rates but {d.size} distortion values")
    if r.size < MIN_POINTS:
        raise ValueError(f"{label}: BD-rate needs at least {MIN_POINTS} RD points, got {r.size}")
    if not (np.all(np.isfinite(r)) and np.all(np.isfinite(d))):
        raise ValueError(f"{label}: rates and distortion values must be finite, got {r} and {d}")
    if np.any(r <= 0):
        raise ValueError(f"{label}: rates must be positive (their log is interpolated), got {r}")
    order = np.argsort(r, kind="stable")
    r, d = r[order], d[order]
    if np.any(np.diff(r) <= 0):
        raise ValueError(f"{label}: rates must be distinct, got {r}")
    bad = np.nonzero(np.diff(d) <= 0)[0]
    if bad.size:
        i = int(bad[0])
        raise ValueError(
            f"{label}: quality must increase strictly with rate, but at rate {r[i]:.6g} → "
            f"{r[i + 1]:.6g} it goes {d[i]:.6g} → {d[i + 1]:.6g}. BD-rate interpolates rate as a "
            "function of quality; drop or fix the non-monotone point(s)."
        )
    return r, d


def bd_rate(
    anchor_rate: Sequence[float],
    anchor_dist: Sequence[float],
    test_rate: Sequence[float],
    test_dist: Sequence[float],
    *,
    method: str = "pchip",
    min_overlap: float = 0.75,
) -> float:
    """BD-rate in percent of the test curve against the anchor (see the module docstring).

    Points may come in any order; each curve is sorted by rate and must have quality strictly
    increasing with rate, at least 2 points, positive finite rates. The curves may have
    different numbers of points.

    Args:
      anchor_rate, anchor_dist: anchor bpp and quality (PSNR dB, MS-SSIM dB, …).
      test_rate, test_dist: the same for the test curve.
      method: interpolation of the `bjontegaard` package: "pchip" (default), "akima", "cubic".
      min_overlap: the package warns when the overlap of the quality ranges is below this
        fraction of their union.

    Returns:
      BD-rate in % (e.g. −10.0 for 10 % fewer bits at equal quality).

    Raises:
      ValueError: invalid curves, or quality ranges that do not overlap at all.
    """
    import bjontegaard

    ra, da = _validate_curve(anchor_rate, anchor_dist, "anchor curve")
    rt, dt = _validate_curve(test_rate, test_dist, "test curve")
    lo, hi = max(da[0], dt[0]), min(da[-1], dt[-1])
    if not hi > lo:
        raise ValueError(
            f"the quality ranges do not overlap (anchor {da[0]:.4g}..{da[-1]:.4g}, test "
            f"{dt[0]:.4g}..{dt[-1]:.4g}); BD-rate is undefined"
        )
    return float(
        bjontegaard.bd_rate(
            ra, da, rt, dt, method=method, require_matching_points=False, min_overlap=min_overlap
        )
    )


def bd_distortion(
    anchor_rate: Sequence[float],
    anchor_dist: Sequence[float],
    test_rate: Sequence[float],
    test_dist: Sequence[float],
    *,
    method: str = "pchip",
    min_overlap: float = 0.75,
) -> float:
    """BD-PSNR-style average quality difference (test − anchor, in the metric's unit) at equal
    log-rate, over the overlap of the log-rate ranges. Same validation as `bd_rate`."""
    import bjontegaard

    ra, da = _validate_curve(anchor_rate, anchor_dist, "anchor curve")
    rt, dt = _validate_curve(test_rate, test_dist, "test curve")
    if not min(ra[-1], rt[-1]) > max(ra[0], rt[0]):
        raise ValueError("the rate ranges do not overlap; BD-distortion is undefined")
    return float(
        bjontegaard.bd_psnr(
            ra, da, rt, dt, method=method, require_matching_points=False, min_overlap=min_overlap
        )
    )


def overlap_fraction(anchor_dist: Sequence[float], test_dist: Sequence[float]) -> float:
    """Length of the intersection of two quality ranges over the length of their union, the
    quantity the `bjontegaard` package warns about below `min_overlap` (0 if disjoint)."""
    a, t = np.asarray(anchor_dist, np.float64), np.asarray(test_dist, np.float64)
    inter = min(a.max(), t.max()) - max(a.min(), t.min())
    union = max(a.max(), t.max()) - min(a.min(), t.min())
    return float(max(inter, 0.0) / union) if union > 0 else 0.0


def curve(result: dict[str, Any], metric: str = "psnr") -> tuple[np.ndarray, np.ndarray]:
    """(bpp, quality) of a CompressAI-layout result dict for `metric`.

    "psnr" reads `results["psnr-rgb"]`; "ms-ssim-db" reads `results["ms-ssim-rgb"]` and converts
    each point to −10·log10(1 − v). KeyError if the result lacks that metric.
    """
    res = result.get("results", result)
    if metric == "psnr":
        d = np.asarray(res["psnr-rgb"], dtype=np.float64)
    elif metric == "ms-ssim-db":
        v = np.asarray(res["ms-ssim-rgb"], dtype=np.float64)
        d = -10.0 * np.log10(1.0 - v)
    else:
        raise ValueError(f"unknown metric {metric!r}; choose from {METRICS}")
    return np.asarray(res["bpp"], dtype=np.float64), d


def quality_at_rate(result: dict[str, Any], bpp: float, metric: str = "psnr") -> float | None:
    """The quality of the CompressAI-layout curve ``result`` at rate ``bpp``: PCHIP of quality over
    ln rate through its points. None where ``bpp`` lies outside its rate range (no
    extrapolation), or where the curve is no function of ln rate (fewer than 2 points, a rate
    given twice, a rate not positive, a value not finite). With a reference of dense points (a
    codec's quality sweep) this is what that codec gives at the rate of one of our points; a
    BD-rate also interpolates between our points, which, when they are few and far apart, decide
    it as much as the points do."""
    from scipy.interpolate import PchipInterpolator

    rates, quality = curve(result, metric)
    order = np.argsort(rates)
    rates, quality = rates[order], quality[order]
    usable = rates.size >= 2 and np.all(np.isfinite(rates)) and np.all(np.isfinite(quality))
    if not (usable and rates[0] > 0 and np.all(np.diff(rates) > 0)):
        return None
    if not rates[0] <= bpp <= rates[-1]:
        return None
    return float(PchipInterpolator(np.log(rates), quality)(math.log(bpp)))


def bd_rate_results(
    anchor: dict[str, Any], test: dict[str, Any], metric: str = "psnr", **kwargs: Any
) -> float:
    """BD-rate (%) of CompressAI-layout result `test` against `anchor` on `metric`
    ("psnr" or "ms-ssim-db"). kwargs go to `bd_rate`."""
    ra, da = curve(anchor, metric)
    rt, dt = curve(test, metric)
    return bd_rate(ra, da, rt, dt, **kwargs)


def bd_rate_table(
    results: Sequence[dict[str, Any]],
    anchor: dict[str, Any],
    metrics: Sequence[str] = METRICS,
    **kwargs: Any,
) -> dict[str, dict[str, float]]:
    """BD-rates of every result against `anchor`: {name: {metric: % or NaN}}.

    NaN where a curve lacks the metric (e.g. published PSNR-only points) or the pair is not
    computable (no overlap, non-monotone); use `bd_rate_results` to see the reason.
    """
    table: dict[str, dict[str, float]] = {}
    for r in results:
        row = {}
        for m in metrics:
            try:
                row[m] = bd_rate_results(anchor, r, m, **kwargs)
            except (KeyError, ValueError):
                row[m] = math.nan
        table[r["name"]] = row
    return table

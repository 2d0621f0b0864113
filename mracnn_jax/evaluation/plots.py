"""Rate–distortion plots (PNG): PSNR–bpp and MS-SSIM(dB)–bpp.

Measured curves are lines with round markers; compared curves (CompressAI-layout results of
other codecs, e.g. the published VTM and BPG Kodak curves) are dashed lines with small square
markers, labelled by their names; published figures (e.g. the WACNN and MRACNN papers' Kodak
points) are unconnected reference markers labelled "(published)". Drawing uses
matplotlib's object API on an Agg canvas — no pyplot, no global backend switch, no display.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

_AXES = {
    "psnr": ("PSNR-RGB (dB)", "psnr-rgb"),
    "ms-ssim-db": ("MS-SSIM (dB) = −10·log10(1 − MS-SSIM)", "ms-ssim-rgb"),
}
_PUBLISHED_MARKERS = ("*", "P", "X", "D", "^", "v", "s")


def _points(result: dict[str, Any], metric: str) -> tuple[list[float], list[float]] | None:
    res = result["results"]
    key = _AXES[metric][1]
    if key not in res:
        return None
    ys = [float(v) for v in res[key]]
    if metric == "ms-ssim-db":
        ys = [-10.0 * math.log10(1.0 - v) if v < 1 else math.inf for v in ys]
    pts = sorted(zip((float(b) for b in res["bpp"]), ys))
    return [p[0] for p in pts], [p[1] for p in pts]


def _frame(ax: Any, measured: Sequence[tuple[list[float], list[float]]]) -> None:
    """Axes limits around the measured curves (bpp from 0 to 10 % past the largest; quality
    1 dB beyond the extremes), so that compared curves and published points reaching far
    higher or lower rates do not squash them: those are clipped at the frame."""
    xs = [x for pts in measured for x in pts[0] if math.isfinite(x)]
    ys = [y for pts in measured for y in pts[1] if math.isfinite(y)]
    if not xs or not ys:
        return
    ax.set_xlim(0.0, 1.1 * max(xs) if max(xs) > 0 else 1.0)
    ax.set_ylim(min(ys) - 1.0, max(ys) + 1.0)


def draw_rd(
    ax: Any,
    results: Sequence[dict[str, Any]],
    metric: str = "psnr",
    published: Sequence[dict[str, Any]] = (),
    compared: Sequence[dict[str, Any]] = (),
    grayscale: bool = False,
) -> None:
    """Draw the RD curves of `results`, the `compared` curves and the `published` points on a
    matplotlib Axes.

    `metric` is "psnr" or "ms-ssim-db"; results without that metric are skipped (published
    PSNR-only points do not appear on an MS-SSIM plot). The frame is set by `results`
    (`_frame`); without them matplotlib's autoscale frames everything. `grayscale`: the PSNR axis
    says "PSNR (dB)" (of the one channel) instead of "PSNR-RGB (dB)".
    """
    if metric not in _AXES:
        raise ValueError(f"unknown metric {metric!r}; choose from {tuple(_AXES)}")
    measured = []
    for r in results:
        pts = _points(r, metric)
        if pts:
            ax.plot(*pts, marker="o", markersize=4, linewidth=1.5, label=r["name"])
            measured.append(pts)
    for r in compared:
        pts = _points(r, metric)
        if pts:
            ax.plot(*pts, linestyle="--", marker="s", markersize=3, linewidth=1.2, label=r["name"])
    for i, r in enumerate(published):
        pts = _points(r, metric)
        if pts:
            ax.plot(
                *pts,
                linestyle="none",
                marker=_PUBLISHED_MARKERS[i % len(_PUBLISHED_MARKERS)],
                markersize=9,
                markeredgecolor="black",
                markeredgewidth=0.8,
                label=f"{r['name']} (published)",
            )
    if measured:
        _frame(ax, measured)
    ax.set_xlabel("bits per pixel (bpp)")
    ax.set_ylabel("PSNR (dB)" if grayscale and metric == "psnr" else _AXES[metric][0])
    ax.grid(True, alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="lower right")


def plot_rd(
    results: Sequence[dict[str, Any]],
    path: str | Path | None = None,
    published: Sequence[dict[str, Any]] = (),
    metrics: Sequence[str] = ("psnr", "ms-ssim-db"),
    compared: Sequence[dict[str, Any]] = (),
    title: str | None = None,
    dpi: int = 120,
    grayscale: bool = False,
) -> Figure:
    """One figure with a panel per metric (default PSNR–bpp and MS-SSIM(dB)–bpp), saved as
    PNG to `path` if given.

    Args:
      results: CompressAI-layout result dicts (ours and the anchors).
      path: output file (PNG); parent folders are created.
      published: published result dicts, drawn as reference markers ("(published)").
      compared: result dicts of other codecs, drawn as dashed curves labelled by name.
      metrics: panels, from "psnr" and "ms-ssim-db".
      title: figure title.
      grayscale: the images are grayscale (see `draw_rd`).
    """
    fig = Figure(figsize=(6.0 * len(metrics), 4.5))
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    for ax, m in zip(axes, metrics):
        draw_rd(ax, results, m, published, compared, grayscale)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=dpi)
    return fig

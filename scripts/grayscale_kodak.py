"""Grayscale Kodak without training: colour models on (g, g, g) against their grayscale conversions.

    .venv/bin/python scripts/grayscale_kodak.py [--data DIR] [--limit N] [--qualities 1 2 3]
        [--gray Q=MODEL ...] [--extra Q:LABEL=MODEL ...] [--out RESULTS.json]

The 24 Kodak images are converted with Pillow's ``convert("L")``. For each bundled colour model
(``mracnn-bundled-q{1,2,3}.mracnn``) it runs the model's inference forward pass
(``models.forward_any_size``: centred padding to 64, rounding, the likelihoods of the rounded
latents) and reports, per quality, means over the images of:

* ``colour``: the colour model on (g, g, g); bpp estimated from the likelihoods, PSNR of the
  ITU-R 601 luma (``images.restore_mode``, Pillow's integer form) of its 8-bit reconstruction;
* ``gray``: the model ``scripts/make_grayscale_model.py`` makes of it (``--output mean``, built
  here in memory in float32, or the file given with ``--gray Q=MODEL``); bpp and PSNR of its
  8-bit reconstruction;
* ``gray-luma``: the ``--output luma`` conversion, computed from the colour model's float output
  (the conversion is exact, so it needs no second pass);
* each ``--extra Q:LABEL=MODEL`` (a one-channel model, e.g. one fine-tuned from quality Q's) the
  same way as ``gray``, in the rows of quality Q.

It also codes the gray images with the evaluation's JPEG (``evaluation.anchors``: Pillow, one
component, optimised Huffman tables; qualities 5..95, real file sizes)
and gives, for every point, the rate difference to JPEG at the same PSNR (log-rate interpolated
linearly in PSNR between the two JPEG points around it), and for every curve of two or more points
its BD-rate (PSNR) against JPEG (``evaluation.bd_rate``, over the JPEG points that bracket the
curve's PSNR range). The bpp of the models
are estimates (a real ``.mrac`` file is a few percent larger). Prints a Markdown table and one
JSON line; ``--out`` also writes the JSON.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from PIL import Image

from mracnn_jax import images, model_file, zoo
from mracnn_jax.config_files import data_path
from mracnn_jax.evaluation import anchors
from mracnn_jax.models import build_model, forward_any_size
from mracnn_jax.models.grayscale import OUTPUT_WEIGHTS, grayscale_from_colour

QUALITIES = (1, 2, 3)  # the bundled colour models, mracnn-bundled-q{1,2,3}.mracnn
JPEG_QUALITIES = (5, 10, 15, 20, 30, 40, 50, 60, 70, 80, 90, 95)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def to_uint8(x: np.ndarray) -> np.ndarray:
    """A decoder's 8 bits: clip to [0, 1], scale, round."""
    return np.round(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)


_FORWARD: dict[str, object] = {}


def forward_fn(config):
    """One jitted ``forward_any_size`` per architecture (parameters an argument)."""
    model = build_model(config)
    key = model.cfg.to_json(sort_keys=True)
    if key not in _FORWARD:
        _FORWARD[key] = jax.jit(
            lambda p, x: {
                k: v for k, v in forward_any_size(model, p, x).items() if k in ("x_hat", "bpp")
            }
        )
    return _FORWARD[key]


def run_model(config, params, grays: list[np.ndarray]) -> list[dict]:
    """Per image: estimated bpp and the float reconstruction ``[H, W, C]`` (C = the model's)."""
    fn, channels = forward_fn(config), build_model(config).cfg.channels
    params = jax.tree_util.tree_map(jnp.asarray, params)
    out = []
    for g in grays:
        x = np.repeat(g[None, :, :, None], channels, axis=-1).astype(np.float32) / 255.0
        r = fn(params, jnp.asarray(x))
        out.append({"bpp": float(r["bpp"]), "x_hat": np.asarray(r["x_hat"][0], np.float32)})
    return out


def jpeg_curve(grays: list[np.ndarray]) -> list[dict]:
    points = []
    for q in JPEG_QUALITIES:
        bpp, ps = [], []
        for g in grays:  # the evaluation's JPEG (optimised Huffman tables), one component
            coded = anchors.encode_decode(g, "jpeg", q)
            bpp.append(8 * len(coded.data) / g.size)
            ps.append(psnr(coded.decoded, g))
        points.append({"quality": q, "bpp": float(np.mean(bpp)), "psnr": float(np.mean(ps))})
    return points


def rate_vs(anchor: list[dict], point: dict) -> float | None:
    """Rate of ``point`` relative to the anchor's at the same PSNR, in percent (log-rate linear
    in PSNR between the anchor points around it); None outside the anchor's range."""
    ps = np.array([a["psnr"] for a in anchor])
    logr = np.log(np.array([a["bpp"] for a in anchor]))
    if not ps[0] <= point["psnr"] <= ps[-1] or np.any(np.diff(ps) <= 0):
        return None
    return float(100 * (point["bpp"] / np.exp(np.interp(point["psnr"], ps, logr)) - 1))


def bracket(anchor: list[dict], points: list[dict]) -> list[dict]:
    """The anchor points that span the PSNR range of ``points``, with one more on each side."""
    lo, hi = min(p["psnr"] for p in points), max(p["psnr"] for p in points)
    below = [i for i, a in enumerate(anchor) if a["psnr"] <= lo]
    above = [i for i, a in enumerate(anchor) if a["psnr"] >= hi]
    first = below[-1] if below else 0
    last = above[0] if above else len(anchor) - 1
    return anchor[first : last + 1]


def bd_rate_vs(anchor: list[dict], points: list[dict]) -> float | None:
    """BD-rate (PSNR) of ``points`` against the anchor points that bracket them."""
    anchor = bracket(anchor, points)
    try:
        from mracnn_jax.evaluation.bd_rate import bd_rate

        return float(
            bd_rate(
                [p["bpp"] for p in anchor], [p["psnr"] for p in anchor],
                [p["bpp"] for p in points], [p["psnr"] for p in points],
            )
        )  # fmt: skip
    except Exception as e:  # noqa: BLE001 - a curve BD-rate cannot score is reported, not fatal
        print(f"  (no BD-rate: {type(e).__name__}: {e})", file=sys.stderr)
        return None


def _pairs(items: list[str], what: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, path = item.partition("=")
        if not sep or not path:
            raise SystemExit(f"{what} wants KEY=MODEL, got {item!r}")
        out[key] = path
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default=str(data_path("kodak")), help="folder of images (Kodak)")
    ap.add_argument("--limit", type=int, default=0, help="first N images only (0: all)")
    ap.add_argument(
        "--gray",
        action="append",
        default=[],
        metavar="Q=MODEL",
        help="the gray model file of quality Q (default: converted in memory)",
    )
    ap.add_argument(
        "--extra",
        action="append",
        default=[],
        metavar="Q:LABEL=MODEL",
        help="another one-channel model, shown with quality Q (e.g. fine-tuned from it)",
    )
    ap.add_argument("--qualities", type=int, nargs="+", default=list(QUALITIES))
    ap.add_argument("--out", help="also write the results JSON here")
    args = ap.parse_args(argv)  # fmt: skip
    gray_files, extra_files = _pairs(args.gray, "--gray"), _pairs(args.extra, "--extra")
    extras = {}  # label -> (quality, path)
    for key, path in extra_files.items():
        q, sep, label = key.partition(":")
        if not sep or not q.isdigit() or not label:
            raise SystemExit(f"--extra wants Q:LABEL=MODEL, got {key}={path}")
        extras[label] = (int(q), path)

    paths = images.list_images(args.data)[: args.limit or None]
    grays = []
    for p in paths:
        with Image.open(p) as im:
            grays.append(np.asarray(im.convert("L")))
    print(f"{len(grays)} images from {args.data}, jax {jax.__version__}", file=sys.stderr)

    curves: dict[str, list[dict]] = {"colour": [], "gray": [], "gray-luma": []}
    curves.update({label: [] for label in extras})
    checks = {}  # per quality: max |gray x^ - mean of colour x^| (0 up to float noise)
    luma_w = np.asarray(OUTPUT_WEIGHTS["luma"], np.float32)
    for q in args.qualities:
        t0 = time.time()
        config, params, _ = model_file.load_model(zoo.BUNDLED_DIR / f"mracnn-bundled-q{q}.mracnn")
        colour = run_model(config, params, grays)
        if str(q) in gray_files:
            gcfg, gparams, _ = model_file.load_model(gray_files[str(q)])
        else:
            gcfg, gparams = grayscale_from_colour(config, params, "mean")
        gray = run_model(gcfg, gparams, grays)
        rows = {"colour": [], "gray": [], "gray-luma": []}
        for g, c, m in zip(grays, colour, gray):
            rgb8 = to_uint8(c["x_hat"])
            rows["colour"].append((c["bpp"], psnr(images.restore_mode(rgb8, "L"), g)))
            rows["gray"].append((m["bpp"], psnr(to_uint8(m["x_hat"][..., 0]), g)))
            rows["gray-luma"].append((c["bpp"], psnr(to_uint8(c["x_hat"] @ luma_w), g)))
            diff = float(np.max(np.abs(m["x_hat"][..., 0] - np.mean(c["x_hat"], axis=-1))))
            checks[q] = max(checks.get(q, 0.0), diff)
        for label, (eq, path) in extras.items():
            if eq != q:
                continue
            ecfg, eparams, _ = model_file.load_model(path)
            rows[label] = [
                (e["bpp"], psnr(to_uint8(e["x_hat"][..., 0]), g))
                for g, e in zip(grays, run_model(ecfg, eparams, grays))
            ]
        for label, rs in rows.items():
            curves[label].append(
                {
                    "quality": q,
                    "bpp": float(np.mean([r[0] for r in rs])),
                    "psnr": float(np.mean([r[1] for r in rs])),
                    "num_images": len(rs),
                }
            )
        print(f"quality {q}: {time.time() - t0:.0f} s", file=sys.stderr)

    jpeg = jpeg_curve(grays)
    bd = {label: bd_rate_vs(jpeg, pts) for label, pts in curves.items() if len(pts) >= 2}
    result = {
        "data": os.path.abspath(args.data),
        "num_images": len(grays),
        "curves": curves,
        "jpeg_gray": jpeg,
        "bd_rate_psnr_vs_jpeg_gray": bd,
        "max_abs_gray_minus_mean_colour_xhat": checks,
        "jax": jax.__version__,
    }

    print("| curve | quality | bpp (estimated) | PSNR (dB) | rate vs gray JPEG at equal PSNR |")
    print("|---|---:|---:|---:|---:|")
    for label, pts in curves.items():
        for p in pts:
            dr = rate_vs(jpeg, p)
            p["rate_vs_jpeg_gray_percent"] = dr
            cell = f"{dr:+.1f} %" if dr is not None else "n/a"
            print(f"| {label} | {p['quality']} | {p['bpp']:.4f} | {p['psnr']:.2f} | {cell} |")
    for label, value in bd.items():
        print(f"| {label}: BD-rate vs gray JPEG | | | | {value:+.1f} % |" if value is not None
              else f"| {label}: BD-rate vs gray JPEG | | | | n/a |")  # fmt: skip
    print(json.dumps(result))
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())

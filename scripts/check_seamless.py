#!/usr/bin/env python
"""Seamless tiles: an image computed in tiles against the same image computed in one piece.

    .venv/bin/python scripts/check_seamless.py [--quality 2] [--tile 256] [--halo 96,64]
    .venv/bin/python scripts/check_seamless.py --sweep [--quality 2] [--tile 256]

The image is a 1024 x 1536 mosaic of four landscape Kodak images (kodim01, 05, 13, 23). It is
coded twice with a bundled model: g_a in one piece (``tile=None``) and g_a in ``--tile`` tiles
with ``--halo`` (analysis, synthesis) pixels; each file is decoded the way it was encoded (g_s in
one piece, and in tiles). Reported: file bytes and their difference, the share of latent symbols
that differ, the PSNR of the tiled decode against the one-piece decode over the whole image and
over a 16-pixel band around every tile boundary (8 pixels each side), each decode's PSNR against
the original, and the seconds. With ``--halo 0,0`` the same run shows what the halos remove.

``--sweep`` measures the transforms alone, without coding: g_a in tiles with analysis halos of
0..128 pixels against g_a in one piece (largest |dy|, share of round(y) that change), and g_s in
tiles with synthesis halos of 0..8 latent pixels against g_s in one piece (PSNR, whole and band).

Prints a Markdown table and, as its last line, a JSON object with every number.
"""

from __future__ import annotations

import argparse
import json
import math
import time

import numpy as np

from mracnn_jax import codec, images, zoo
from mracnn_jax.config_files import data_path

MOSAIC = ("kodim01", "kodim05", "kodim13", "kodim23")  # landscape, 512 x 768 each


def mosaic() -> np.ndarray:
    tiles = [images.read_image(data_path("kodak", f"{name}.png"))[0] for name in MOSAIC]
    return np.concatenate(
        [np.concatenate(tiles[:2], axis=1), np.concatenate(tiles[2:], axis=1)], axis=0
    )


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def boundary_band(shape: tuple[int, int], plan, width: int = 8) -> np.ndarray:
    """Pixels within ``width`` of a tile boundary (in image coordinates)."""
    band = np.zeros(shape, bool)
    top, left = plan.offset
    rows = sorted({r.own_start for r, _ in plan.synthesis_tiles()})[1:]
    cols = sorted({c.own_start for _, c in plan.synthesis_tiles()})[1:]
    for r in rows:
        y = r * 16 - top
        band[max(y - width, 0) : y + width] = True
    for c in cols:
        x = c * 16 - left
        band[:, max(x - width, 0) : x + width] = True
    return band


class _NoBar:
    def update(self, n: int) -> None:
        pass


def sweep(image: np.ndarray, model, tile: int) -> list[dict]:
    """The transforms in tiles against one piece, for a range of halos (module docstring)."""
    from mracnn_jax.codec import latents, tiles

    clock, bar = latents.Clock(), _NoBar()
    whole = codec.tile_plan(*image.shape[:2], None)
    y = tiles.analyse(model, image, whole, clock, bar)
    x = tiles.synthesise(model, y, whole, clock, bar)
    rows = []
    for halo in (0, 16, 32, 64, 96, 128):
        plan = codec.tile_plan(*image.shape[:2], tile, (halo, 0))
        y_t = tiles.analyse(model, image, plan, clock, bar)
        rows.append({"transform": "g_a", "halo_px": halo, "max_abs_dy": float(np.abs(y_t - y).max()),
                     "round_changed": float(np.mean(np.round(y_t) != np.round(y)))})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    for latent_halo in (0, 1, 2, 4, 6, 8):
        plan = codec.tile_plan(*image.shape[:2], tile, (0, 16 * latent_halo))
        x_t = tiles.synthesise(model, y, plan, clock, bar)
        band = boundary_band(image.shape[:2], plan)
        rows.append({"transform": "g_s", "halo_px": 16 * latent_halo, "psnr_db": psnr(x_t, x),
                     "psnr_band_db": psnr(x_t[band], x[band]),
                     "max_abs_dx": int(np.abs(x_t.astype(int) - x).max())})  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quality", type=int, default=2)
    p.add_argument("--tile", type=int, default=256)
    p.add_argument("--halo", default=",".join(map(str, codec.DEFAULT_HALO)))
    p.add_argument("--sweep", action="store_true", help="the transforms alone, halo by halo")
    args = p.parse_args()
    halo = tuple(int(v) for v in args.halo.split(","))
    image = mosaic()
    model = codec.LoadedModel.load(zoo.by_quality(args.quality).path)
    if args.sweep:
        rows = sweep(image, model, args.tile)
        print(f"| {image.shape[0]}x{image.shape[1]} mosaic, bundled q{args.quality}, tiles of "
              f"{args.tile} | halo px | against one piece |")  # fmt: skip
        print("|---|---:|---|")
        for r in rows:
            if r["transform"] == "g_a":
                what = (
                    f"max abs dy {r['max_abs_dy']:.1e}, round(y) changed {r['round_changed']:.1e}"
                )
            else:
                what = (f"PSNR {r['psnr_db']:.1f} dB, band {r['psnr_band_db']:.1f} dB, max "
                        f"{r['max_abs_dx']} grey levels")  # fmt: skip
            print(f"| {r['transform']} | {r['halo_px']} | {what} |")
        print(json.dumps({"sweep": rows}))
        return
    runs = {}
    for name, tile in (("one piece", None), ("tiles", args.tile)):
        t = time.perf_counter()
        enc = codec.compress_with_info(image, model, tile=tile, halo=halo, reconstruct=False)
        t_enc = time.perf_counter() - t
        t = time.perf_counter()
        dec = codec.decompress_with_info(enc.data, model, tile=tile, halo=halo)
        runs[name] = (enc, dec, t_enc, time.perf_counter() - t)
    (e1, d1, *_), (e2, d2, *_) = runs["one piece"], runs["tiles"]
    band = boundary_band(image.shape[:2], codec.tile_plan(*image.shape[:2], args.tile, halo))
    out = {
        "image": f"{image.shape[0]}x{image.shape[1]} mosaic of {', '.join(MOSAIC)}",
        "model": f"bundled q{args.quality}",
        "tile": args.tile,
        "halo": list(halo),
        "bytes_one_piece": len(e1.data),
        "bytes_tiles": len(e2.data),
        "bytes_difference_percent": 100 * (len(e2.data) - len(e1.data)) / len(e1.data),
        "same_file": e1.data == e2.data,
        "symbols_differing": int(np.sum(e1.y_symbols != e2.y_symbols))
        + int(np.sum(e1.z_symbols != e2.z_symbols)),
        "psnr_tiles_vs_one_piece_db": psnr(d2.image, d1.image),
        "psnr_band_tiles_vs_one_piece_db": psnr(d2.image[band], d1.image[band]),
        "band_pixels": int(band.sum()),
        "psnr_one_piece_vs_original_db": psnr(d1.image, image),
        "psnr_tiles_vs_original_db": psnr(d2.image, image),
        "seconds": {
            k: {"encode": round(v[2], 1), "decode": round(v[3], 1)} for k, v in runs.items()
        },
    }
    print(f"| {out['image']}, {out['model']} | one piece | tiles of {args.tile}, halo {halo} |")
    print("|---|---:|---:|")
    print(f"| file bytes | {out['bytes_one_piece']} | {out['bytes_tiles']} "
          f"({out['bytes_difference_percent']:+.3f} %) |")  # fmt: skip
    print(f"| PSNR vs original (dB) | {out['psnr_one_piece_vs_original_db']:.3f} | "
          f"{out['psnr_tiles_vs_original_db']:.3f} |")  # fmt: skip
    print(f"| PSNR vs one piece, whole / 16-px boundary band (dB) | | "
          f"{out['psnr_tiles_vs_one_piece_db']:.1f} / {out['psnr_band_tiles_vs_one_piece_db']:.1f} |")  # fmt: skip
    print(f"| latent symbols that differ | | {out['symbols_differing']} |")
    print(json.dumps(out))


if __name__ == "__main__":
    main()

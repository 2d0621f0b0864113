#!/usr/bin/env python
"""Tiled coding (issue 8): peak memory against image and tile size, and tiled-vs-untiled quality.

Two modes; each prints a Markdown table and, as its last line, a JSON object with every number.

``memory``: for each ``--sizes`` S a square S x S RGB mosaic of the Kodak images (written as PNG
into ``--workdir``) and each ``--tiles`` T (``0``: untiled), two fresh processes run under
``/usr/bin/time -v``:

  * the encoder: ``codec.compress_with_info(tile=T)`` writes the ``.mrac`` file and the encoder's
    prediction of the decoded image (``--predict full``), or of three tiles, the first, the centre
    and the last (``--predict spot``, which saves the encoder half its network time; every tile's
    latents are still checked by the decoder's digests);
  * the decoder: ``mracnn decompress`` (the command line), whose PNG must equal the prediction.

Reported: peak RSS ("Maximum resident set size") and wall seconds of each process, bpp, and
whether the decoded image is exactly the predicted one.

``quality``: on Kodak images (``--images``, default all 24), the untiled file against tiled files
for each ``--halos`` pair (analysis, synthesis) at ``--tile`` (default 256): bpp, PSNR against the
original, the PSNR of the tiled reconstruction against the untiled one, and the bpp overhead.
Both reconstructions are the encoder's predictions (equal to the decoder's output; the memory mode
and tests/test_tiling.py check that).

    .venv/bin/python benchmarks/bench_tiling.py memory --model /tmp/mracnn_rand.mracnn \\
        --sizes 1024 2048 4096 --tiles 512
    .venv/bin/python benchmarks/bench_tiling.py quality --model MODEL --tile 256 \\
        --halos 0,0 64,64
    .venv/bin/python benchmarks/bench_tiling.py halo --model MODEL --tile 256 --halos 0 32 64

``halo``: the context each transform needs, without any coding: on one Kodak image, g_a run
tile by tile with each halo against g_a on the whole image (relative RMS error of y, share of
round(y) that change), and g_s run tile by tile on the untiled file's latents with each halo
against g_s on the whole latent (PSNR, largest pixel difference).

Run it with ``nice`` on a shared machine and read the load average printed with the results.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import re
import subprocess
import sys
import time

import numpy as np

REPO = pathlib.Path(__file__).resolve().parents[1]
KODAK = REPO.parent / "shared" / "data" / "kodak"


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _load() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def mosaic(size: int, kodak: pathlib.Path = KODAK) -> np.ndarray:
    """uint8 [size, size, 3]: the Kodak images in row-major order, each turned landscape, repeated
    as needed (cropped at the right and bottom edges)."""
    from PIL import Image

    images = []
    for p in sorted(kodak.glob("kodim*.png")):
        a = np.asarray(Image.open(p).convert("RGB"))
        images.append(a if a.shape[0] <= a.shape[1] else a.transpose(1, 0, 2))
    out = np.zeros((size, size, 3), np.uint8)
    k = 0
    for top in range(0, size, 512):
        for left in range(0, size, 768):
            a = images[k % len(images)]
            k += 1
            h, w = min(512, size - top), min(768, size - left)
            out[top : top + h, left : left + w] = a[:h, :w]
    return out


_ENCODE = r"""
import json, sys, time
import numpy as np
from PIL import Image
from mracnn_jax import codec, images
from mracnn_jax.coding import container
model_path, image_path, out_path, pred_path, tile, predict = sys.argv[1:7]
tile = int(tile) or None
full = predict == "full" or tile is None
model = codec.LoadedModel.load(model_path)
rgb, mode = images.read_image(image_path)
t = time.perf_counter()
r = codec.compress_with_info(rgb, model, tile=tile, estimate_bits=False, keep_latents=False,
                             reconstruct=full)
seconds = time.perf_counter() - t
open(out_path, "wb").write(r.data)
if full:
    pred, mask = r.reconstruction, np.ones(rgb.shape, bool)
else:  # the encoder's prediction of three tiles: first, centre, last
    grid = container.unpack(r.data).grid()
    rows, cols = grid.shape
    pred, mask = np.zeros_like(rgb), np.zeros(rgb.shape, bool)
    for i, j in {(0, 0), (rows // 2, cols // 2), (rows - 1, cols - 1)}:
        x = np.asarray(model.synthesis(grid.synthesis_input(r.y_hat, i, j)))[0]
        grid.paste(pred, x, i, j)
        grid.paste(mask, np.ones(x.shape, bool), i, j)
np.savez(pred_path, pred=pred, mask=mask)
print(json.dumps({"encode_s": seconds, "bytes": len(r.data), "seconds": r.seconds,
                  "tiling": r.tiling, "predicted_fraction": float(mask.mean())}))
"""


def _timed(cmd: list[str]) -> tuple[subprocess.CompletedProcess, float, float]:
    """Runs ``cmd`` under /usr/bin/time -v: (process, peak RSS in MiB, wall seconds)."""
    t = time.perf_counter()
    proc = subprocess.run(
        ["/usr/bin/time", "-v", *cmd],
        capture_output=True,
        text=True,
        cwd=REPO,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"),
        check=False,
    )
    wall = time.perf_counter() - t
    match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    if proc.returncode != 0 or not match:
        raise RuntimeError(f"{cmd[:3]} failed ({proc.returncode}): {proc.stderr[-3000:]}")
    return proc, int(match.group(1)) / 1024.0, wall


def run_memory(args) -> dict:
    from PIL import Image

    work = pathlib.Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    rows = []
    for size in args.sizes:
        png = work / f"mosaic{size}.png"
        if not png.exists():
            Image.fromarray(mosaic(size)).save(png)
        for tile in args.tiles:
            tag = f"{size}-t{tile}"
            mrac, pred, dec = work / f"{tag}.mrac", work / f"{tag}.pred.npz", work / f"{tag}.png"
            predict = args.predict or ("full" if size <= 2048 else "spot")
            load0 = _load()
            now = time.strftime("%H:%M:%S")
            _log(f"[{now}] {size}^2 tile {tile or 'none'}: encode (load {load0})")
            proc, enc_mib, enc_wall = _timed(
                [sys.executable, "-c", _ENCODE, args.model, str(png), str(mrac), str(pred),
                 str(tile), predict]
            )  # fmt: skip
            info = json.loads(proc.stdout.strip().splitlines()[-1])
            _log(f"  encode {enc_wall:.0f} s, peak {enc_mib:.0f} MiB; decode")
            _, dec_mib, dec_wall = _timed(
                [sys.executable, "-m", "mracnn_jax.cli", "decompress", str(mrac), str(dec),
                 "--model", args.model]
            )  # fmt: skip
            decoded = np.asarray(Image.open(dec).convert("RGB"))
            expected = np.load(pred)
            mask = expected["mask"]
            exact = bool(np.array_equal(decoded[mask], expected["pred"][mask]))
            row = {
                "size": size,
                "tile": tile,
                "tiling": info["tiling"],
                "bpp": 8 * info["bytes"] / size**2,
                "encode_peak_mib": enc_mib,
                "decode_peak_mib": dec_mib,
                "encode_wall_s": enc_wall,
                "decode_wall_s": dec_wall,
                "encode_seconds": info["seconds"],
                "exact": exact,
                "predicted_fraction": info["predicted_fraction"],
                "load_before": load0,
                "load_after": _load(),
            }
            _log(f"  decode {dec_wall:.0f} s, peak {dec_mib:.0f} MiB, exact {exact}")
            rows.append(row)
            for p in (pred, dec):
                p.unlink(missing_ok=True)
    print("| image | tile | tiles | encode peak RSS MiB | decode peak RSS MiB | encode s | "
          "decode s | bpp | exact | load (1/5/15 min) before → after |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        t = r["tiling"]
        tiles = f"{t['rows']}×{t['cols']}" if t else "untiled"
        spot = "" if r["predicted_fraction"] == 1 else f" ({r['predicted_fraction']:.0%} predicted)"
        print(
            f"| {r['size']}² | {r['tile'] or '—'} | {tiles} | {r['encode_peak_mib']:.0f} | "
            f"{r['decode_peak_mib']:.0f} | {r['encode_wall_s']:.0f} | {r['decode_wall_s']:.0f} | "
            f"{r['bpp']:.4f} | {('yes' if r['exact'] else 'NO') + spot} | {r['load_before']} → "
            f"{r['load_after']} |"
        )
    return {"mode": "memory", "rows": rows}


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else 10 * np.log10(255.0**2 / mse)


def run_quality(args) -> dict:
    from PIL import Image

    from mracnn_jax import codec

    model = codec.LoadedModel.load(args.model)
    halos = [tuple(int(v) for v in h.split(",")) for h in args.halos]
    paths = sorted(KODAK.glob("kodim*.png"))
    if args.images:
        paths = [p for p in paths if any(p.stem.endswith(f"{int(i):02d}") for i in args.images)]
    per_image = []
    for p in paths:
        img = np.asarray(Image.open(p).convert("RGB"))
        px = img.shape[0] * img.shape[1]
        t = time.perf_counter()
        ref = codec.compress_with_info(img, model, estimate_bits=False)
        row = {
            "image": p.stem,
            "untiled": {"bpp": 8 * len(ref.data) / px, "psnr": _psnr(ref.reconstruction, img)},
            "untiled_s": time.perf_counter() - t,
        }
        for ha, hs in halos:
            t = time.perf_counter()
            r = codec.compress_with_info(
                img, model, tile=args.tile, halo=(ha, hs), estimate_bits=False,
                keep_latents=False,
            )  # fmt: skip
            row[f"halo{ha},{hs}"] = {
                "bpp": 8 * len(r.data) / px,
                "psnr": _psnr(r.reconstruction, img),
                "psnr_vs_untiled": _psnr(r.reconstruction, ref.reconstruction),
                "header_bpp": r.bits["header"] / px,
                "seconds": time.perf_counter() - t,
            }
        _log(f"{p.stem} (load {_load()}): {json.dumps(row)}")
        per_image.append(row)
    summary = {}
    base_bpp = np.mean([r["untiled"]["bpp"] for r in per_image])
    base_psnr = np.mean([r["untiled"]["psnr"] for r in per_image])
    print(f"Kodak ({len(per_image)} images), model {model.name} {model.params_digest[:12]}, "
          f"tile {args.tile}")  # fmt: skip
    print("| coding | bpp | bpp overhead | PSNR dB | ΔPSNR dB | PSNR vs untiled dB | header bpp |")
    print("|---|---|---|---|---|---|---|")
    print(f"| untiled | {base_bpp:.4f} | — | {base_psnr:.3f} | — | — | — |")
    for ha, hs in halos:
        key = f"halo{ha},{hs}"
        bpp = np.mean([r[key]["bpp"] for r in per_image])
        psnr = np.mean([r[key]["psnr"] for r in per_image])
        vs = np.mean([min(r[key]["psnr_vs_untiled"], 99.0) for r in per_image])
        hdr = np.mean([r[key]["header_bpp"] for r in per_image])
        summary[key] = {"bpp": bpp, "psnr": psnr, "psnr_vs_untiled": vs, "header_bpp": hdr}
        print(
            f"| tile {args.tile}, halo {ha}/{hs} | {bpp:.4f} | "
            f"{100 * (bpp / base_bpp - 1):+.2f} % | {psnr:.3f} | {psnr - base_psnr:+.3f} | "
            f"{vs:.2f} | {hdr:.4f} |"
        )
    summary["untiled"] = {"bpp": base_bpp, "psnr": base_psnr}
    return {"mode": "quality", "model": args.model, "tile": args.tile, "summary": summary,
            "images": per_image}  # fmt: skip


def run_halo(args) -> dict:
    """How much context each transform needs: tiles of the *same* image and latent, cut with each
    halo, against the untiled transform (no coding involved, so any model shows it)."""
    from PIL import Image

    from mracnn_jax import codec
    from mracnn_jax.coding import tiling

    model = codec.LoadedModel.load(args.model)
    img = np.asarray(Image.open(KODAK / f"kodim{args.image:02d}.png").convert("RGB"))
    h, w = img.shape[:2]
    ref = codec.compress_with_info(img, model, estimate_bits=False)
    y_ref, _ = model.analysis(codec._padded_input(img), model.offsets)
    y_ref = np.asarray(y_ref)
    rows = []
    for halo in args.halos:
        grid = tiling.TileGrid(h, w, args.tile, halo, halo)
        if grid.canvas != codec._padded_input(img).shape[1:3]:
            raise SystemExit(f"pick a tile that divides the padded {h}x{w} image")
        y = np.zeros_like(y_ref)
        x = np.zeros_like(ref.reconstruction)
        t = time.perf_counter()
        for r, c in grid.tiles():
            yt, _ = model.analysis_cropped(
                grid.analysis_input(img, r, c), model.offsets, halo // tiling.LATENT_STRIDE
            )
            rs, cs = grid.block(r, c, tiling.LATENT_STRIDE)
            y[0, rs, cs] = np.asarray(yt)[0]
            xt = np.asarray(model.synthesis(grid.synthesis_input(ref.y_hat, r, c)))[0]
            grid.paste(x, xt, r, c)
        # "inner": more than BORDER pixels from the image's edge, where only the tile borders
        # inside the image can make a difference (at the edge, zeros beyond the canvas fed as
        # input differ from each layer's own zero padding: not a seam, but not untiled either).
        b, bl = args.border, args.border // tiling.LATENT_STRIDE
        yi, yri = y[:, bl:-bl, bl:-bl], y_ref[:, bl:-bl, bl:-bl]
        xi, xri = x[b:-b, b:-b], ref.reconstruction[b:-b, b:-b]
        row = {
            "halo": halo,
            "y_rel_rms": float(np.sqrt(np.mean((y - y_ref) ** 2) / np.mean(y_ref**2))),
            "y_rel_rms_inner": float(np.sqrt(np.mean((yi - yri) ** 2) / np.mean(yri**2))),
            "y_max_abs_inner": float(np.abs(yi - yri).max()),
            "y_round_changes": float(np.mean(np.round(y) != np.round(y_ref))),
            "y_round_changes_inner": float(np.mean(np.round(yi) != np.round(yri))),
            "x_psnr_vs_untiled": _psnr(x, ref.reconstruction),
            "x_psnr_vs_untiled_inner": _psnr(xi, xri),
            "x_max_abs_inner": int(np.abs(xi.astype(int) - xri).max()),
            "seconds": time.perf_counter() - t,
        }
        _log(f"halo {halo} (load {_load()}): {json.dumps(row)}")
        rows.append(row)
    print(f"kodim{args.image:02d}, model {model.name} {model.params_digest[:12]}, tile {args.tile}")
    print(f"(all pixels / more than {args.border} px from the image's edge)")
    print("| halo px | g_a: y relative RMS error | round(y) changed | "
          "g_s: PSNR vs untiled dB | g_s: max abs, inner |")  # fmt: skip
    print("|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['halo']} | {r['y_rel_rms']:.2e} / {r['y_rel_rms_inner']:.2e} | "
            f"{100 * r['y_round_changes']:.3f} / {100 * r['y_round_changes_inner']:.3f} % | "
            f"{r['x_psnr_vs_untiled']:.2f} / {r['x_psnr_vs_untiled_inner']:.2f} | "
            f"{r['x_max_abs_inner']} |"
        )
    return {"mode": "halo", "model": args.model, "tile": args.tile, "rows": rows}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    p = sub.add_parser("memory")
    p.add_argument("--model", required=True)
    p.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096])
    p.add_argument("--tiles", type=int, nargs="+", default=[512], help="0: untiled")
    p.add_argument("--workdir", default="/tmp/bench_tiling")
    p.add_argument(
        "--predict",
        choices=["full", "spot"],
        help="encoder's prediction: the whole image, or three tiles (first, centre, last) to "
        "save its synthesis time (default: full up to 2048², spot above)",
    )
    p = sub.add_parser("quality")
    p.add_argument("--model", required=True)
    p.add_argument("--tile", type=int, default=256)
    p.add_argument("--halos", nargs="+", default=["0,0", "64,64"], help="analysis,synthesis px")
    p.add_argument("--images", nargs="*", help="Kodak numbers (default: all 24)")
    p = sub.add_parser("halo")
    p.add_argument("--model", required=True)
    p.add_argument("--tile", type=int, default=256)
    p.add_argument("--image", type=int, default=1, help="Kodak number")
    p.add_argument("--halos", type=int, nargs="+", default=[0, 32, 64])
    p.add_argument("--border", type=int, default=64, help="edge band left out of 'inner'")
    args = parser.parse_args()
    _log(f"{platform.node()} {platform.machine()}, {os.cpu_count()} CPUs, load {_load()}, "
         f"{time.strftime('%Y-%m-%d %H:%M:%S')}")  # fmt: skip
    out = {"memory": run_memory, "quality": run_quality, "halo": run_halo}[args.mode](args)
    out.update(date=time.strftime("%Y-%m-%d"), cpus=os.cpu_count(), load_end=_load())
    print(json.dumps(out))


if __name__ == "__main__":
    main()

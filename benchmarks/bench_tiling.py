#!/usr/bin/env python
"""Large images: peak memory and time of ``mracnn compress`` / ``decompress`` against image and
tile size.

For each ``--sizes`` S, a square S x S RGB mosaic of the Kodak images (written as PNG into
``--workdir``), and each ``--tiles`` T (``0``: one piece, ``--no-tile``), two fresh processes run
the command line under ``/usr/bin/time -v``: ``mracnn compress --tile T`` (g_a in T x T tiles
with the default halos, the latent coded as one) and ``mracnn decompress --tile T`` (g_s in
tiles). Reported: peak RSS ("Maximum resident set size") and wall seconds of each process
(imports and compilation included), bpp, and the PSNR of the decoded image against the mosaic.
Whether tiles change the result is ``scripts/check_seamless.py``'s question.

    .venv/bin/python benchmarks/bench_tiling.py --model MODEL --sizes 1024 4096 --tiles 512

Prints a Markdown table and, as its last line, a JSON object with every number. Run it with
``nice`` on a shared machine and read the load average printed with the results.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import pathlib
import platform
import re
import subprocess
import sys
import time

import numpy as np

from mracnn_jax.config_files import REPO, data_path

KODAK = data_path("kodak")


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


def _timed(cmd: list[str]) -> tuple[float, float]:
    """Runs ``cmd`` under /usr/bin/time -v: (peak RSS in MiB, wall seconds)."""
    t = time.perf_counter()
    proc = subprocess.run(
        ["/usr/bin/time", "-v", *cmd], capture_output=True, text=True, cwd=REPO,
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"), check=False,
    )  # fmt: skip
    wall = time.perf_counter() - t
    match = re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr)
    if proc.returncode != 0 or not match:
        raise RuntimeError(f"{cmd[:4]} failed ({proc.returncode}): {proc.stderr[-3000:]}")
    return int(match.group(1)) / 1024.0, wall


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def main() -> None:
    from PIL import Image

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", required=True, help="model file")
    p.add_argument("--sizes", type=int, nargs="+", default=[1024, 4096])
    p.add_argument("--tiles", type=int, nargs="+", default=[512], help="0: one piece")
    p.add_argument("--workdir", default="/tmp/bench_tiling")
    args = p.parse_args()
    work = pathlib.Path(args.workdir)
    work.mkdir(parents=True, exist_ok=True)
    cli = [sys.executable, "-m", "mracnn_jax.cli"]
    rows = []
    for size in args.sizes:
        png = work / f"mosaic{size}.png"
        if not png.exists():
            Image.fromarray(mosaic(size)).save(png)
        for tile in args.tiles:
            flags = ["--tile", str(tile)] if tile else ["--no-tile"]
            mrac, dec = work / f"{size}-t{tile}.mrac", work / f"{size}-t{tile}.png"
            load0 = _load()
            _log(f"[{time.strftime('%H:%M:%S')}] {size}^2 tile {tile or 'none'} (load {load0})")
            common = ["--model", args.model, "--no-cache", *flags]
            for f in (mrac, dec):
                f.unlink(missing_ok=True)
            enc_mib, enc_s = _timed([*cli, "compress", str(png), str(mrac), *common])
            dec_mib, dec_s = _timed([*cli, "decompress", str(mrac), str(dec), *common])
            decoded = np.asarray(Image.open(dec).convert("RGB"))
            row = {
                "size": size, "tile": tile, "bpp": 8 * mrac.stat().st_size / size**2,
                "psnr_db": _psnr(decoded, np.asarray(Image.open(png).convert("RGB"))),
                "encode_peak_mib": enc_mib, "decode_peak_mib": dec_mib,
                "encode_wall_s": enc_s, "decode_wall_s": dec_s,
                "load_before": load0, "load_after": _load(),
            }  # fmt: skip
            _log(f"  {json.dumps(row)}")
            rows.append(row)
            dec.unlink(missing_ok=True)
    print("| image | tile | encode peak RSS MiB | decode peak RSS MiB | encode s | decode s | bpp | "
          "PSNR dB | load (1/5/15 min) before → after |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {r['size']}² | {r['tile'] or 'one piece'} | {r['encode_peak_mib']:.0f} | "
            f"{r['decode_peak_mib']:.0f} | {r['encode_wall_s']:.0f} | {r['decode_wall_s']:.0f} | "
            f"{r['bpp']:.4f} | {r['psnr_db']:.2f} | {r['load_before']} → {r['load_after']} |"
        )
    print(json.dumps({"machine": platform.machine(), "cpus": os.cpu_count(), "rows": rows}))


if __name__ == "__main__":
    main()

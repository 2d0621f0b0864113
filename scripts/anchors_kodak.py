"""Classic anchors (JPEG 4:2:0, WebP, JPEG 2000, AVIF via Pillow) on the Kodak set.

Writes docs/results/anchors/<codec>.json (CompressAI eval layout), docs/results/anchors/
<codec>.csv (per image), docs/results/anchors/summary.md and docs/results/rd_anchors.png, and
prints the wall time and whether each curve is monotone (bpp, PSNR and MS-SSIM all strictly
increasing along the sweep).

    python scripts/anchors_kodak.py [--data ../shared/data/kodak] [--out docs/results]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from mracnn_jax.config_files import REPO, data_path
from mracnn_jax.evaluation import anchors, plots, results


def is_monotone(means: list[dict]) -> bool:
    return all(bool(np.all(np.diff([m[k] for m in means]) > 0)) for k in ("bpp", "psnr", "ms_ssim"))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=data_path("kodak"))
    p.add_argument("--out", type=Path, default=REPO / "docs" / "results")
    p.add_argument("--codecs", nargs="+", default=list(anchors.CODECS))
    args = p.parse_args(argv)

    names, images = anchors.load_image_dir(args.data)
    print(f"{len(images)} images from {args.data}")
    print(
        "Pillow codecs:",
        ", ".join(
            f"{c}={'yes' if ok else 'MISSING'}" for c, ok in anchors.available_codecs().items()
        ),
    )
    t_all = time.perf_counter()
    cpu_all = time.process_time()
    curves, all_ok = [], True
    for codec in args.codecs:
        if not anchors.codec_available(codec):
            print(f"{codec}: skipped, not in this Pillow build")
            all_ok = False
            continue
        t0 = time.perf_counter()
        records, means = anchors.run_codec(codec, images, names=names)
        dt = time.perf_counter() - t0
        res = results.make_result(
            codec, anchors.description(codec), means, dataset=f"kodak ({len(images)} images)"
        )
        results.write_result_json(args.out / "anchors" / f"{codec}.json", res)
        results.write_records_csv(args.out / "anchors" / f"{codec}.csv", records)
        curves.append(res)
        mono = is_monotone(means)
        all_ok &= mono
        bpps = [m["bpp"] for m in means]
        print(f"{codec:9s} {dt:6.1f} s  bpp {min(bpps):.3f}..{max(bpps):.3f}  monotone={mono}")
        for m in means:
            print(
                f"    q={m['quality']:<5} bpp {m['bpp']:.4f}  PSNR {m['psnr']:.2f}  "
                f"MS-SSIM {m['ms_ssim']:.4f} ({m['ms_ssim_db']:.2f} dB)  "
                f"enc {m['encode_s'] * 1e3:.1f} ms  dec {m['decode_s'] * 1e3:.1f} ms"
            )
    wall = time.perf_counter() - t_all
    cpu = time.process_time() - cpu_all
    published = results.load_published()
    plots.plot_rd(
        curves,
        args.out / "rd_anchors.png",
        published=published,
        title=f"Kodak ({len(images)} images): Pillow anchors",
    )
    anchor = next((c for c in curves if c["name"] == "jpeg"), None)
    results.write_markdown_summary(
        args.out / "anchors" / "summary.md",
        curves + published,
        anchor=anchor,
        title="Pillow anchors on Kodak",
    )
    print(f"wall time {wall:.1f} s (process CPU {cpu:.1f} s); all monotone: {all_ok}")
    return 0 if all_ok else 1


if __name__ == "__main__":
    raise SystemExit(main())

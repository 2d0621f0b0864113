"""The quickstart demo (``make demo``): the bundled models against JPEG and WebP on the sample images.

    python -m mracnn_jax.demo [--out demo_out] [--data DIR] [--model M ...]

1. Every sample image (``mracnn_jax/assets/samples``) is compressed with every bundled model
   (``mracnn_jax/assets/models``) to a real ``.mrac`` file, read back and decompressed; the decoded
   image must equal the encoder's reconstruction (``evaluation.runner``). JPEG and WebP run their
   quality sweeps on the same images. This writes the RD plot, the JSON/CSV results and
   ``summary.md`` into ``--out``.
2. For each (image, model) pair, JPEG and WebP are then run at a *matched rate*: the Pillow quality
   whose file is closest in size to the ``.mrac`` file (a bisection over the integer qualities
   1–100, on which both codecs' sizes grow monotonically for natural images), and the table of
   bpp / PSNR / MS-SSIM side by side is printed and written to ``matched_rate.md``. A codec this
   Pillow cannot write (a build without libwebp) is left out of both, with the evaluation's note.

bpp is always 8 · file bytes / (H · W) of the original image.
"""

from __future__ import annotations

import argparse
import csv
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mracnn_jax import metrics, zoo
from mracnn_jax.evaluation import anchors, measure, runner

MATCHED_CODECS = ("jpeg", "webp")


def matched_quality(image, codec: str, target_bytes: int) -> tuple[int, Any]:
    """The integer quality in [1, 100] whose ``codec`` file is closest in size to
    ``target_bytes``, and that coding (``anchors.CodedImage``). Assumes the size grows with the
    quality (bisection for the smallest quality at or above the target, then the closer of it and
    its predecessor)."""
    cache: dict[int, Any] = {}

    def code(q: int):
        if q not in cache:
            cache[q] = anchors.encode_decode(image, codec, q)
        return cache[q]

    lo, hi = 1, 100
    while lo < hi:
        mid = (lo + hi) // 2
        if len(code(mid).data) >= target_bytes:
            hi = mid
        else:
            lo = mid + 1
    best = min({lo, max(lo - 1, 1)}, key=lambda q: abs(len(code(q).data) - target_bytes))
    return best, code(best)


def matched_codecs() -> tuple[str, ...]:
    """``MATCHED_CODECS`` that this Pillow can write (a build without libwebp: JPEG only)."""
    return tuple(c for c in MATCHED_CODECS if anchors.codec_available(c))


def matched_rate_rows(
    records: list[dict[str, Any]], images: dict[str, Any], codecs: Sequence[str] = MATCHED_CODECS
) -> list[dict]:
    """One row per model record: the model's bpp/PSNR/MS-SSIM and each of ``codecs``' at the
    matched rate on the same image."""
    rows = []
    for r in records:
        image = images[r["image"]]
        h, w = image.shape[:2]
        row = {k: r[k] for k in ("image", "point", "bpp", "psnr", "ms_ssim")}
        for codec in codecs:
            q, coded = matched_quality(image, codec, r["num_bytes"])
            m = measure.score(image, coded.decoded)
            row[codec] = {
                "quality": q,
                "bpp": metrics.bpp_from_file_size(len(coded.data), h, w),
                "psnr": float(m["psnr"]),
                "ms_ssim": float(m["ms_ssim"]),
            }
        rows.append(row)
    return rows


def matched_rate_table(rows: list[dict], codecs: Sequence[str] = MATCHED_CODECS) -> str:
    """The rows (of ``matched_rate_rows`` with these ``codecs``) as a Markdown table, with a mean
    row per model point."""
    head = "| image | model | bpp | PSNR | MS-SSIM |" + "".join(
        f" {c.upper()} q | bpp | PSNR | MS-SSIM |" for c in codecs
    )
    sep = "|" + " --- |" * (5 + 4 * len(codecs))

    def line(label: str, point: str, r: dict) -> str:
        s = f"| {label} | {point} | {r['bpp']:.3f} | {r['psnr']:.2f} | {r['ms_ssim']:.4f} |"
        for c in codecs:
            a = r[c]
            q = a["quality"] if isinstance(a["quality"], int) else "–"
            s += f" {q} | {a['bpp']:.3f} | {a['psnr']:.2f} | {a['ms_ssim']:.4f} |"
        return s

    lines = [head, sep] + [line(r["image"], r["point"], r) for r in rows]
    for point in dict.fromkeys(r["point"] for r in rows):
        group = [r for r in rows if r["point"] == point]
        mean = {k: sum(g[k] for g in group) / len(group) for k in ("bpp", "psnr", "ms_ssim")}
        for c in codecs:
            mean[c] = {"quality": None}
            for k in ("bpp", "psnr", "ms_ssim"):
                mean[c][k] = sum(g[c][k] for g in group) / len(group)
        lines.append(line("**mean**", point, mean))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(
        prog="python -m mracnn_jax.demo",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    p.add_argument("--data", default=str(runner.SAMPLES_DIR), help="folder of images")
    p.add_argument(
        "--model", nargs="*", default=None, help="model files (default: the bundled models)"
    )
    a = p.parse_args(argv)

    models = a.model or [e.path for e in zoo.for_channels(3)]
    codecs = matched_codecs()
    if not models:
        print(zoo.no_model_message(), file=sys.stderr)
        return 1
    try:
        ev = runner.run_evaluation(
            models,
            a.data,
            a.out,
            anchor_codecs=codecs,
            bd_anchor="jpeg",
            resume=False,  # a demonstration codes the images every time it runs
            echo=None,
        )
    except runner.EvaluationError as e:
        print(f"demo: {e}", file=sys.stderr)
        return 1
    names, images = runner.load_images(a.data)
    model_records = []
    for role, path in ev.files.items():
        if role.endswith(".csv") and Path(role).stem not in MATCHED_CODECS:
            with open(path, newline="") as f:
                for r in csv.DictReader(f):
                    model_records.append(
                        {
                            **r,
                            **{k: float(r[k]) for k in ("bpp", "psnr", "ms_ssim")},
                            "num_bytes": int(r["num_bytes"]),
                        }
                    )
    rows = matched_rate_rows(model_records, dict(zip(names, images)), codecs)
    table = matched_rate_table(rows, codecs)
    out = Path(a.out)
    against = (
        " and ".join(anchors.display_name(c) for c in codecs) or "no anchor (Pillow writes none)"
    )
    (out / "matched_rate.md").write_text(
        f"# Bundled models against {against} at matched rate\n\n" + table + "\n"
    )
    print(f"\nBundled models against {against} at the quality of closest file size:\n")
    print(table)
    print()
    print(ev.summary)
    print(f"RD plot: {ev.files['plot']}   all results: {out}/")
    return 0


if __name__ == "__main__":
    sys.exit(main())

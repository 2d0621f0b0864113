#!/usr/bin/env python
"""Our MS-SSIM (``tf.image.ssim_multiscale``'s convention) against ``pytorch_msssim`` (CompressAI's).

    .venv/bin/python scripts/msssim_vs_pytorch.py        # needs torch and pytorch_msssim

The 24 Kodak images against Pillow JPEG copies at qualities 10, 30 and 75, whole (768x512) and
cropped by one row and column (767x511: odd sides, where the two downsamplings differ). Ours is
``metrics.ms_ssim`` on uint8 with peak 255; theirs ``pytorch_msssim.ms_ssim`` on the same values
as float32 with ``data_range=255``, as CompressAI calls it. Prints a Markdown table of the
absolute differences, in MS-SSIM and in MS-SSIM dB (-10 log10(1 - m)).
"""

from __future__ import annotations

import io
import math

import numpy as np
import torch
from PIL import Image
from pytorch_msssim import ms_ssim as pytorch_ms_ssim

from mracnn_jax import metrics
from mracnn_jax.config_files import data_path


def _jpeg(x: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(x).save(buf, "JPEG", quality=quality)
    return np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))


def _db(m: float) -> float:
    return -10 * math.log10(1 - m)


def _nchw(a: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(a)).permute(2, 0, 1)[None].float()


def main() -> None:
    torch.set_num_threads(1)
    rows: dict[tuple[str, int], list[tuple[float, float]]] = {}
    for crop in ("768x512", "767x511"):
        for i in range(1, 25):
            x = np.asarray(Image.open(data_path("kodak", f"kodim{i:02d}.png")).convert("RGB"))
            if crop == "767x511":
                x = x[:-1, :-1]
            for q in (10, 30, 75):
                y = _jpeg(x, q)
                ours = float(metrics.ms_ssim(x, y, 255.0))
                theirs = float(pytorch_ms_ssim(_nchw(x), _nchw(y), data_range=255.0))
                rows.setdefault((crop, q), []).append((ours, theirs))
    print("| Kodak | JPEG q | mean MS-SSIM (ours) | mean diff | max diff | mean diff (dB) | "
          "max diff (dB) |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|")
    for (crop, q), pairs in rows.items():
        a = np.array(pairs)
        d = np.abs(a[:, 0] - a[:, 1])
        ddb = np.abs([_db(o) - _db(t) for o, t in pairs])
        print(f"| {crop} | {q} | {a[:, 0].mean():.5f} | {d.mean():.1e} | {d.max():.1e} | "
              f"{ddb.mean():.1e} | {ddb.max():.1e} |")  # fmt: skip


if __name__ == "__main__":
    main()

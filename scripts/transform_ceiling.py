#!/usr/bin/env python
"""How much of a model's distortion is its transforms' and how much its quantisation's.

    python scripts/transform_ceiling.py --data ../shared/data/kodak [--images N] MODEL.mracnn ...

For each RGB image x (``[H, W, 3]`` uint8, centred zero padding to a multiple of 64 as the codec
pads) and each model, with y = g_a(x/255) ``[1, H/16, W/16, M]``:

* **ceiling**: PSNR of g_s(y), no quantisation at all: what the transforms reach at any rate;
* **rounded**: PSNR of g_s(round(y)), the latents rounded to integers without the entropy model's
  means (the codec rounds y - μ and adds μ back, so its PSNR lies near this one);
* **mean |y|**: the latents' mean magnitude, the scale at which rounding's unit step acts.

Reconstructions are clipped to [0, 1], cropped, and rounded to 8 bits like a decoded image; the
PSNR is the mean over images of each image's PSNR (RGB, peak 255), the convention of
``evaluate.py``. A model whose real-file PSNR (evaluate.py) sits close to its ceiling is limited
by its transforms, and training its entropy model or raising its rate cannot lift it much.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from mracnn_jax import codec
from mracnn_jax.evaluation import runner
from mracnn_jax.metrics.pixels import psnr
from mracnn_jax.models.padding import crop, pad_to_multiple


def measure(model: codec.LoadedModel, images: list[np.ndarray]) -> dict[str, float]:
    """Mean ``ceiling`` and ``rounded`` PSNR (dB) and mean |y| of ``model`` over ``images``."""
    if model.channels != 3:
        raise SystemExit(f"transform_ceiling.py: {model.name} is not an RGB model")
    pieces, rows = model.pieces, []
    for rgb in images:
        h, w = rgb.shape[:2]
        x = pad_to_multiple(jnp.asarray(rgb, jnp.float32)[None] / 255.0)
        y = pieces.analysis(model.params, x)
        row = [float(jnp.mean(jnp.abs(y)))]
        for latents in (y, jnp.round(y)):
            x_hat = crop(pieces.synthesis(model.params, latents, 255), h, w)[0]
            row.append(float(psnr(rgb, x_hat)))
        rows.append(row)
    mean_abs, ceiling, rounded = np.mean(rows, axis=0)
    return {"ceiling": ceiling, "rounded": rounded, "mean_abs_y": mean_abs}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+", type=Path, help="model files (.mracnn)")
    p.add_argument("--data", type=Path, required=True, help="a folder of RGB images (Kodak)")
    p.add_argument("--images", type=int, default=0, help="the first N images only (0: all)")
    a = p.parse_args(argv)
    _, images = runner.load_images(a.data)
    if a.images > 0:
        images = images[: a.images]
    if not images or any(im.ndim != 3 for im in images):
        raise SystemExit(f"transform_ceiling.py: {a.data} has no images, or not all are RGB")
    print(f"{len(images)} images from {a.data}")
    print("| model | λ | ceiling (no quantisation) | rounded | mean abs y |")
    print("|---|---:|---:|---:|---:|")
    for path in a.models:
        model = codec.LoadedModel.load(path)
        r = measure(model, images)
        lmbda = model.metadata.get("lmbda", "")
        print(
            f"| {path} | {lmbda} | {r['ceiling']:.2f} dB | {r['rounded']:.2f} dB "
            f"| {r['mean_abs_y']:.3f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())

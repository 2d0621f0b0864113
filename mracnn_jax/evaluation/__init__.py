"""Evaluation of learned and classic image codecs.

Modules (imported on their own); the image metrics they score with are ``mracnn_jax.metrics``,
shared with the training loss (training imports nothing from here):
  anchors   JPEG / WebP / JPEG 2000 / AVIF through Pillow, quality sweeps, per-image records
  bd_rate   Bjøntegaard-delta rate (PCHIP) via the `bjontegaard` package
  results   CompressAI eval JSON, per-image CSV, Markdown summary, published reference results
  compare   reference curves (--compare files, shipped published Kodak curves), the Kodak rule
  plots     PSNR–bpp and MS-SSIM(dB)–bpp PNGs
  journal   what an evaluation has finished (completed.jsonl), so that a rerun resumes
  runner    models and anchors on an image folder through real files (behind evaluate.py)
"""

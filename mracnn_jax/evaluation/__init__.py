"""Evaluation of learned and classic image codecs.

Modules (imported on their own, so that training pulls in neither Pillow codecs nor
matplotlib):
  metrics   PSNR, SSIM, MS-SSIM (JAX, differentiable), MS-SSIM dB, bpp from a file size
  anchors   JPEG / WebP / JPEG 2000 / AVIF through Pillow, quality sweeps, per-image records
  bd_rate   Bjøntegaard-delta rate (PCHIP) via the `bjontegaard` package
  results   CompressAI eval JSON, per-image CSV, Markdown summary, published reference results
  plots     PSNR–bpp and MS-SSIM(dB)–bpp PNGs
  runner    models and anchors on an image folder through real files (behind evaluate.py)
"""

"""The rate–distortion objective: the training loss, and the per-image loss the encoder's latent
refinement minimises (``codec.latent_refinement``).

For a batch x `[B, H, W, 3]` in [0, 1], the model output ``out`` with reconstruction
``out['x_hat']`` and latent likelihoods ``out['likelihoods']`` (a dict, e.g. {'y', 'z'}, each
`[B, h, w, C]`, probabilities > 0):

  bpp  = Σ_latents Σ −log2 p / (B·H·W)             (``entropy.rate``: estimated bits per pixel)
  MSE  = mean((x̂ − x)²)                             (over B, H, W and C; [0, 1] scale)
  'mse':      L = λ·255²·MSE + bpp                  (CompressAI's RateDistortionLoss)
  'ms-ssim':  L = λ·(1 − MS-SSIM(x̂, x)) + bpp       (MS-SSIM with max_val 1, averaged over B)

PSNR is reported as 10·log10(1 / MSE) of the batch MSE (the reconstruction is not clipped here, as
in the loss; the validation step clips and rounds).
"""

from __future__ import annotations

from typing import Any

import jax.numpy as jnp

from mracnn_jax.entropy.rate import total_bits
from mracnn_jax.metrics import ms_ssim as _ms_ssim

#: The distortion terms a model can be trained under (``train.loss_metric``; the config checks
#: repeat the tuple in ``training.defaults``).
LOSS_METRICS: tuple[str, ...] = ("mse", "ms-ssim")


def rate_distortion_loss(
    x: jnp.ndarray, out: dict[str, Any], *, lmbda: float, metric: str = "mse"
) -> tuple[jnp.ndarray, dict[str, jnp.ndarray]]:
    """The loss of the module docstring and its parts.

    Args:
      x: originals `[B, H, W, 3]`, float in [0, 1].
      out: the model output: ``x_hat`` `[B, H, W, 3]` and ``likelihoods``.
      lmbda: λ.
      metric: 'mse' or 'ms-ssim'.

    Returns:
      ``(loss, metrics)``; metrics has scalar ``loss``, ``bpp``, ``mse``, ``psnr`` and, for
      'ms-ssim', ``ms_ssim``.
    """
    if metric not in LOSS_METRICS:
        raise ValueError(f"loss metric must be one of {LOSS_METRICS}, got {metric!r}")
    b, h, w, _ = x.shape
    x_hat = out["x_hat"].astype(jnp.float32)
    x = x.astype(jnp.float32)
    bpp = total_bits(out["likelihoods"]) / (b * h * w)
    mse = jnp.mean(jnp.square(x_hat - x))
    metrics = {"bpp": bpp, "mse": mse, "psnr": -10.0 * jnp.log10(mse)}
    if metric == "mse":
        loss = lmbda * 255.0**2 * mse + bpp
    else:
        msssim = jnp.mean(_ms_ssim(x_hat, x, max_val=1.0))
        metrics["ms_ssim"] = msssim
        loss = lmbda * (1.0 - msssim) + bpp
    metrics["loss"] = loss
    return loss, metrics

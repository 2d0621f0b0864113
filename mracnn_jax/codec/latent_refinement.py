"""Encoder-side latent refinement: the y a file codes, optimised for this one image's R + λD.

The analysis transform g_a is amortised: one network guesses a good latent for every image, and
on a model trained as briefly as ours its guess leaves rate and distortion on the table (the
amortisation gap; Campos et al. 2019, Yang et al. 2020, "Improving inference for neural image
compression"). The decoder only ever sees symbols, so the encoder may pick any y it likes. This
module starts from y_0 = g_a(x) and takes ``steps`` Adam steps on the model's own rate-distortion
loss for this image, every rounding straight-through:

    z^  = round(h_a(y) - m) + m                      (m: the z offsets of the model file)
    (means, scales) = h_s(z^);   for each slice i:
      (mu_i, sigma_i, support_i) = slice_i(means, scales, y^_0 .. y^_{i-1})
      y~_i = round(y_i - mu_i) + mu_i;   y^_i = LRP_i(support_i, y~_i)
    x^  = g_s(y^) cropped to the image, clipped to [0, 1]
    L(y) = (-log2 p_z(z^) - sum_i log2 N(y~_i; mu_i, sigma_i)) / (H W) + lambda 255^2 MSE(x^, x)
           ('mse' models; 'ms-ssim' models: lambda (1 - MS-SSIM) + bpp: ``models.objective``)

L is the rate and distortion of the rounded latent itself (the likelihoods of the transmitted
symbols), so the loss of each iterate is known exactly up to the coding tables' quantisation, and
the iterate with the lowest L is the one kept: refinement never returns a latent the model rates
worse than g_a's. The gradient is taken of a smoother surrogate from the same forward pass: the
rate terms are the likelihoods of the unit bins centred on y_i and z themselves instead of on their
rounded values (the distortion and the contexts stay straight-through). Differentiating L itself
(straight-through everywhere) gained less and diverged sooner (docs/history.md, "Latent
refinement"). The step size decays from ``learning_rate`` to 0 on a cosine over the steps. Shapes: x ``[1, H, W, C]`` in [0, 1] (the image,
unpadded), y ``[1, P_H / 16, P_W / 16, M]`` (P: the padded canvas of ``models.padding``).

Nothing changes for the decoder or the format: a refined file is an ordinary file. Cost: one
forward and backward pass of h_a, h_s, the entropy model and g_s on the whole image per step (the
image is not tiled, so memory follows the image: ``MAX_PIXELS``).
"""

from __future__ import annotations

import dataclasses
import math
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax

from mracnn_jax.entropy.gaussian import gaussian_likelihood
from mracnn_jax.entropy.quantize import quantize_around
from mracnn_jax.metrics import min_size_for_ms_ssim
from mracnn_jax.models.objective import LOSS_METRICS, rate_distortion_loss
from mracnn_jax.models.padding import crop

DEFAULT_LEARNING_RATE = 0.01  # Adam's first step on y (latent units; a symbol is 1 wide)
MAX_PIXELS = 2**22  # refinement holds the whole image's activations and their gradients


class RefinementError(ValueError):
    """A refinement that cannot run (no λ for the model, an image too large, bad options)."""


@dataclasses.dataclass
class Refinement:
    """The refined latent and how it got there."""

    y: np.ndarray  # float32 [1, h, w, M]: the iterate with the lowest loss
    losses: list  # L at y_0 (g_a's latent), y_1, ..., y_steps
    best_step: int  # index into ``losses`` of ``y``
    seconds: float  # wall time, compilation included

    @property
    def gain(self) -> float:
        """Relative loss reduction against g_a's latent (0 when nothing better was found)."""
        return 1.0 - self.losses[self.best_step] / self.losses[0]


def _rd_outputs(m, y, offsets):
    """The straight-through forward of the module docstring on the bound ``ImageCompressor``."""
    z = m.hyper_analysis(y)
    z_hat = quantize_around(z, offsets, ste=True)
    means, scales = m.hyper_synthesis(z_hat)
    decoded, likelihoods, smooth = [], [], []
    for i, y_i in enumerate(jnp.split(y, m.cfg.entropy.num_slices, axis=-1)):
        mu, sigma, support = m.slice_parameters(i, means, scales, decoded)
        y_tilde = quantize_around(y_i, mu, ste=True)
        likelihoods.append(gaussian_likelihood(y_tilde, mu, sigma))
        smooth.append(gaussian_likelihood(y_i, mu, sigma))
        decoded.append(m.refine_slice(i, support, y_tilde))
    x_hat = m.synthesis(jnp.concatenate(decoded, axis=-1))
    return (
        x_hat,
        {"y": likelihoods, "z": m.z_likelihood(z_hat)},
        {"y": smooth, "z": m.z_likelihood(z)},
    )


_FUNCTIONS: dict = {}  # (pieces, metric) -> (jitted step, jitted loss)
_ADAM = optax.scale_by_adam()  # the direction; the step's size is the schedule's (``rate``)


def _functions(model, metric: str):
    """The jitted loss and Adam step of one architecture and metric (compiled once per shape)."""
    key = (id(model.pieces), metric)
    if key not in _FUNCTIONS:
        module = model.pieces.module

        def loss(y, params, offsets, x, lmbda):
            """(surrogate, L): both on the same forward pass, the first one differentiated."""
            x_hat, coded, smooth = module.apply(
                {"params": params}, y, offsets, method=lambda m, y, o: _rd_outputs(m, y, o)
            )
            x_hat = jnp.clip(crop(x_hat.astype(jnp.float32), x.shape[1], x.shape[2]), 0.0, 1.0)
            value, _ = rate_distortion_loss(
                x, {"x_hat": x_hat, "likelihoods": coded}, lmbda=lmbda, metric=metric
            )
            surrogate, _ = rate_distortion_loss(
                x, {"x_hat": x_hat, "likelihoods": smooth}, lmbda=lmbda, metric=metric
            )
            return surrogate, value

        def step(y, adam_state, rate, params, offsets, x, lmbda):
            grad_fn = jax.value_and_grad(loss, has_aux=True)
            (_, value), grad = grad_fn(y, params, offsets, x, lmbda)
            direction, adam_state = _ADAM.update(grad, adam_state)
            return value, y - rate * direction, adam_state

        _FUNCTIONS[key] = (jax.jit(step), jax.jit(lambda *a: loss(*a)[1]))
    return _FUNCTIONS[key]


def learning_rate_at(k: int, steps: int, learning_rate: float) -> float:
    """Cosine decay from ``learning_rate`` at step 0 to 0 after ``steps`` steps."""
    return 0.5 * learning_rate * (1.0 + math.cos(math.pi * k / steps))


def model_lambda(model) -> tuple[float, str]:
    """(λ, loss metric) the model was trained with, from its metadata; raises ``RefinementError``
    for a model that does not record λ."""
    lmbda = model.metadata.get("lmbda")
    if lmbda is None:
        raise RefinementError(
            f"model {model.name} does not record the lambda it was trained with (metadata "
            "'lmbda'); latent refinement needs it"
        )
    metric = str(model.metadata.get("loss_metric", "mse"))
    if metric not in LOSS_METRICS:
        raise RefinementError(
            f"model {model.name} has loss metric {metric!r}, not one of {LOSS_METRICS}"
        )
    return float(lmbda), metric


def refine_latent(
    model,
    samples: np.ndarray,
    peak: int,
    y: np.ndarray,
    steps: int,
    learning_rate: float = DEFAULT_LEARNING_RATE,
    progress=None,
) -> Refinement:
    """Refines ``y = g_a(samples)`` for ``steps`` steps (module docstring).

    ``samples`` ``[H, W, C]`` integers of the image (C: the model's channels) with maximum
    ``peak``; ``progress``, if given, is called with each step's index and loss.
    """
    if isinstance(steps, bool) or not isinstance(steps, (int, np.integer)) or steps < 0:
        raise RefinementError(f"refinement steps must be a whole number >= 0, got {steps!r}")
    if not learning_rate > 0:
        raise RefinementError(f"refinement learning rate must be > 0, got {learning_rate!r}")
    h, w = samples.shape[:2]
    if h * w > MAX_PIXELS:
        raise RefinementError(
            f"latent refinement holds the whole image; {h}x{w} is above its {MAX_PIXELS} pixels"
        )
    lmbda, metric = model_lambda(model)
    if metric == "ms-ssim" and min(h, w) < min_size_for_ms_ssim():
        raise RefinementError(
            f"model {model.name} is refined under MS-SSIM, which needs at least "
            f"{min_size_for_ms_ssim()} pixels a side; the image is {h}x{w}"
        )
    step, loss = _functions(model, metric)
    t = time.perf_counter()
    x = jnp.asarray(samples[None].astype(np.float32) / float(peak))
    args = (model.params, jnp.asarray(model.offsets), x, jnp.float32(lmbda))
    current = jnp.asarray(y, jnp.float32)
    adam_state = _ADAM.init(current)
    losses, best, best_y = [], 0, current
    for k in range(steps):
        rate = jnp.float32(learning_rate_at(k, steps, learning_rate))
        value, new, adam_state = step(current, adam_state, rate, *args)
        losses.append(float(value))
        if losses[-1] < losses[best]:
            best, best_y = k, current
        if progress is not None:
            progress(k, losses[-1])
        current = new
    losses.append(float(loss(current, *args)))
    if losses[-1] < losses[best]:
        best, best_y = steps, current
    return Refinement(np.asarray(best_y), losses, best, time.perf_counter() - t)

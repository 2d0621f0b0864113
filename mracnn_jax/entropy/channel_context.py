"""Channel-wise autoregressive entropy model for y (Minnen & Singh 2020), with MRACNN's CLAB.

y ``[B, h, w, M]`` is split along channels into S equal slices y_0..y_{S-1} (M/S channels each).
Slice i is coded after the slices before it, conditioned on the hyper-decoder outputs and on the
already *decoded* slices (``max_support`` of them, counted from slice 0; -1 = all):

    m_i = A_mean_i( concat(latent_means,  y^_0 .. y^_{n_i - 1}) )      n_i = min(i, max_support)
    s_i = A_scale_i( concat(latent_scales, y^_0 .. y^_{n_i - 1}) )
    mu_i = cc_mean_i(m_i),   sigma_i = cc_scale_i(s_i)                   [B, h, w, M/S]
    y~_i = round(y_i - mu_i) + mu_i                                      (straight-through in training)
    y^_i = y~_i + 1/2 tanh( lrp_i( concat(m_i, y~_i) ) )                 latent residual prediction

``A`` is CLAB (``support_attention='clab'``, the channel-aware squeezing of MRACNN) or the
identity (WACNN). ``cc`` and ``lrp`` are stacks of k x k convolutions with GELU between them,
widths ``cc_widths`` then M/S. The rate of slice i is -log2 of the Gaussian conditional
likelihood of y_i (with uniform noise in training, of y~_i at inference) under N(mu_i, sigma_i).

The same object estimates (``__call__``) and, through ``slice_parameters`` and ``refine``, drives
the coder slice by slice, so training and coding cannot drift apart.
"""

from __future__ import annotations

from collections.abc import Sequence

import flax.linen as nn
import jax.numpy as jnp

from mracnn_jax.entropy.gaussian import gaussian_likelihood
from mracnn_jax.entropy.quantize import add_noise, quantize_around
from mracnn_jax.layers.clab import CLAB
from mracnn_jax.layers.conv import Conv2d
from mracnn_jax.layers.precision import compute
from mracnn_jax.layers.residual import activation_fn


class ConvStack(nn.Module):
    """k x k convolutions through ``widths`` to ``features``, GELU between (not after the last)."""

    widths: Sequence[int]
    features: int
    kernel_size: int = 3

    @nn.compact
    def __call__(self, x):
        act = activation_fn("gelu")
        for j, width in enumerate(self.widths):
            x = act(Conv2d(width, self.kernel_size, name=f"conv_{j}")(x))
        return Conv2d(self.features, self.kernel_size, name=f"conv_{len(self.widths)}")(x)


class ChannelContextModel(nn.Module):
    """Slice-wise conditional Gaussian model of y with CLAB-refined supports and LRP."""

    latent_channels: int = 320
    num_slices: int = 5
    max_support: int = -1
    cc_widths: Sequence[int] = (224, 128)
    cc_kernel: int = 3
    support_attention: str = "clab"
    clab_dim: int = 128
    elsa: object = None  # ELSA options for CLAB
    compute_dtype: str = "float32"  # of CLAB, cc and LRP (mu, sigma and y^ are float32)

    def setup(self):
        if self.latent_channels % self.num_slices:
            raise ValueError(
                f"latent channels {self.latent_channels} not divisible into {self.num_slices} slices"
            )
        if self.support_attention not in ("clab", "none"):
            raise ValueError(f"unknown support_attention {self.support_attention!r}")
        width = self.slice_channels
        stack = lambda: ConvStack(tuple(self.cc_widths), width, self.cc_kernel)
        self.cc_mean = [stack() for _ in range(self.num_slices)]
        self.cc_scale = [stack() for _ in range(self.num_slices)]
        self.lrp = [stack() for _ in range(self.num_slices)]
        if self.support_attention == "clab":
            self.clab_mean = [CLAB(self.elsa, self.clab_dim) for _ in range(self.num_slices)]
            self.clab_scale = [CLAB(self.elsa, self.clab_dim) for _ in range(self.num_slices)]

    @property
    def slice_channels(self) -> int:
        return self.latent_channels // self.num_slices

    def num_support(self, i: int) -> int:
        """How many decoded slices slice ``i`` is conditioned on."""
        return i if self.max_support < 0 else min(i, self.max_support)

    def slice_parameters(self, i: int, latent_means, latent_scales, decoded: Sequence):
        """mu_i, sigma_i ``[B, h, w, M/S]`` and the (refined) mean support m_i for slice ``i``.

        ``decoded`` holds the reconstructed slices y^_0 .. y^_{i-1} (at least ``num_support(i)``).
        """
        support = list(decoded[: self.num_support(i)])
        mean_support = jnp.concatenate([latent_means] + support, axis=-1)
        scale_support = jnp.concatenate([latent_scales] + support, axis=-1)
        return compute(self.compute_dtype, self._parameters, i, mean_support, scale_support)

    def _parameters(self, i: int, mean_support, scale_support):
        if self.support_attention == "clab":
            mean_support = self.clab_mean[i](mean_support)
            scale_support = self.clab_scale[i](scale_support)
        return self.cc_mean[i](mean_support), self.cc_scale[i](scale_support), mean_support

    def refine(self, i: int, mean_support, y_tilde):
        """Latent residual prediction: ``y~_i + 1/2 tanh(lrp_i(concat(m_i, y~_i)))``."""
        support = jnp.concatenate([mean_support, y_tilde], axis=-1)
        lrp = compute(self.compute_dtype, self.lrp[i], support)
        return y_tilde + 0.5 * jnp.tanh(lrp)

    def __call__(self, y, latent_means, latent_scales, train: bool):
        """Estimates y: returns (y^ ``[B, h, w, M]``, likelihoods ``[B, h, w, M]``).

        Training draws uniform noise from the ``'noise'`` rng collection for the rate terms.
        """
        slices = jnp.split(y, self.num_slices, axis=-1)
        decoded, likelihoods = [], []
        for i, y_i in enumerate(slices):
            mu, sigma, mean_support = self.slice_parameters(i, latent_means, latent_scales, decoded)
            if train:
                y_tilde = quantize_around(y_i, mu, ste=True)
                noisy = add_noise(y_i, self.make_rng("noise"))
                likelihoods.append(gaussian_likelihood(noisy, mu, sigma))
            else:
                y_tilde = quantize_around(y_i, mu)
                likelihoods.append(gaussian_likelihood(y_tilde, mu, sigma))
            decoded.append(self.refine(i, mean_support, y_tilde))
        return jnp.concatenate(decoded, axis=-1), jnp.concatenate(likelihoods, axis=-1)

"""The learned image codec: transforms, hyperprior and the channel-wise entropy model.

For an image x ``[B, H, W, C]`` in [0, 1] with H and W multiples of 64 (C = ``cfg.channels``: 3
for RGB, 1 for grayscale):

    y = g_a(x);  z = h_a(y)
    z~ = round(z - m) + m                     m: medians of the factorized prior (per channel)
    latent_means = h_mean_s(z~);  latent_scales = h_scale_s(z~)
    y^, p_y = ChannelContextModel(y, latent_means, latent_scales)
    x^ = g_s(y^)
    bpp = (sum -log2 p_y + sum -log2 p_z) / (B H W)

Training (``train=True``): p_z and p_y are evaluated on noisy latents (z + u, y + u), while h_s,
the LRP and g_s see straight-through rounded values (architecture.md §1.4). Inference: everything
is rounded, and p_z, p_y are the probabilities of the transmitted symbols.

With ``cfg.compute_dtype = 'bfloat16'`` the networks (g_a, g_s, h_a, h_s, CLAB, cc, LRP) compute
in bfloat16 from float32 parameters; their outputs, the priors' likelihoods and bpp are float32
(``mracnn_jax.layers.precision``).

The separate methods (``analysis``, ``hyper_analysis``, ``hyper_synthesis``, ``synthesis``,
``z_offsets``, ``slice_parameters``, ``refine_slice``) are what the coder calls, one jitted
function each, so the coder runs exactly the graph that training estimated.
"""

from __future__ import annotations

import flax.linen as nn

from mracnn_jax.entropy.channel_context import ChannelContextModel
from mracnn_jax.entropy.factorized import FactorizedPrior
from mracnn_jax.entropy.quantize import add_noise, quantize_around
from mracnn_jax.entropy.rate import bits_per_pixel
from mracnn_jax.layers.precision import compute
from mracnn_jax.models.transforms import (
    AnalysisTransform,
    HyperAnalysis,
    HyperSynthesis,
    SynthesisTransform,
)

DOWNSAMPLING = 64  # total stride from the image to z


class ImageCompressor(nn.Module):
    """MRACNN, WACNN or an ablation, depending on ``cfg`` (see the presets in ``mracnn_jax/configs/``)."""

    cfg: object

    def setup(self):
        cfg = self.cfg
        self.g_a = AnalysisTransform(cfg)
        self.g_s = SynthesisTransform(cfg)
        self.h_a = HyperAnalysis(tuple(cfg.hyper_analysis_widths) + (cfg.Z,))
        s_widths = tuple(cfg.hyper_synthesis_widths) + (cfg.M,)
        self.h_mean_s = HyperSynthesis(s_widths)
        self.h_scale_s = HyperSynthesis(s_widths)
        ent = cfg.entropy
        self.entropy = ChannelContextModel(
            latent_channels=cfg.M,
            num_slices=ent.num_slices,
            max_support=ent.max_support,
            cc_widths=tuple(ent.cc_widths),
            cc_kernel=ent.cc_kernel,
            support_attention=ent.support_attention,
            clab_dim=ent.clab_dim,
            elsa=cfg.elsa,
            compute_dtype=self.compute_dtype,
        )
        self.entropy_bottleneck = FactorizedPrior(
            cfg.Z, tuple(cfg.prior_filters), cfg.prior_init_scale
        )

    @property
    def compute_dtype(self) -> str:
        """``cfg.compute_dtype``: the dtype of the networks' arithmetic (float32 where unset)."""
        return self.cfg.get("compute_dtype", "float32")

    def _check_channels(self, x) -> None:
        if x.shape[-1] != self.cfg.channels:
            raise ValueError(
                f"the image has {x.shape[-1]} channels, the model {self.cfg.channels} "
                f"(model.channels of {self.cfg.name!r})"
            )

    # -- pieces the coder calls -------------------------------------------------------------
    def analysis(self, x):
        self._check_channels(x)
        return compute(self.compute_dtype, self.g_a, x)

    def hyper_analysis(self, y):
        return compute(self.compute_dtype, self.h_a, y)

    def hyper_synthesis(self, z_hat):
        both = lambda z: (self.h_mean_s(z), self.h_scale_s(z))
        return compute(self.compute_dtype, both, z_hat)

    def synthesis(self, y_hat):
        return compute(self.compute_dtype, self.g_s, y_hat)

    def z_offsets(self):
        return self.entropy_bottleneck.medians()

    def z_likelihood(self, z_hat):
        return self.entropy_bottleneck.likelihood(z_hat)

    def slice_parameters(self, i, latent_means, latent_scales, decoded):
        return self.entropy.slice_parameters(i, latent_means, latent_scales, decoded)

    def refine_slice(self, i, mean_support, y_tilde):
        return self.entropy.refine(i, mean_support, y_tilde)

    # -- the rate-distortion forward pass ---------------------------------------------------
    def __call__(self, x, train: bool = False):
        """Returns ``{"x_hat", "likelihoods": {"y", "z"}, "bpp", "y_hat", "z_hat"}``."""
        b, h, w, _ = x.shape
        if h % DOWNSAMPLING or w % DOWNSAMPLING:
            raise ValueError(
                f"input {h}x{w} is not a multiple of {DOWNSAMPLING}; "
                "pad it first (mracnn_jax.models.padding.pad_to_multiple)"
            )
        self._check_channels(x)
        y = compute(self.compute_dtype, self.g_a, x)
        z = self.hyper_analysis(y)
        offsets = self.z_offsets()
        if train:
            z_likelihood = self.entropy_bottleneck.likelihood(add_noise(z, self.make_rng("noise")))
            z_hat = quantize_around(z, offsets, ste=True)
        else:
            z_hat = quantize_around(z, offsets)
            z_likelihood = self.entropy_bottleneck.likelihood(z_hat)
        latent_means, latent_scales = self.hyper_synthesis(z_hat)
        y_hat, y_likelihood = self.entropy(y, latent_means, latent_scales, train)
        x_hat = self.synthesis(y_hat)
        likelihoods = {"y": y_likelihood, "z": z_likelihood}
        return {
            "x_hat": x_hat,
            "likelihoods": likelihoods,
            "bpp": bits_per_pixel(likelihoods, b * h * w),
            "y_hat": y_hat,
            "z_hat": z_hat,
        }

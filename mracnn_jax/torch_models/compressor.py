"""The PyTorch twin of ``mracnn_jax.models.compressor.ImageCompressor``: MRACNN, WACNN or an
ablation, chosen by a model config, with CompressAI's model interface.

For an image x ``[B, C, H, W]`` in [0, 1] (C = ``channels``: 3, or 1 for a grayscale model), H and W multiples of 64 (NCHW throughout):

    y = g_a(x);  z = h_a(y)
    z~ = round(z - m) + m                     m = entropy_bottleneck.quantiles[:, 0, 1]
    means = h_mean_s(z~);  scales = h_scale_s(z~)
    for slice i (M / S channels, y_0 .. y_{S-1} along channels):
        a_i = A_mean_i(concat(means, y^_0 .. y^_{n_i - 1}))      n_i = min(i, max_support)
        b_i = A_scale_i(concat(scales, y^_0 .. y^_{n_i - 1}))    A: CLAB, or the identity (WACNN)
        mu_i = cc_mean_i(a_i);  sigma_i = cc_scale_i(b_i)
        y~_i = round(y_i - mu_i) + mu_i;   y^_i = y~_i + 1/2 tanh(lrp_i(concat(a_i, y~_i)))
    x^ = g_s(y^)

``forward`` returns ``{"x_hat": [B, C, H, W], "likelihoods": {"y": [B, M, H/16, W/16],
"z": [B, Z, H/64, W/64]}}``, as CompressAI models do, and ``aux_loss()`` fits the entropy
bottleneck's quantiles. In ``eval()`` mode every latent is rounded and the likelihoods are those
of the rounded values, which is what the Flax model computes with ``train=False``. In ``train()``
mode the likelihoods are evaluated on ``z + u`` and ``y + u`` (u uniform noise) while h_s, the
LRP and g_s see straight-through rounded values, as in ``train=True``.

The module names are the state-dict layout of ``mracnn_jax.convert`` (STF's ``WACNN`` keys for
WACNN, our TCM/STF-style names for MRACNN): ``g_a``, ``g_s``, ``h_a``, ``h_mean_s``,
``h_scale_s``, ``cc_mean_transforms``, ``cc_scale_transforms``, ``lrp_transforms``,
``atten_mean`` and ``atten_scale`` (CLAB only), ``entropy_bottleneck``, ``gaussian_conditional``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import ml_collections
import torch
from torch import Tensor, nn

from mracnn_jax.models.compressor import DOWNSAMPLING
from mracnn_jax.models.presets import with_defaults
from mracnn_jax.models.registry import validate_model_config
from mracnn_jax.torch_models.attention import CLAB
from mracnn_jax.torch_models.blocks import conv_stack
from mracnn_jax.torch_models.entropy import EntropyBottleneck, GaussianConditional, ste_round
from mracnn_jax.torch_models.transforms import (
    analysis_transform,
    hyper_analysis,
    hyper_synthesis,
    synthesis_transform,
)


def model_config_of(config) -> ml_collections.FrozenConfigDict:
    """The model block of a preset's config (``mracnn_jax/configs``), or a model block itself
    (ConfigDict, FrozenConfigDict or plain dict), validated and frozen."""
    if isinstance(config, Mapping) and not isinstance(config, ml_collections.ConfigDict):
        config = ml_collections.ConfigDict(dict(config))
    if "model" in config:
        config = config.model
    cfg = ml_collections.FrozenConfigDict(with_defaults(config))
    validate_model_config(cfg)
    return cfg


class ImageCompressor(nn.Module):
    """MRACNN, WACNN or an ablation as a PyTorch module (module doc); ``config``: see
    ``model_config_of``. Freshly built, the weights are initialised at random; load ours with
    ``mracnn_jax.torch_models.load_flax_params``."""

    def __init__(self, config):
        super().__init__()
        cfg = self.config = model_config_of(config)
        ent = cfg.entropy
        self.num_slices = ent.num_slices
        self.max_support = ent.max_support
        self.uses_clab = ent.support_attention == "clab"
        width = cfg.M // ent.num_slices
        self.g_a = analysis_transform(cfg)
        self.g_s = synthesis_transform(cfg)
        self.h_a = hyper_analysis(cfg.M, tuple(cfg.hyper_analysis_widths) + (cfg.Z,))
        s_widths = tuple(cfg.hyper_synthesis_widths) + (cfg.M,)
        self.h_mean_s = hyper_synthesis(cfg.Z, s_widths)
        self.h_scale_s = hyper_synthesis(cfg.Z, s_widths)
        supports = [cfg.M + width * self.num_support(i) for i in range(ent.num_slices)]

        def stacks(extra: int = 0) -> nn.ModuleList:
            return nn.ModuleList(
                conv_stack(c + extra, tuple(ent.cc_widths), width, ent.cc_kernel) for c in supports
            )

        self.cc_mean_transforms = stacks()
        self.cc_scale_transforms = stacks()
        self.lrp_transforms = stacks(width)
        if self.uses_clab:
            self.atten_mean = nn.ModuleList(CLAB(c, ent.clab_dim, cfg.elsa) for c in supports)
            self.atten_scale = nn.ModuleList(CLAB(c, ent.clab_dim, cfg.elsa) for c in supports)
        self.entropy_bottleneck = EntropyBottleneck(
            cfg.Z, tuple(cfg.prior_filters), cfg.prior_init_scale
        )
        self.gaussian_conditional = GaussianConditional()

    # -- the channel-context model, slice by slice ---------------------------------------------
    def num_support(self, i: int) -> int:
        """How many decoded slices slice ``i`` is conditioned on."""
        return i if self.max_support < 0 else min(i, self.max_support)

    def slice_parameters(
        self, i: int, means: Tensor, scales: Tensor, decoded: Sequence[Tensor]
    ) -> tuple[Tensor, Tensor, Tensor]:
        """``(mu_i, sigma_i, a_i)`` for slice ``i``; ``decoded`` holds y^_0 .. y^_{i-1}."""
        support = list(decoded[: self.num_support(i)])
        mean_support = torch.cat([means] + support, dim=1)
        scale_support = torch.cat([scales] + support, dim=1)
        if self.uses_clab:
            mean_support = self.atten_mean[i](mean_support)
            scale_support = self.atten_scale[i](scale_support)
        mu = self.cc_mean_transforms[i](mean_support)
        sigma = self.cc_scale_transforms[i](scale_support)
        return mu, sigma, mean_support

    def refine_slice(self, i: int, mean_support: Tensor, y_tilde: Tensor) -> Tensor:
        """Latent residual prediction: ``y~_i + 1/2 tanh(lrp_i(concat(a_i, y~_i)))``."""
        lrp = self.lrp_transforms[i](torch.cat([mean_support, y_tilde], dim=1))
        return y_tilde + 0.5 * torch.tanh(lrp)

    def channel_context(self, y: Tensor, means: Tensor, scales: Tensor) -> tuple[Tensor, Tensor]:
        """``(y^, likelihoods of y)``, both ``[B, M, h, w]``."""
        decoded, likelihoods = [], []
        for i, y_i in enumerate(y.chunk(self.num_slices, dim=1)):
            mu, sigma, mean_support = self.slice_parameters(i, means, scales, decoded)
            _, p = self.gaussian_conditional(y_i, sigma, mu)
            likelihoods.append(p)
            y_tilde = ste_round(y_i - mu) + mu
            decoded.append(self.refine_slice(i, mean_support, y_tilde))
        return torch.cat(decoded, dim=1), torch.cat(likelihoods, dim=1)

    # -- CompressAI's interface -------------------------------------------------------------
    def forward(self, x: Tensor) -> dict[str, object]:
        """``{"x_hat", "likelihoods": {"y", "z"}}`` for ``x [B, C, H, W]`` (module doc)."""
        h, w = x.shape[-2:]
        if h % DOWNSAMPLING or w % DOWNSAMPLING:
            raise ValueError(
                f"input {h}x{w} is not a multiple of {DOWNSAMPLING}; pad it first "
                "(docs/torch.md shows how)"
            )
        y = self.g_a(x)
        z = self.h_a(y)
        _, z_likelihoods = self.entropy_bottleneck(z)
        medians = self.entropy_bottleneck.medians().detach().reshape(1, -1, 1, 1)
        z_hat = ste_round(z - medians) + medians
        y_hat, y_likelihoods = self.channel_context(y, self.h_mean_s(z_hat), self.h_scale_s(z_hat))
        return {
            "x_hat": self.g_s(y_hat),
            "likelihoods": {"y": y_likelihoods, "z": z_likelihoods},
        }

    def aux_loss(self) -> Tensor:
        """The entropy bottlenecks' quantile loss (CompressAI's ``aux_loss``)."""
        return sum(m.loss() for m in self.modules() if isinstance(m, EntropyBottleneck))

"""Analysis, synthesis and hyperprior transforms of the PyTorch twin, built from a model config.

Shapes (NCHW) for an input ``[B, C, H, W]`` (C = ``cfg.channels``), H and W multiples of 64:

    g_a: [B, C, H, W] -> y [B, M, H/16, W/16]        g_s: y^ -> x^ [B, C, H, W]
    h_a: y -> z [B, Z, H/64, W/64]                   h_mean_s, h_scale_s: z^ -> [B, M, H/16, W/16]

Each transform is an ``nn.Sequential`` whose indices are the order of the Flax submodules
(``mracnn_jax.models.transforms``), which is also the state-dict layout ``mracnn_jax.convert``
writes:

    MRACNN  g_a = MRACD MRACD ATT(N) MRACD conv3x3/s2(N, M) ATT(M)
            g_s = ATT(M) MRACU(M, N) [ATT(N) if third_elam] MRACU ATT(N) MRACU tconv3x3/s2(N, 3)
    WACNN   g_a = conv5/s2 GDN conv5/s2 GDN ATT(N) conv5/s2 GDN conv5/s2(N, M) ATT(M)
            g_s = ATT(M) tconv5/s2 IGDN tconv5/s2 IGDN ATT(N) tconv5/s2 IGDN tconv5/s2(N, 3)
    h_a     = conv3x3 with strides 1, 1, 2, 1, 2 and GELU between (keys 0, 2, 4, 6, 8)
    h_s     = conv3x3, subpel x2, conv3x3, subpel x2, conv3x3, GELU between (keys 0, 2.0, 4, 6.0, 8)

ATT is ELAM or WAM (``mracnn_jax.torch_models.attention.attention_module``).
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import nn

from mracnn_jax.torch_models.attention import attention_module
from mracnn_jax.torch_models.blocks import MRACD, MRACU, conv, deconv, subpel_conv3x3
from mracnn_jax.torch_models.gdn import GDN


def analysis_transform(cfg) -> nn.Sequential:
    """g_a for ``cfg.transform`` ('mracb' or 'conv5')."""
    n, m = cfg.N, cfg.M
    if cfg.transform == "mracb":
        k = cfg.mracb_kernel
        return nn.Sequential(
            MRACD(cfg.channels, n, k),
            MRACD(n, n, k),
            attention_module(cfg, n, at_latent=False),
            MRACD(n, n, k),
            conv(n, m, 3, stride=2),
            attention_module(cfg, m, at_latent=True),
        )
    if cfg.transform == "conv5":
        return nn.Sequential(
            conv(cfg.channels, n, 5, stride=2),
            GDN(n),
            conv(n, n, 5, stride=2),
            GDN(n),
            attention_module(cfg, n, at_latent=False),
            conv(n, n, 5, stride=2),
            GDN(n),
            conv(n, m, 5, stride=2),
            attention_module(cfg, m, at_latent=True),
        )
    raise ValueError(f"unknown transform {cfg.transform!r}; use 'mracb' or 'conv5'")


def synthesis_transform(cfg) -> nn.Sequential:
    """g_s for ``cfg.transform`` ('mracb' or 'conv5')."""
    n, m = cfg.N, cfg.M
    if cfg.transform == "mracb":
        k = cfg.mracb_kernel
        extra = [attention_module(cfg, n, at_latent=False)] if cfg.third_elam else []
        return nn.Sequential(
            attention_module(cfg, m, at_latent=True),
            MRACU(m, n, k),
            *extra,
            MRACU(n, n, k),
            attention_module(cfg, n, at_latent=False),
            MRACU(n, n, k),
            deconv(n, cfg.channels, 3),
        )
    if cfg.transform == "conv5":
        return nn.Sequential(
            attention_module(cfg, m, at_latent=True),
            deconv(m, n, 5),
            GDN(n, inverse=True),
            deconv(n, n, 5),
            GDN(n, inverse=True),
            attention_module(cfg, n, at_latent=False),
            deconv(n, n, 5),
            GDN(n, inverse=True),
            deconv(n, cfg.channels, 5),
        )
    raise ValueError(f"unknown transform {cfg.transform!r}; use 'mracb' or 'conv5'")


def hyper_analysis(m: int, widths: Sequence[int]) -> nn.Sequential:
    """h_a: ``[B, M, h, w] -> [B, widths[-1], h/4, w/4]``; ``widths`` end with Z."""
    dims = (m,) + tuple(widths)
    strides = (1, 1, 2, 1, 2)
    layers: list[nn.Module] = []
    for j, stride in enumerate(strides[: len(widths)]):
        if j:
            layers.append(nn.GELU())
        layers.append(conv(dims[j], dims[j + 1], 3, stride=stride))
    return nn.Sequential(*layers)


def hyper_synthesis(z: int, widths: Sequence[int]) -> nn.Sequential:
    """h_s: ``[B, Z, h, w] -> [B, widths[4], 4h, 4w]``; ``widths`` end with M."""
    w = tuple(widths)
    return nn.Sequential(
        conv(z, w[0], 3),
        nn.GELU(),
        subpel_conv3x3(w[0], w[1], 2),
        nn.GELU(),
        conv(w[1], w[2], 3),
        nn.GELU(),
        subpel_conv3x3(w[2], w[3], 2),
        nn.GELU(),
        conv(w[3], w[4], 3),
    )

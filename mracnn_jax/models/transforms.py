"""Analysis and synthesis transforms of MRACNN and WACNN, and the shared hyperprior transforms.

Shapes for an input ``[B, H, W, C]`` with H, W multiples of 64 (C = ``channels``, 3 for RGB or
1 for grayscale; N, M, Z from the config):

    g_a: [B, H, W, C] -> y [B, H/16, W/16, M]        g_s: y^ -> x^ [B, H, W, C]
    h_a: y -> z [B, H/64, W/64, Z]                   h_mean_s, h_scale_s: z^ -> [B, H/16, W/16, M]

MRACNN (``transform='mracb'``, architecture.md §4.1):
    g_a = MRACD(C,N) MRACD(N,N) ATT(N) MRACD(N,N) conv3x3/s2(N,M) ATT(M)
    g_s = ATT(M) MRACU(M,N) [ATT(N) if third_elam] MRACU(N,N) ATT(N) MRACU(N,N) tconv3x3/s2(N,C)
WACNN (``transform='conv5'``, §1.1):
    g_a = conv5/s2 GDN conv5/s2 GDN ATT(N) conv5/s2 GDN conv5/s2(N,M) ATT(M)
    g_s = ATT(M) tconv5/s2 IGDN tconv5/s2 IGDN ATT(N) tconv5/s2 IGDN tconv5/s2(N,C)
ATT is ELAM (``attention='elam'``) or WAM (``'wam'``: window 8 / shift 4 at N channels, window 4 /
shift 2 at M channels). The hyperprior is WACNN's (3x3 convolutions, GELU between them; the
hyper-synthesis upsamples with sub-pixel convolutions).
"""

from __future__ import annotations

import flax.linen as nn

from mracnn_jax.layers.conv import Conv2d, SubpelConv2d
from mracnn_jax.layers.elam import ELAM
from mracnn_jax.layers.gdn import GDN
from mracnn_jax.layers.mracb import MRACD, MRACU
from mracnn_jax.layers.residual import activation_fn
from mracnn_jax.layers.upsampling import ConvTranspose2d
from mracnn_jax.layers.wam import WAM

#: Per ``transform``: the convolutions that read the image (kernel ``[k, k, C, N]``) and the one
#: that writes it (kernel ``[k, k, N, C]``, bias ``[C]``), as parameter paths.
IMAGE_INPUT_LAYERS = {
    "mracb": (("g_a", "mracd_0", "down"), ("g_a", "mracd_0", "skip")),
    "conv5": (("g_a", "conv_0"),),
}
IMAGE_OUTPUT_LAYER = {"mracb": ("g_s", "deconv_5"), "conv5": ("g_s", "deconv_8")}


def attention_module(cfg, at_latent: bool, name: str) -> nn.Module:
    """ELAM or WAM; WAM's window depends on whether it sits at the latent (M) resolution."""
    if cfg.attention == "elam":
        return ELAM(cfg.elsa, name=name)
    if cfg.attention == "wam":
        window = cfg.wam.window_m if at_latent else cfg.wam.window_n
        shift = cfg.wam.shift_m if at_latent else cfg.wam.shift_n
        return WAM(cfg.wam.heads, window, shift, name=name)
    raise ValueError(f"unknown attention {cfg.attention!r}; use 'elam' or 'wam'")


class AnalysisTransform(nn.Module):
    """g_a: image ``[B, H, W, C]`` -> y ``[B, H/16, W/16, M]`` (its first convolutions take C
    from the image)."""

    cfg: object

    @nn.compact
    def __call__(self, x):
        cfg = self.cfg
        n, m = cfg.N, cfg.M
        if cfg.transform == "mracb":
            k = cfg.mracb_kernel
            x = MRACD(n, k, name="mracd_0")(x)
            x = MRACD(n, k, name="mracd_1")(x)
            x = attention_module(cfg, False, "attention_2")(x)
            x = MRACD(n, k, name="mracd_3")(x)
            x = Conv2d(m, 3, stride=2, name="conv_4")(x)
            return attention_module(cfg, True, "attention_5")(x)
        if cfg.transform == "conv5":
            x = GDN(name="gdn_1")(Conv2d(n, 5, stride=2, name="conv_0")(x))
            x = GDN(name="gdn_3")(Conv2d(n, 5, stride=2, name="conv_2")(x))
            x = attention_module(cfg, False, "attention_4")(x)
            x = GDN(name="gdn_6")(Conv2d(n, 5, stride=2, name="conv_5")(x))
            x = Conv2d(m, 5, stride=2, name="conv_7")(x)
            return attention_module(cfg, True, "attention_8")(x)
        raise ValueError(f"unknown transform {cfg.transform!r}; use 'mracb' or 'conv5'")


class SynthesisTransform(nn.Module):
    """g_s: y^ ``[B, h, w, M]`` -> x^ ``[B, 16h, 16w, C]``, C = ``cfg.channels``."""

    cfg: object

    @nn.compact
    def __call__(self, y):
        cfg = self.cfg
        n, impl = cfg.N, cfg.deconv_impl
        x = attention_module(cfg, True, "attention_0")(y)
        if cfg.transform == "mracb":
            k = cfg.mracb_kernel
            x = MRACU(n, k, deconv_impl=impl, name="mracu_1")(x)
            if cfg.third_elam:
                x = attention_module(cfg, False, "attention_extra")(x)
            x = MRACU(n, k, deconv_impl=impl, name="mracu_2")(x)
            x = attention_module(cfg, False, "attention_3")(x)
            x = MRACU(n, k, deconv_impl=impl, name="mracu_4")(x)
            return ConvTranspose2d(cfg.channels, 3, impl, name="deconv_5")(x)
        if cfg.transform == "conv5":
            x = GDN(inverse=True, name="igdn_2")(ConvTranspose2d(n, 5, impl, name="deconv_1")(x))
            x = GDN(inverse=True, name="igdn_4")(ConvTranspose2d(n, 5, impl, name="deconv_3")(x))
            x = attention_module(cfg, False, "attention_5")(x)
            x = GDN(inverse=True, name="igdn_7")(ConvTranspose2d(n, 5, impl, name="deconv_6")(x))
            return ConvTranspose2d(cfg.channels, 5, impl, name="deconv_8")(x)
        raise ValueError(f"unknown transform {cfg.transform!r}; use 'mracb' or 'conv5'")


class HyperAnalysis(nn.Module):
    """h_a: y ``[B, h, w, M]`` -> z ``[B, h/4, w/4, Z]``; 3x3 convs, GELU between, strides 1,1,2,1,2."""

    widths: tuple  # e.g. (320, 288, 256, 224, 192): the output channels of the five convs

    @nn.compact
    def __call__(self, y):
        act = activation_fn("gelu")
        strides = (1, 1, 2, 1, 2)
        x = y
        for j, (width, stride) in enumerate(zip(self.widths, strides)):
            x = Conv2d(width, 3, stride=stride, name=f"conv_{2 * j}")(x)
            if j < len(self.widths) - 1:
                x = act(x)
        return x


class HyperSynthesis(nn.Module):
    """h_s: z^ ``[B, h, w, Z]`` -> ``[B, 4h, 4w, M]``: conv, subpel x2, conv, subpel x2, conv."""

    widths: tuple  # e.g. (192, 224, 256, 288, 320)

    @nn.compact
    def __call__(self, z):
        act = activation_fn("gelu")
        w = self.widths
        x = act(Conv2d(w[0], 3, name="conv_0")(z))
        x = act(SubpelConv2d(w[1], 2, name="subpel_2")(x))
        x = act(Conv2d(w[2], 3, name="conv_4")(x))
        x = act(SubpelConv2d(w[3], 2, name="subpel_6")(x))
        return Conv2d(w[4], 3, name="conv_8")(x)

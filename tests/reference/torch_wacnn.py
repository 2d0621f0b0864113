"""PyTorch reference of the WACNN baseline (Zou, Song, Zhang, CVPR 2022).

Written from the structure in docs/architecture.md section 1 (which was read off the public
``Googolxx/STF`` code).  It is used for two things:

* the timing reference in ``benchmarks/bench_torch_wacnn.py``;
* the parity reference when converting PyTorch (STF/CompressAI-style) checkpoints to Flax, and
  for the WACNN twin in ``mracnn_jax.torch_models`` (``tests/test_torch_models.py``), which is
  built from our configs; this file stays independent of both, as a second reading of STF.

The module tree is laid out so that ``state_dict()`` has exactly the keys of the public STF
``WACNN`` (parameters *and* persistent buffers), e.g.::

    g_a.0.weight, g_a.1.beta, g_a.1.gamma, g_a.1.beta_reparam.pedestal, ...
    g_a.4.conv_a.0.conv.0.weight, g_a.4.conv_b.0.attn.relative_position_bias_table,
    g_a.4.conv_b.0.attn.qkv.weight, g_a.4.conv_b.4.weight, ...
    h_mean_s.2.0.weight (sub-pixel conv), cc_mean_transforms.3.8.bias, lrp_transforms.9.0.weight,
    entropy_bottleneck._matrix0, entropy_bottleneck._bias0, entropy_bottleneck._factor0,
    entropy_bottleneck.quantiles, gaussian_conditional.scale_bound, ...

so a checkpoint saved by the public code loads with ``load_stf_state_dict`` (strict).  Entropy
*coding* (CDF tables, rANS) is not implemented: only the differentiable forward pass with the
training-time and evaluation-time quantisation.

Layout: NCHW, float32.  Only ``torch`` is needed (no compressai, no timm).

Note on initialisation: in the public code ``CompressionModel.__init__`` runs its Kaiming
initialisation before any sub-module exists, so it is a no-op and the convolutions keep PyTorch's
default initialisation.  This module does the same (PyTorch defaults), except where the public
code sets values explicitly (GDN, relative-position bias table, entropy bottleneck).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Mapping

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "GDN",
    "WACNN",
    "EntropyBottleneck",
    "GaussianConditional",
    "WindowAttentionModule",
    "count_parameters",
    "load_stf_state_dict",
    "rate_distortion_loss",
    "ste_round",
]

SCALE_BOUND = 0.11
LIKELIHOOD_BOUND = 1e-9


# ----------------------------------------------------------------------------------------------
# Small ops
# ----------------------------------------------------------------------------------------------


def ste_round(x: Tensor) -> Tensor:
    """round(x) in the forward pass, identity gradient in the backward pass."""
    return x + (torch.round(x) - x).detach()


class _LowerBoundFn(torch.autograd.Function):
    """max(x, bound) whose gradient also flows where it would push x back above the bound."""

    @staticmethod
    def forward(ctx, x: Tensor, bound: Tensor) -> Tensor:
        ctx.save_for_backward(x, bound)
        return torch.max(x, bound)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, bound = ctx.saved_tensors
        keep = (x >= bound) | (grad < 0)
        return grad * keep.to(grad.dtype), None


class LowerBound(nn.Module):
    """Lower bound with the CompressAI gradient rule; the bound is a persistent buffer."""

    bound: Tensor

    def __init__(self, bound: float):
        super().__init__()
        self.register_buffer("bound", torch.tensor([float(bound)]))

    def forward(self, x: Tensor) -> Tensor:
        return _LowerBoundFn.apply(x, self.bound.to(x.dtype))


class NonNegativeParametrizer(nn.Module):
    """Stores v >= minimum as p = sqrt(v + pedestal).

    The value used is max(p, sqrt(minimum + pedestal))^2 - pedestal.
    """

    pedestal: Tensor

    def __init__(self, minimum: float = 0.0, reparam_offset: float = 2.0**-18):
        super().__init__()
        self.minimum = float(minimum)
        self.reparam_offset = float(reparam_offset)
        self.register_buffer("pedestal", torch.tensor([self.reparam_offset**2]))
        self.lower_bound = LowerBound((self.minimum + self.reparam_offset**2) ** 0.5)

    def init(self, value: Tensor) -> Tensor:
        return torch.sqrt(torch.clamp(value + self.pedestal, min=float(self.pedestal)))

    def forward(self, p: Tensor) -> Tensor:
        return self.lower_bound(p) ** 2 - self.pedestal


# ----------------------------------------------------------------------------------------------
# Layers
# ----------------------------------------------------------------------------------------------


class GDN(nn.Module):
    """GDN (or IGDN with ``inverse=True``): x * rsqrt(beta + gamma @ x^2), per pixel."""

    def __init__(
        self, channels: int, inverse: bool = False, beta_min: float = 1e-6, gamma_init: float = 0.1
    ):
        super().__init__()
        self.inverse = bool(inverse)
        self.beta_reparam = NonNegativeParametrizer(minimum=beta_min)
        self.gamma_reparam = NonNegativeParametrizer()
        self.beta = nn.Parameter(self.beta_reparam.init(torch.ones(channels)))
        self.gamma = nn.Parameter(self.gamma_reparam.init(gamma_init * torch.eye(channels)))

    def forward(self, x: Tensor) -> Tensor:
        c = x.shape[1]
        beta = self.beta_reparam(self.beta)
        gamma = self.gamma_reparam(self.gamma).reshape(c, c, 1, 1)
        norm = F.conv2d(x * x, gamma, beta)
        return x * (torch.sqrt(norm) if self.inverse else torch.rsqrt(norm))


def conv(cin: int, cout: int, kernel_size: int = 5, stride: int = 2) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, kernel_size, stride=stride, padding=kernel_size // 2)


def deconv(cin: int, cout: int, kernel_size: int = 5, stride: int = 2) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(
        cin, cout, kernel_size, stride=stride, padding=kernel_size // 2, output_padding=stride - 1
    )


def conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride=stride, padding=1)


def conv1x1(cin: int, cout: int) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1)


def subpel_conv3x3(cin: int, cout: int, r: int) -> nn.Sequential:
    """conv3x3 to cout*r^2 channels, then PixelShuffle(r) (keys: ``<name>.0.weight/bias``)."""
    return nn.Sequential(nn.Conv2d(cin, cout * r * r, 3, padding=1), nn.PixelShuffle(r))


class ResidualUnit(nn.Module):
    """1x1 C->C/2, GELU, 3x3 C/2->C/2, GELU, 1x1 C/2->C; + input; GELU."""

    def __init__(self, channels: int):
        super().__init__()
        half = channels // 2
        self.conv = nn.Sequential(
            conv1x1(channels, half),
            nn.GELU(),
            conv3x3(half, half),
            nn.GELU(),
            conv1x1(half, channels),
        )
        self.relu = nn.GELU()  # named "relu" in the public code; it is a GELU

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(self.conv(x) + x)


class WindowMSA(nn.Module):
    """Swin window multi-head self-attention with a learned relative-position bias."""

    relative_position_index: Tensor

    def __init__(self, dim: int, window_size: int, num_heads: int):
        super().__init__()
        self.dim = dim
        self.window_size = window_size
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        w = window_size
        self.relative_position_bias_table = nn.Parameter(torch.zeros((2 * w - 1) ** 2, num_heads))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)
        # index[p, q] for window positions p=(i1,j1), q=(i2,j2), row-major:
        # (i1-i2 + w-1) * (2w-1) + (j1-j2 + w-1)
        ii, jj = torch.meshgrid(torch.arange(w), torch.arange(w), indexing="ij")
        ii, jj = ii.reshape(-1), jj.reshape(-1)
        di = ii[:, None] - ii[None, :] + (w - 1)
        dj = jj[:, None] - jj[None, :] + (w - 1)
        self.register_buffer("relative_position_index", di * (2 * w - 1) + dj)
        self.qkv = nn.Linear(dim, 3 * dim, bias=True)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, mask: Tensor | None = None) -> Tensor:
        # x: (num_windows * B, n, C); mask: (num_windows, n, n) or None
        bw, n, c = x.shape
        h = self.num_heads
        qkv = self.qkv(x).reshape(bw, n, 3, h, c // h).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * self.scale, qkv[1], qkv[2]
        logits = q @ k.transpose(-2, -1)  # (bw, h, n, n)
        bias = self.relative_position_bias_table[self.relative_position_index.reshape(-1)]
        logits = logits + bias.reshape(n, n, h).permute(2, 0, 1).unsqueeze(0)
        if mask is not None:
            nw = mask.shape[0]
            logits = logits.reshape(bw // nw, nw, h, n, n) + mask[None, :, None]
            logits = logits.reshape(bw, h, n, n)
        out = (logits.softmax(dim=-1) @ v).transpose(1, 2).reshape(bw, n, c)
        return self.proj(out)


def _to_windows(x: Tensor, w: int) -> Tensor:
    """(B, H, W, C) -> (B * H/w * W/w, w*w, C), windows in (batch, row, col) order."""
    b, hh, ww, c = x.shape
    x = x.reshape(b, hh // w, w, ww // w, w, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, w * w, c)


def _from_windows(x: Tensor, w: int, b: int, hh: int, ww: int) -> Tensor:
    c = x.shape[-1]
    x = x.reshape(b, hh // w, ww // w, w, w, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, hh, ww, c)


def shifted_window_mask(hh: int, ww: int, w: int, shift: int) -> Tensor:
    """Swin SW-MSA mask (num_windows, w*w, w*w): 0 within a region, -100 across regions."""
    region = torch.zeros(hh, ww)
    bands = ((0, hh - w), (hh - w, hh - shift), (hh - shift, hh))
    cols = ((0, ww - w), (ww - w, ww - shift), (ww - shift, ww))
    label = 0
    for r0, r1 in bands:
        for c0, c1 in cols:
            region[r0:r1, c0:c1] = label
            label += 1
    win = _to_windows(region[None, :, :, None], w).squeeze(-1)  # (nW, w*w)
    diff = win[:, None, :] - win[:, :, None]
    return torch.where(diff != 0, torch.tensor(-100.0), torch.tensor(0.0))


class WinBasedAttention(nn.Module):
    """x + W-MSA(x) on (cyclically shifted) windows; no LayerNorm, no MLP."""

    def __init__(self, dim: int, num_heads: int, window_size: int, shift_size: int):
        super().__init__()
        assert 0 <= shift_size < window_size
        self.window_size = window_size
        self.shift_size = shift_size
        self.attn = WindowMSA(dim, window_size, num_heads)
        self._mask_cache: dict[tuple[int, int, str], Tensor] = {}

    def _mask(self, hh: int, ww: int, device: torch.device, dtype: torch.dtype) -> Tensor:
        key = (hh, ww, str(device))
        if key not in self._mask_cache:
            m = shifted_window_mask(hh, ww, self.window_size, self.shift_size)
            self._mask_cache[key] = m.to(device)
        return self._mask_cache[key].to(dtype)

    def forward(self, x: Tensor) -> Tensor:
        b, _c, hh, ww = x.shape
        w, s = self.window_size, self.shift_size
        if hh % w or ww % w:
            raise ValueError(f"feature map {hh}x{ww} is not a multiple of window {w}")
        t = x.permute(0, 2, 3, 1)
        mask = None
        if s > 0:
            t = torch.roll(t, shifts=(-s, -s), dims=(1, 2))
            mask = self._mask(hh, ww, x.device, x.dtype)
        t = self.attn(_to_windows(t, w), mask=mask)
        t = _from_windows(t, w, b, hh, ww)
        if s > 0:
            t = torch.roll(t, shifts=(s, s), dims=(1, 2))
        return x + t.permute(0, 3, 1, 2)


class WindowAttentionModule(nn.Module):
    """WAM (``Win_noShift_Attention`` in the public code; the shift *is* applied).

    out = x + trunk(x) * sigmoid(mask(x)), trunk = 3 RUs, mask = WinAttn, 3 RUs, conv1x1.
    """

    def __init__(self, dim: int, num_heads: int = 8, window_size: int = 8, shift_size: int = 0):
        super().__init__()
        self.conv_a = nn.Sequential(ResidualUnit(dim), ResidualUnit(dim), ResidualUnit(dim))
        self.conv_b = nn.Sequential(
            WinBasedAttention(dim, num_heads, window_size, shift_size),
            ResidualUnit(dim),
            ResidualUnit(dim),
            ResidualUnit(dim),
            conv1x1(dim, dim),
        )

    def forward(self, x: Tensor) -> Tensor:
        return x + self.conv_a(x) * torch.sigmoid(self.conv_b(x))


# ----------------------------------------------------------------------------------------------
# Entropy models (likelihoods only; no CDF tables / range coding)
# ----------------------------------------------------------------------------------------------


class _EntropyModelBase(nn.Module):
    """Holds the buffers every CompressAI entropy model has, so state-dict keys match."""

    def __init__(self, likelihood_bound: float = LIKELIHOOD_BOUND):
        super().__init__()
        self.likelihood_lower_bound = LowerBound(likelihood_bound)
        # Filled by CompressAI's update(); empty until a trained checkpoint is loaded.
        self.register_buffer("_offset", torch.zeros(0, dtype=torch.int32))
        self.register_buffer("_quantized_cdf", torch.zeros(0, dtype=torch.int32))
        self.register_buffer("_cdf_length", torch.zeros(0, dtype=torch.int32))

    @staticmethod
    def quantize(x: Tensor, mode: str, means: Tensor | None = None) -> Tensor:
        if mode == "noise":
            return x + torch.empty_like(x).uniform_(-0.5, 0.5)
        if mode == "dequantize":
            if means is None:
                return torch.round(x)
            return torch.round(x - means) + means
        raise ValueError(f"unknown quantisation mode {mode!r}")


class EntropyBottleneck(_EntropyModelBase):
    """Ballé's factorized prior (CompressAI flavour): filters (3,3,3,3), init_scale 10."""

    target: Tensor

    def __init__(
        self,
        channels: int,
        tail_mass: float = 1e-9,
        init_scale: float = 10.0,
        filters: tuple[int, ...] = (3, 3, 3, 3),
    ):
        super().__init__()
        self.channels = int(channels)
        self.filters = tuple(int(f) for f in filters)
        self.init_scale = float(init_scale)
        self.tail_mass = float(tail_mass)
        dims = (1,) + self.filters + (1,)
        scale = self.init_scale ** (1.0 / (len(self.filters) + 1))
        for i in range(len(self.filters) + 1):
            init = math.log(math.expm1(1.0 / scale / dims[i + 1]))
            self.register_parameter(
                f"_matrix{i}", nn.Parameter(torch.full((channels, dims[i + 1], dims[i]), init))
            )
            self.register_parameter(
                f"_bias{i}", nn.Parameter(torch.empty(channels, dims[i + 1], 1).uniform_(-0.5, 0.5))
            )
            if i < len(self.filters):
                self.register_parameter(
                    f"_factor{i}", nn.Parameter(torch.zeros(channels, dims[i + 1], 1))
                )
        q = torch.tensor([-self.init_scale, 0.0, self.init_scale])
        self.quantiles = nn.Parameter(q.repeat(channels, 1, 1))  # (C, 1, 3)
        t = math.log(2.0 / self.tail_mass - 1.0)
        self.register_buffer("target", torch.tensor([-t, 0.0, t]))

    def _get_medians(self) -> Tensor:
        return self.quantiles[:, :, 1:2]  # (C, 1, 1)

    def _logits_cumulative(self, x: Tensor, stop_gradient: bool) -> Tensor:
        logits = x  # (C, 1, n)
        for i in range(len(self.filters) + 1):
            matrix = getattr(self, f"_matrix{i}")
            bias = getattr(self, f"_bias{i}")
            if stop_gradient:
                matrix, bias = matrix.detach(), bias.detach()
            logits = torch.matmul(F.softplus(matrix), logits) + bias
            if i < len(self.filters):
                factor = getattr(self, f"_factor{i}")
                if stop_gradient:
                    factor = factor.detach()
                logits = logits + torch.tanh(factor) * torch.tanh(logits)
        return logits

    def _likelihood(self, x: Tensor) -> Tensor:
        lower = self._logits_cumulative(x - 0.5, stop_gradient=False)
        upper = self._logits_cumulative(x + 0.5, stop_gradient=False)
        sign = -torch.sign(lower + upper).detach()
        return torch.abs(torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower))

    def loss(self) -> Tensor:
        """Auxiliary loss that fits ``quantiles`` (only the quantiles receive gradient)."""
        logits = self._logits_cumulative(self.quantiles, stop_gradient=True)
        return torch.abs(logits - self.target).sum()

    def forward(self, x: Tensor, training: bool | None = None) -> tuple[Tensor, Tensor]:
        if training is None:
            training = self.training
        _b, c = x.shape[:2]
        perm = (1, 0) + tuple(range(2, x.dim()))
        t = x.permute(*perm).contiguous()
        shape = t.shape
        values = t.reshape(c, 1, -1)
        out = self.quantize(values, "noise" if training else "dequantize", self._get_medians())
        lik = self.likelihood_lower_bound(self._likelihood(out))
        out = out.reshape(shape).permute(*perm).contiguous()
        lik = lik.reshape(shape).permute(*perm).contiguous()
        return out, lik


class GaussianConditional(_EntropyModelBase):
    """Discretised Gaussian N(mu, max(sigma, 0.11)) convolved with U(-1/2, 1/2)."""

    scale_table: Tensor
    scale_bound: Tensor

    def __init__(self, scale_bound: float = SCALE_BOUND, tail_mass: float = 1e-9):
        super().__init__()
        self.tail_mass = float(tail_mass)
        self.lower_bound_scale = LowerBound(scale_bound)
        self.register_buffer("scale_table", torch.zeros(0))  # filled by update() in CompressAI
        self.register_buffer("scale_bound", torch.tensor([float(scale_bound)]))

    @staticmethod
    def _standardized_cumulative(x: Tensor) -> Tensor:
        return 0.5 * torch.erfc(-(2.0**-0.5) * x)

    def _likelihood(self, x: Tensor, scales: Tensor, means: Tensor | None = None) -> Tensor:
        values = torch.abs(x - means if means is not None else x)
        scales = self.lower_bound_scale(scales)
        upper = self._standardized_cumulative((0.5 - values) / scales)
        lower = self._standardized_cumulative((-0.5 - values) / scales)
        return upper - lower

    def forward(
        self, x: Tensor, scales: Tensor, means: Tensor | None = None, training: bool | None = None
    ) -> tuple[Tensor, Tensor]:
        if training is None:
            training = self.training
        out = self.quantize(x, "noise" if training else "dequantize", means)
        lik = self.likelihood_lower_bound(self._likelihood(out, scales, means))
        return out, lik


# ----------------------------------------------------------------------------------------------
# WACNN
# ----------------------------------------------------------------------------------------------


def _hyper_synthesis(
    z: int = 192, widths: tuple[int, ...] = (192, 224, 256, 288), m: int = 320
) -> nn.Sequential:
    w = tuple(widths) + (m,)
    return nn.Sequential(
        conv3x3(z, w[0]),
        nn.GELU(),
        subpel_conv3x3(w[0], w[1], 2),
        nn.GELU(),
        conv3x3(w[1], w[2]),
        nn.GELU(),
        subpel_conv3x3(w[2], w[3], 2),
        nn.GELU(),
        conv3x3(w[3], w[4]),
    )


def _slice_transform(
    cin: int, hidden: tuple[int, ...] = (224, 176, 128, 64), out: int = 32
) -> nn.Sequential:
    """3x3 convs cin -> 224 -> 176 -> 128 -> 64 -> 32 with GELU between (keys 0,2,4,6,8)."""
    widths = (cin,) + tuple(hidden) + (out,)
    layers = []
    for k in range(len(widths) - 1):
        layers.append(conv(widths[k], widths[k + 1], kernel_size=3, stride=1))
        if k < len(widths) - 2:
            layers.append(nn.GELU())
    return nn.Sequential(*layers)


class WACNN(nn.Module):
    """WACNN (N=192, M=320): WAM transforms, mean-scale hyperprior, 10-slice channel context."""

    def __init__(
        self,
        N: int = 192,
        M: int = 320,
        *,
        Z: int = 192,
        hyper_analysis_widths: tuple[int, ...] = (320, 288, 256, 224),
        hyper_synthesis_widths: tuple[int, ...] = (192, 224, 256, 288),
        cc_widths: tuple[int, ...] = (224, 176, 128, 64),
        num_slices: int = 10,
        max_support_slices: int = 5,
        num_heads: int = 8,
    ):
        """The defaults are the public model; the keyword widths exist for small test models
        (the public code hard-codes them: h_a 320-320-288-256-224-192, h_s 192-224-256-288-320,
        slice transforms 224-176-128-64-32)."""
        super().__init__()
        self.N, self.M = N, M
        self.num_slices = num_slices
        self.max_support_slices = max_support_slices
        s = M // self.num_slices  # 32 channels per slice
        ms = max_support_slices
        heads = num_heads

        self.g_a = nn.Sequential(
            conv(3, N),
            GDN(N),
            conv(N, N),
            GDN(N),
            WindowAttentionModule(N, num_heads=heads, window_size=8, shift_size=4),
            conv(N, N),
            GDN(N),
            conv(N, M),
            WindowAttentionModule(M, num_heads=heads, window_size=4, shift_size=2),
        )
        self.g_s = nn.Sequential(
            WindowAttentionModule(M, num_heads=heads, window_size=4, shift_size=2),
            deconv(M, N),
            GDN(N, inverse=True),
            deconv(N, N),
            GDN(N, inverse=True),
            WindowAttentionModule(N, num_heads=heads, window_size=8, shift_size=4),
            deconv(N, N),
            GDN(N, inverse=True),
            deconv(N, 3),
        )
        ha = (M,) + tuple(hyper_analysis_widths) + (Z,)
        self.h_a = nn.Sequential(
            conv3x3(ha[0], ha[1]),
            nn.GELU(),
            conv3x3(ha[1], ha[2]),
            nn.GELU(),
            conv3x3(ha[2], ha[3], stride=2),
            nn.GELU(),
            conv3x3(ha[3], ha[4]),
            nn.GELU(),
            conv3x3(ha[4], ha[5], stride=2),
        )
        self.h_mean_s = _hyper_synthesis(Z, hyper_synthesis_widths, M)
        self.h_scale_s = _hyper_synthesis(Z, hyper_synthesis_widths, M)
        self.cc_mean_transforms = nn.ModuleList(
            _slice_transform(M + s * min(i, ms), cc_widths, s) for i in range(self.num_slices)
        )
        self.cc_scale_transforms = nn.ModuleList(
            _slice_transform(M + s * min(i, ms), cc_widths, s) for i in range(self.num_slices)
        )
        self.lrp_transforms = nn.ModuleList(
            _slice_transform(M + s * min(i + 1, ms + 1), cc_widths, s)
            for i in range(self.num_slices)
        )
        self.entropy_bottleneck = EntropyBottleneck(Z)
        self.gaussian_conditional = GaussianConditional()

    def aux_loss(self) -> Tensor:
        return self.entropy_bottleneck.loss()

    def forward(self, x: Tensor) -> dict[str, object]:
        """Training mode: noisy likelihoods, STE-rounded latents fed forward.

        Eval mode: everything rounded (z around the entropy-bottleneck medians, y around mu).
        """
        y = self.g_a(x)
        hy, wy = y.shape[2:]
        z = self.h_a(y)
        _, z_likelihoods = self.entropy_bottleneck(z)
        medians = self.entropy_bottleneck._get_medians().reshape(1, -1, 1, 1)
        z_hat = ste_round(z - medians) + medians

        latent_scales = self.h_scale_s(z_hat)
        latent_means = self.h_mean_s(z_hat)

        y_hat_slices = []
        y_likelihoods = []
        for i, y_slice in enumerate(y.chunk(self.num_slices, dim=1)):
            support = y_hat_slices[: self.max_support_slices]
            mean_support = torch.cat([latent_means] + support, dim=1)
            mu = self.cc_mean_transforms[i](mean_support)[:, :, :hy, :wy]
            scale_support = torch.cat([latent_scales] + support, dim=1)
            scale = self.cc_scale_transforms[i](scale_support)[:, :, :hy, :wy]

            _, lik = self.gaussian_conditional(y_slice, scale, mu)
            y_likelihoods.append(lik)

            y_hat_slice = ste_round(y_slice - mu) + mu
            lrp = self.lrp_transforms[i](torch.cat([mean_support, y_hat_slice], dim=1))
            y_hat_slices.append(y_hat_slice + 0.5 * torch.tanh(lrp))

        y_hat = torch.cat(y_hat_slices, dim=1)
        x_hat = self.g_s(y_hat)
        return {
            "x_hat": x_hat,
            "likelihoods": {"y": torch.cat(y_likelihoods, dim=1), "z": z_likelihoods},
        }


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------


@torch.no_grad()
def spread_latents(
    model: WACNN, y_gain: float = 30.0, z_gain: float = 50.0, scale_offset: float = 2.0
) -> WACNN:
    """Make a randomly initialised WACNN's latents worth coding (in place; returns the model).

    PyTorch's default initialisation shrinks activations layer by layer, so that y and z of a
    fresh model round to 0 almost everywhere. Multiplying the last layers of g_a and h_a (weight
    and bias) by ``y_gain`` and ``z_gain`` and adding ``scale_offset`` to the slice transforms'
    predicted scales gives latents spanning several quantisation steps, as a trained model's do.
    """
    for p in (model.g_a[7].weight, model.g_a[7].bias):
        p.mul_(y_gain)
    for p in (model.h_a[8].weight, model.h_a[8].bias):
        p.mul_(z_gain)
    for stack in model.cc_scale_transforms:
        stack[-1].bias.add_(scale_offset)
    return model


def count_parameters(model: nn.Module) -> OrderedDict[str, int]:
    """Parameter count per top-level sub-module (in definition order) plus ``"total"``."""
    counts: OrderedDict[str, int] = OrderedDict()
    for name, child in model.named_children():
        counts[name] = sum(p.numel() for p in child.parameters())
    counts["total"] = sum(p.numel() for p in model.parameters())
    return counts


def rate_distortion_loss(
    out: Mapping[str, object], target: Tensor, lmbda: float
) -> dict[str, Tensor]:
    """STF/CompressAI loss: lambda * 255^2 * MSE + bpp, bpp = sum(log p) / (-ln 2 * B*H*W)."""
    b, _, h, w = target.shape
    num_pixels = b * h * w
    liks = out["likelihoods"]  # type: ignore[index]
    bpp = sum(torch.log(l).sum() for l in liks.values()) / (-math.log(2) * num_pixels)
    mse = F.mse_loss(out["x_hat"], target)  # type: ignore[arg-type]
    return {"loss": lmbda * 255.0**2 * mse + bpp, "mse": mse, "bpp": bpp}


_DYNAMIC_BUFFERS = {
    "entropy_bottleneck": ("_offset", "_quantized_cdf", "_cdf_length"),
    "gaussian_conditional": ("_offset", "_quantized_cdf", "_cdf_length", "scale_table"),
}


_NEW_COMPRESSAI_EB = {"matrices": "_matrix", "biases": "_bias", "factors": "_factor"}


def _canonical_key(key: str) -> str:
    """Map CompressAI >= 1.2 names (``entropy_bottleneck.matrices.0``) to STF's (``._matrix0``).

    STF ships its own older CompressAI, whose EntropyBottleneck registers ``_matrix{i}``,
    ``_bias{i}`` and ``_factor{i}``; current CompressAI keeps them in ParameterLists.
    """
    parts = key.split(".")
    if len(parts) == 3 and parts[0] == "entropy_bottleneck" and parts[1] in _NEW_COMPRESSAI_EB:
        return f"entropy_bottleneck.{_NEW_COMPRESSAI_EB[parts[1]]}{parts[2]}"
    return key


def load_stf_state_dict(model: WACNN, state_dict: Mapping[str, Tensor], strict: bool = True):
    """Load a public-code WACNN checkpoint (a ``state_dict`` or a dict holding one).

    Strips a ``module.`` (DataParallel) prefix, accepts current CompressAI's entropy-bottleneck
    names (``matrices.i`` etc.), and resizes the entropy models' CDF buffers, whose size is only
    known after CompressAI's ``update()``.
    """
    if "state_dict" in state_dict and isinstance(state_dict["state_dict"], Mapping):
        state_dict = state_dict["state_dict"]  # type: ignore[assignment]
    sd = OrderedDict((_canonical_key(k.removeprefix("module.")), v) for k, v in state_dict.items())
    for mod_name, bufs in _DYNAMIC_BUFFERS.items():
        module = getattr(model, mod_name)
        for buf in bufs:
            key = f"{mod_name}.{buf}"
            if key in sd:
                current = getattr(module, buf)
                module.register_buffer(buf, torch.zeros_like(sd[key], device=current.device))
    return model.load_state_dict(sd, strict=strict)

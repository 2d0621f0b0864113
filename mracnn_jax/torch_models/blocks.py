"""Convolutional building blocks of the PyTorch twin (NCHW): convolutions with our padding rules,
residual units, MRACD / MRACU and the slice transforms' convolution stacks.

Each block computes what its Flax counterpart computes (``mracnn_jax.layers.conv``,
``.upsampling``, ``.residual``, ``.mracb``, ``mracnn_jax.entropy.channel_context.ConvStack``), with
PyTorch's layouts: weights ``[C_out, C_in, kh, kw]``, transposed-convolution weights
``[C_in, C_out, k, k]``.

* ``conv(c_in, c_out, k, stride)``: padding ``k // 2`` on every side (odd k; ``(kh, kw)``
  kernels pad ``(kh // 2, kw // 2)``); ``[B, C_in, H, W] -> [B, C_out, H / stride, W / stride]``.
* ``deconv(c_in, c_out, k)``: ``ConvTranspose2d(k, stride 2, padding k // 2, output_padding 1)``,
  ``H -> 2H``; our Flax ``ConvTranspose2d`` implements the same map from the same taps.
* ``subpel_conv3x3(c_in, c_out, r)``: conv 3x3 to ``c_out r^2`` channels then ``PixelShuffle(r)``
  (PyTorch's channel order ``c r^2 + i r + j``; the weight import permutes ours, see
  ``mracnn_jax.convert``).
* ``ResidualUnit``: ``act(x + conv1x1(act(conv3x3(act(conv1x1(x, C -> C/2))))))``, GELU
  (WACNN's, in WAM and ELAM) or ReLU (CompressAI's, in CLAB).
* ``MRACD(x) = GDN(C_1xn(h) + C_nx1(h) + C_nxn(h)) + C_res(x)`` with ``h = C_3x3/s2(x)``;
  ``MRACU`` the same with transposed stride-2 convolutions and IGDN.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn

from mracnn_jax.torch_models.gdn import GDN


def _pair(k: int | Sequence[int]) -> tuple[int, int]:
    return (k, k) if isinstance(k, int) else (int(k[0]), int(k[1]))


def conv(c_in: int, c_out: int, kernel_size: int | Sequence[int] = 3, stride: int = 1) -> nn.Conv2d:
    """Convolution with symmetric padding ``k // 2`` per axis (``mracnn_jax.layers.conv.Conv2d``)."""
    kh, kw = _pair(kernel_size)
    return nn.Conv2d(c_in, c_out, (kh, kw), stride=stride, padding=(kh // 2, kw // 2))


def deconv(c_in: int, c_out: int, kernel_size: int = 3) -> nn.ConvTranspose2d:
    """Stride-2 transposed convolution that doubles H and W exactly."""
    return nn.ConvTranspose2d(
        c_in, c_out, kernel_size, stride=2, padding=kernel_size // 2, output_padding=1
    )


def subpel_conv3x3(c_in: int, c_out: int, r: int = 2) -> nn.Sequential:
    """``conv3x3(c_in, c_out r^2)`` and ``PixelShuffle(r)`` (keys ``0.weight``, ``0.bias``)."""
    return nn.Sequential(conv(c_in, c_out * r * r, 3), nn.PixelShuffle(r))


def activation(name: str) -> nn.Module:
    """``"gelu"`` (exact, erf form) or ``"relu"``."""
    if name == "gelu":
        return nn.GELU()
    if name == "relu":
        return nn.ReLU()
    raise ValueError(f"unknown activation {name!r}; use 'gelu' or 'relu'")


class ResidualUnit(nn.Module):
    """Bottleneck residual unit C -> C/2 -> C/2 -> C, activation after the sum.

    Keys ``conv.0``, ``conv.2``, ``conv.4`` (STF's and CompressAI's layout; the final activation
    is called ``relu`` there, whatever it is).
    """

    def __init__(self, channels: int, act: str = "gelu"):
        super().__init__()
        half = channels // 2
        self.conv = nn.Sequential(
            conv(channels, half, 1),
            activation(act),
            conv(half, half, 3),
            activation(act),
            conv(half, channels, 1),
        )
        self.relu = activation(act)

    def forward(self, x: Tensor) -> Tensor:
        return self.relu(x + self.conv(x))


def residual_units(channels: int, act: str, count: int = 3) -> list[nn.Module]:
    return [ResidualUnit(channels, act) for _ in range(count)]


class AsymmetricConvSum(nn.Module):
    """``C_1xn(h) + C_nx1(h) + C_nxn(h)``, each ``C -> C``, stride 1, 'same' padding."""

    def __init__(self, channels: int, n: int = 3):
        super().__init__()
        self.conv_1xn = conv(channels, channels, (1, n))
        self.conv_nx1 = conv(channels, channels, (n, 1))
        self.conv_nxn = conv(channels, channels, (n, n))

    def forward(self, h: Tensor) -> Tensor:
        return self.conv_1xn(h) + self.conv_nx1(h) + self.conv_nxn(h)


class MRACD(nn.Module):
    """Down-sampling MRACB: ``[B, C_in, H, W] -> [B, C_out, H/2, W/2]``."""

    def __init__(self, c_in: int, c_out: int, n: int = 3, stride_kernel: int = 3):
        super().__init__()
        self.down = conv(c_in, c_out, stride_kernel, stride=2)
        self.asym = AsymmetricConvSum(c_out, n)
        self.gdn = GDN(c_out)
        self.skip = conv(c_in, c_out, stride_kernel, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        return self.gdn(self.asym(self.down(x))) + self.skip(x)


class MRACU(nn.Module):
    """Up-sampling MRACB: ``[B, C_in, H, W] -> [B, C_out, 2H, 2W]``."""

    def __init__(self, c_in: int, c_out: int, n: int = 3, stride_kernel: int = 3):
        super().__init__()
        self.up = deconv(c_in, c_out, stride_kernel)
        self.asym = AsymmetricConvSum(c_out, n)
        self.igdn = GDN(c_out, inverse=True)
        self.skip = deconv(c_in, c_out, stride_kernel)

    def forward(self, x: Tensor) -> Tensor:
        return self.igdn(self.asym(self.up(x))) + self.skip(x)


def conv_stack(c_in: int, widths: Sequence[int], c_out: int, kernel_size: int = 3) -> nn.Sequential:
    """``k x k`` convolutions ``c_in -> widths... -> c_out``, GELU between (keys ``0, 2, 4, ...``).

    The slice transforms ``cc_mean``, ``cc_scale`` and ``lrp`` of the channel-context model.
    """
    dims = (c_in,) + tuple(widths) + (c_out,)
    layers: list[nn.Module] = []
    for j in range(len(dims) - 1):
        if j:
            layers.append(nn.GELU())
        layers.append(conv(dims[j], dims[j + 1], kernel_size))
    return nn.Sequential(*layers)

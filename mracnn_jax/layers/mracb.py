"""Multi-path residual asymmetric convolution blocks: MRACD (down) and MRACU (up).

Our reading of the paper's MRACB (architecture.md §4.2, ambiguities 1–4), NHWC:

    MRACD(x) = GDN( C_1xn(h) + C_nx1(h) + C_nxn(h) ) + C_res(x),   h = C_3x3/s2(x)
    MRACU(x) = IGDN( C_1xn(h) + C_nx1(h) + C_nxn(h) ) + T_res(x),  h = T_3x3/s2(x)

``C_3x3/s2`` is a stride-2 3x3 convolution C_in -> C_out (``T`` its transposed, upsampling
counterpart); the three asymmetric convolutions are C_out -> C_out, stride 1, 'same' padding; the
residual path is a second, parallel stride-2 (transposed) convolution. Every convolution has a
bias; GDN/IGDN is the only nonlinearity. Shapes: ``[B, H, W, C_in]`` -> ``[B, H/2, W/2, C_out]``
(MRACD) or ``[B, 2H, 2W, C_out]`` (MRACU).
"""

from __future__ import annotations

import flax.linen as nn

from mracnn_jax.layers.conv import Conv2d
from mracnn_jax.layers.gdn import GDN
from mracnn_jax.layers.upsampling import ConvTranspose2d


class AsymmetricConvSum(nn.Module):
    """``C_1xn(h) + C_nx1(h) + C_nxn(h)``, each C -> ``features`` with 'same' padding."""

    features: int
    kernel_size: int = 3

    @nn.compact
    def __call__(self, h):
        n = self.kernel_size
        return (
            Conv2d(self.features, (1, n), name="conv_1xn")(h)
            + Conv2d(self.features, (n, 1), name="conv_nx1")(h)
            + Conv2d(self.features, (n, n), name="conv_nxn")(h)
        )


class MRACD(nn.Module):
    """Down-sampling MRACB: ``[B, H, W, C_in] -> [B, H/2, W/2, features]``."""

    features: int
    kernel_size: int = 3
    stride_kernel: int = 3

    @nn.compact
    def __call__(self, x):
        h = Conv2d(self.features, self.stride_kernel, stride=2, name="down")(x)
        a = AsymmetricConvSum(self.features, self.kernel_size, name="asym")(h)
        skip = Conv2d(self.features, self.stride_kernel, stride=2, name="skip")(x)
        return GDN(name="gdn")(a) + skip


class MRACU(nn.Module):
    """Up-sampling MRACB: ``[B, H, W, C_in] -> [B, 2H, 2W, features]``."""

    features: int
    kernel_size: int = 3
    stride_kernel: int = 3
    deconv_impl: str = "subpixel"

    @nn.compact
    def __call__(self, x):
        h = ConvTranspose2d(self.features, self.stride_kernel, self.deconv_impl, name="up")(x)
        a = AsymmetricConvSum(self.features, self.kernel_size, name="asym")(h)
        skip = ConvTranspose2d(self.features, self.stride_kernel, self.deconv_impl, name="skip")(x)
        return GDN(inverse=True, name="igdn")(a) + skip

"""GDN / IGDN and the bounds they rest on, in PyTorch (NCHW), as CompressAI stores them.

For an input x ``[B, C, H, W]``:

    GDN:   y_i = x_i / sqrt(beta_i + sum_j gamma_ij x_j^2)
    IGDN:  y_i = x_i * sqrt(beta_i + sum_j gamma_ij x_j^2)

the sum being a 1x1 convolution of x^2 with ``gamma`` viewed as ``[C, C, 1, 1]`` (output i,
input j) and bias ``beta``. Both are stored through the non-negative reparameterisation

    stored p = sqrt(max(v + pedestal, pedestal)),     pedestal = (2^-18)^2
    used   v = max(p, sqrt(v_min + pedestal))^2 - pedestal

with v_min = 1e-6 for beta and 0 for gamma, exactly as ``mracnn_jax.layers.gdn`` (the Flax side)
and CompressAI's ``NonNegativeParametrizer`` do; so the stored tensors are copied unchanged
between the three. The maximum is ``LowerBound``: its gradient also passes below the bound when it
points upwards, so a parameter stuck at the bound can leave it.

State-dict keys (CompressAI's): ``beta``, ``gamma``, ``beta_reparam.pedestal``,
``beta_reparam.lower_bound.bound``, ``gamma_reparam.pedestal``,
``gamma_reparam.lower_bound.bound``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mracnn_jax.layers.gdn import BETA_MIN, GAMMA_INIT, REPARAM_OFFSET


class _LowerBoundFunction(torch.autograd.Function):
    """``max(x, bound)``; the gradient g passes where ``x >= bound`` or ``g < 0``."""

    @staticmethod
    def forward(ctx, x: Tensor, bound: Tensor) -> Tensor:
        ctx.save_for_backward(x, bound)
        return torch.max(x, bound)

    @staticmethod
    def backward(ctx, grad: Tensor):
        x, bound = ctx.saved_tensors
        passes = (x >= bound) | (grad < 0)
        return grad * passes.to(grad.dtype), None


def lower_bound(x: Tensor, bound: Tensor) -> Tensor:
    """``max(x, bound)`` with the recovering gradient (``mracnn_jax.ops.lower_bound``)."""
    return _LowerBoundFunction.apply(x, bound.to(x.dtype))


class LowerBound(nn.Module):
    """``max(x, bound)`` with the recovering gradient; ``bound`` is a persistent ``[1]`` buffer."""

    bound: Tensor

    def __init__(self, bound: float):
        super().__init__()
        self.register_buffer("bound", torch.tensor([float(bound)]))

    def forward(self, x: Tensor) -> Tensor:
        return lower_bound(x, self.bound)


class NonNegativeParametrizer(nn.Module):
    """Maps a stored ``p`` to ``max(p, sqrt(minimum + pedestal))^2 - pedestal`` (module doc)."""

    pedestal: Tensor

    def __init__(self, minimum: float = 0.0, reparam_offset: float = REPARAM_OFFSET):
        super().__init__()
        pedestal = float(reparam_offset) ** 2
        self.register_buffer("pedestal", torch.tensor([pedestal]))
        self.lower_bound = LowerBound((float(minimum) + pedestal) ** 0.5)

    def init(self, value: Tensor) -> Tensor:
        """The stored form of a non-negative ``value``."""
        return torch.sqrt(torch.clamp(value + self.pedestal, min=float(self.pedestal)))

    def forward(self, stored: Tensor) -> Tensor:
        return self.lower_bound(stored) ** 2 - self.pedestal


class GDN(nn.Module):
    """GDN (or IGDN with ``inverse=True``) over the channels of ``[B, C, H, W]``.

    Initial values: beta = 1, gamma = 0.1 I, so GDN starts near ``x / sqrt(1 + 0.1 x^2)``.
    """

    def __init__(self, channels: int, inverse: bool = False):
        super().__init__()
        self.inverse = bool(inverse)
        self.beta_reparam = NonNegativeParametrizer(minimum=BETA_MIN)
        self.gamma_reparam = NonNegativeParametrizer()
        self.beta = nn.Parameter(self.beta_reparam.init(torch.ones(channels)))
        self.gamma = nn.Parameter(self.gamma_reparam.init(GAMMA_INIT * torch.eye(channels)))

    def forward(self, x: Tensor) -> Tensor:
        c = x.shape[1]
        beta = self.beta_reparam(self.beta)
        gamma = self.gamma_reparam(self.gamma).reshape(c, c, 1, 1)
        norm = F.conv2d(x * x, gamma, beta)
        return x * (torch.sqrt(norm) if self.inverse else torch.rsqrt(norm))

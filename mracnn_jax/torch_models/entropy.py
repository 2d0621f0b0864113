"""Entropy models of the PyTorch twin: the factorized prior of z and the Gaussian conditional of y.

Likelihoods only (no range coding), with CompressAI's interface and state-dict layout.

``EntropyBottleneck(C, filters=(3, 3, 3, 3))``: per channel a monotone cumulative
``CDF(x) = sigmoid(l_K(x))`` with

    l_0 = x,   l_{k+1} = softplus(H_k) l_k + b_k,   l_{k+1} += tanh(a_k) tanh(l_{k+1})  (k < K-1)

(``_matrix{k}`` ``[C, f_{k+1}, f_k]``, ``_bias{k}`` and ``_factor{k}`` ``[C, f_{k+1}, 1]``), and
``p(v) = CDF(v + 1/2) - CDF(v - 1/2)`` evaluated on the side of the median where the sigmoids are
far from 1, bounded below by 1e-9 (``mracnn_jax.entropy.factorized``). ``quantiles [C, 1, 3]``
are learned by the auxiliary loss ``sum |l_K(quantiles) - (-t, 0, t)|``, ``t = ln(2 / 1e-9 - 1)``
(only the quantiles receive its gradient); ``quantiles[:, 0, 1]`` is the median m around which z
is quantised. Our Flax model has no quantiles: it finds the median by bisection, and the weight
import (``mracnn_jax.convert.to_torch_state_dict``) writes the quantiles the auxiliary loss
converges to, so the two quantise z around the same point.

``GaussianConditional``: ``p(y) = Phi((1/2 - |y - mu|) / s) - Phi((-1/2 - |y - mu|) / s)`` with
``s = max(sigma, 0.11)``, bounded below by 1e-9 (``mracnn_jax.entropy.gaussian``).

Both quantise as CompressAI does: in training ``x + U(-1/2, 1/2)`` (the likelihood's argument),
in evaluation ``round(x - m) + m`` (m: the median, or mu). The coding tables CompressAI keeps
(``_offset``, ``_quantized_cdf``, ``_cdf_length``, and the Gaussian's ``scale_table``) are
buffers here too, resized to whatever a loaded state dict holds, so checkpoints move both ways.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mracnn_jax.entropy import gaussian
from mracnn_jax.entropy.factorized import LIKELIHOOD_BOUND
from mracnn_jax.torch_models.gdn import LowerBound

TAIL_MASS = 1e-9


def ste_round(x: Tensor) -> Tensor:
    """``round(x)`` forward, identity gradient."""
    return x + (torch.round(x) - x).detach()


def quantize(x: Tensor, mode: str, offset: Tensor | None = None) -> Tensor:
    """``"noise"``: x + U(-1/2, 1/2); ``"dequantize"``: round(x - offset) + offset."""
    if mode == "noise":
        return x + torch.empty_like(x).uniform_(-0.5, 0.5)
    if mode == "dequantize":
        return torch.round(x) if offset is None else torch.round(x - offset) + offset
    raise ValueError(f"unknown quantisation mode {mode!r}; use 'noise' or 'dequantize'")


class _EntropyModel(nn.Module):
    """Buffers every CompressAI entropy model has; the size-varying ones resize on loading."""

    _resizable: tuple[str, ...] = ("_offset", "_quantized_cdf", "_cdf_length")

    def __init__(self, likelihood_bound: float):
        super().__init__()
        self.likelihood_lower_bound = LowerBound(likelihood_bound)
        for name in ("_offset", "_quantized_cdf", "_cdf_length"):
            self.register_buffer(name, torch.zeros(0, dtype=torch.int32))

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        for name in self._resizable:
            incoming = state_dict.get(prefix + name)
            own = getattr(self, name)
            if isinstance(incoming, Tensor) and incoming.shape != own.shape:
                self.register_buffer(name, torch.empty_like(incoming, device=own.device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)


class EntropyBottleneck(_EntropyModel):
    """Deep factorized density of ``[B, C, H, W]`` latents, one per channel (module doc)."""

    target: Tensor

    def __init__(
        self,
        channels: int,
        filters: Sequence[int] = (3, 3, 3, 3),
        init_scale: float = 10.0,
        tail_mass: float = TAIL_MASS,
    ):
        super().__init__(LIKELIHOOD_BOUND)
        self.channels = int(channels)
        self.num_layers = len(filters) + 1
        dims = (1,) + tuple(int(f) for f in filters) + (1,)
        scale = float(init_scale) ** (1.0 / self.num_layers)
        for k in range(self.num_layers):
            value = math.log(math.expm1(1.0 / scale / dims[k + 1]))
            matrix = torch.full((channels, dims[k + 1], dims[k]), value)
            self.register_parameter(f"_matrix{k}", nn.Parameter(matrix))
            bias = torch.empty(channels, dims[k + 1], 1).uniform_(-0.5, 0.5)
            self.register_parameter(f"_bias{k}", nn.Parameter(bias))
            if k < self.num_layers - 1:
                factor = torch.zeros(channels, dims[k + 1], 1)
                self.register_parameter(f"_factor{k}", nn.Parameter(factor))
        quantiles = torch.tensor([-init_scale, 0.0, init_scale], dtype=torch.float32)
        self.quantiles = nn.Parameter(quantiles.repeat(channels, 1, 1))
        t = math.log(2.0 / tail_mass - 1.0)
        self.register_buffer("target", torch.tensor([-t, 0.0, t]))

    def medians(self) -> Tensor:
        """``[C]``: the quantisation offsets of z (``quantiles[:, 0, 1]``)."""
        return self.quantiles[:, 0, 1]

    def logits_cumulative(self, x: Tensor, stop_gradient: bool = False) -> Tensor:
        """``l_K(x)`` for ``x [C, 1, N]`` -> ``[C, 1, N]``."""
        logits = x
        for k in range(self.num_layers):
            matrix, bias = getattr(self, f"_matrix{k}"), getattr(self, f"_bias{k}")
            if stop_gradient:
                matrix, bias = matrix.detach(), bias.detach()
            logits = torch.matmul(F.softplus(matrix), logits) + bias
            if k < self.num_layers - 1:
                factor = getattr(self, f"_factor{k}")
                factor = factor.detach() if stop_gradient else factor
                logits = logits + torch.tanh(factor) * torch.tanh(logits)
        return logits

    def likelihood(self, rows: Tensor) -> Tensor:
        """P(unit bin around each value) for ``rows [C, 1, N]``, bounded below by 1e-9."""
        lower = self.logits_cumulative(rows - 0.5)
        upper = self.logits_cumulative(rows + 0.5)
        # never 0 (factorized.FactorizedPrior.likelihood): a bin centred on the median keeps its mass
        sign = torch.where(lower + upper > 0, -1.0, 1.0).to(lower.dtype).detach()
        p = torch.abs(torch.sigmoid(sign * upper) - torch.sigmoid(sign * lower))
        return self.likelihood_lower_bound(p)

    def loss(self) -> Tensor:
        """The auxiliary loss that fits ``quantiles`` to the density (module doc)."""
        logits = self.logits_cumulative(self.quantiles, stop_gradient=True)
        return torch.abs(logits - self.target).sum()

    def forward(self, z: Tensor, training: bool | None = None) -> tuple[Tensor, Tensor]:
        """``(z quantised or noisy, likelihoods)``, both shaped as ``z [B, C, ...]``."""
        training = self.training if training is None else training
        rows = z.transpose(0, 1)
        shape = rows.shape
        rows = rows.reshape(shape[0], 1, -1)
        medians = self.medians().detach().reshape(-1, 1, 1)
        values = quantize(rows, "noise" if training else "dequantize", medians)
        p = self.likelihood(values)
        return values.reshape(shape).transpose(0, 1), p.reshape(shape).transpose(0, 1)


class GaussianConditional(_EntropyModel):
    """Gaussian (mean mu, scale max(sigma, 0.11)) convolved with a unit box (module doc)."""

    _resizable = ("_offset", "_quantized_cdf", "_cdf_length", "scale_table")
    scale_table: Tensor
    scale_bound: Tensor

    def __init__(self, scale_bound: float = gaussian.SCALE_BOUND):
        super().__init__(gaussian.LIKELIHOOD_BOUND)
        self.lower_bound_scale = LowerBound(scale_bound)
        table = torch.from_numpy(gaussian.scale_table().astype("float32"))
        self.register_buffer("scale_table", table)  # the coder's scales (64, 0.11 to 256)
        self.register_buffer("scale_bound", torch.tensor([float(scale_bound)]))

    @staticmethod
    def standardized_cumulative(x: Tensor) -> Tensor:
        """``Phi(x) = erfc(-x / sqrt 2) / 2``."""
        return 0.5 * torch.erfc(-(2.0**-0.5) * x)

    def likelihood(self, y: Tensor, scales: Tensor, means: Tensor) -> Tensor:
        v = torch.abs(y - means)
        s = self.lower_bound_scale(scales)
        p = self.standardized_cumulative((0.5 - v) / s) - self.standardized_cumulative(
            (-0.5 - v) / s
        )
        return self.likelihood_lower_bound(p)

    def forward(
        self, y: Tensor, scales: Tensor, means: Tensor, training: bool | None = None
    ) -> tuple[Tensor, Tensor]:
        """``(y quantised around means or noisy, likelihoods)``, all of one shape."""
        training = self.training if training is None else training
        values = quantize(y, "noise" if training else "dequantize", means)
        return values, self.likelihood(values, scales, means)

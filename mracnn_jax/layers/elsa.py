"""Enhanced local self-attention (ELSA, Zhou et al. 2021) in Flax, channels-last.

This follows the computation of the public ``damo-cv/ELSA`` ``ELSA`` module (see
``docs/architecture.md`` §2), written for NHWC tensors.

Notation: ``x`` is ``[B, H, W, dim]``; ``h`` heads; ``k`` the (odd) kernel size, ``K = k*k``
neighbour offsets ``j = (dy, dx)`` in row-major order ``j = dy*k + dx`` with
``dy, dx ∈ {0..k-1}`` measured from the top-left corner of the window (offset ``dy - k//2``
relative to the centre); ``d_v = dim``; ``d_qk = ceil((dim // 3) * 2 / group_width) * group_width``.

1. ``[q | k | v] = x W_pre``  (1x1 conv, no bias), ``q, k: [B, H, W, d_qk]``, ``v: [B, H, W, d_v]``.
2. ``s = q ⊙ k · scale`` with ``scale = qk_scale`` or ``(d_v // h)^-1/2`` when ``qk_scale`` is None.
3. Logits ``L = Conv1x1(GELU(GroupConv_kxk(s)))``: the k×k conv has
   ``d_qk / group_width`` groups, zero "same" padding ``k//2`` and a bias; GELU is the exact
   (erf) one; the 1x1 conv maps ``d_qk -> h*K`` with a bias. Logit channel ``g*K + j`` belongs
   to head ``g`` and offset ``j``.
4. ``A[b, m, g, :] = softmax_j L[b, m, g, :]`` -- per pixel ``m`` and head ``g``, over the K
   offsets. Offsets that fall outside the image still take part in the softmax.
5. Ghost head: per channel ``c`` and offset ``j``, ``M[c, j] = G_mul[c, j]^lam`` (``1`` when
   ``lam == 0``) and ``D[c, j] = gamma · G_add[c, j]`` (``0`` when ``gamma == 0``). Channel ``c``
   belongs to head ``g(c) = c // (d_v / h)`` (heads are contiguous channel blocks).
   ``out[b, m, c] = Σ_j v[b, m + j, c] · (M[c, j] · A[b, m, g(c), j] + D[c, j])``
   with ``v`` zero outside the image. (The ``D`` term alone is a depthwise k×k
   cross-correlation of ``v`` with kernel ``D``.)
6. ``y = out W_post + b_post`` (dense ``d_v -> dim``).

Parameters (Flax name: shape; PyTorch name: shape in the repo):

* ``pre_proj/kernel``: ``[1, 1, dim, 2*d_qk + d_v]``; ``pre_proj.weight``:
  ``[2*d_qk + d_v, dim, 1, 1]`` (transpose ``(2, 3, 1, 0)``).
* ``attn_conv/{kernel, bias}``: ``[k, k, group_width, d_qk]``, ``[d_qk]``; ``attn.0.{weight, bias}``.
* ``attn_proj/{kernel, bias}``: ``[1, 1, d_qk, h*K]``, ``[h*K]``; ``attn.2.{weight, bias}``.
* ``ghost_head``: same shape and layout as the repo: ``[2, 1, d_v, k, k]`` (slot 0 ``G_mul``,
  slot 1 ``G_add``) when ``lam != 0`` and ``gamma != 0``; ``[1, d_v, k, k]`` holding ``G_add``
  when ``lam == 0``, or ``G_mul`` when ``gamma == 0``; absent when both are zero.
  ``ghost[..., c, dy, dx]`` is the entry for channel ``c`` and offset ``j = dy*k + dx``.
* ``post_proj/{kernel, bias}``: ``[d_v, dim]``, ``[dim]``; ``post_proj.weight`` is ``[dim, d_v]``.

Initialisers: the convolutions use PyTorch's default ``Conv2d`` initialisation (weight and bias
uniform in ``±1/sqrt(fan_in)``); ``G_mul ~ N(0, 1)``; ``G_add`` and dense kernels follow timm's
``trunc_normal_(std=0.02)`` (truncated at ±2 absolute, so practically a normal); dense biases are
zero; LayerNorm is ones/zeros. The dense init is the timm/Swin convention the repo's backbones
build on; a bare PyTorch ``nn.Linear`` would use the uniform default instead.

The aggregation (step 5) is ``layers/elsa_aggregation.py``: an offset loop with its own VJP
(the default, ``ELSA.impl = "loop"``) or an unfold tensor (``"patches"``, the reference).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from mracnn_jax.layers import init as initializers
from mracnn_jax.layers.conv import grouped_conv_same
from mracnn_jax.layers.elsa_aggregation import IMPLS, elsa_aggregate
from mracnn_jax.ops import gelu

Array = jax.Array
Dtype = Any
PrecisionLike = Any


# ----------------------------------------------------------------------------------------------
# Initialisers


def _timm_trunc_normal(std: float = 0.02) -> Callable[..., Array]:
    """timm ``trunc_normal_(std)``: N(0, std^2) truncated to [-2, 2] (absolute bounds), sampled
    on the host (``mracnn_jax.layers.init``)."""
    return initializers.truncated_normal(std, bound=2.0)


class GroupedConv2d(nn.Module):
    """k x k grouped convolution, 'same' padding, with the fast kernel gradient of
    ``mracnn_jax.layers.conv.grouped_conv_same``. Parameters ``kernel`` ``[k, k, group_width,
    features]`` and ``bias`` ``[features]``, as ``flax.linen.Conv(feature_group_count=...)``."""

    features: int
    kernel_size: int
    group_width: int
    bias_init: Callable[..., Array] = nn.initializers.zeros
    param_dtype: Dtype = jnp.float32

    @nn.compact
    def __call__(self, x: Array) -> Array:
        k = self.kernel_size
        kernel = self.param(
            "kernel",
            initializers.torch_conv_kernel_init,
            (k, k, self.group_width, self.features),
            self.param_dtype,
        )
        bias = self.param("bias", self.bias_init, (self.features,), self.param_dtype)
        return grouped_conv_same(x, kernel.astype(x.dtype)) + bias.astype(x.dtype)


# ----------------------------------------------------------------------------------------------
# Modules


def qk_dim(dim: int, group_width: int) -> int:
    """``d_qk``: ``(dim // 3) * 2`` rounded up to a multiple of ``group_width``."""
    d = dim // 3 * 2
    return -(-d // group_width) * group_width


def ghost_head_shape(
    dim: int, kernel_size: int, lam: float, gamma: float
) -> tuple[int, ...] | None:
    """Shape of ``ghost_head`` (the repo's layout), or None when ``lam == gamma == 0``."""
    base = (dim, kernel_size, kernel_size)
    if lam != 0 and gamma != 0:
        return (2, 1) + base  # [G_mul; G_add]
    if lam == 0 and gamma == 0:
        return None
    return (1,) + base  # G_add when lam == 0, G_mul when gamma == 0


def ghost_head_init(lam: float, gamma: float) -> Callable[..., Array]:
    """Initialiser of ``ghost_head``: ``G_mul ~ N(0, 1)``, ``G_add ~`` timm trunc-normal(0.02)."""

    def init(key: Array, shape: tuple[int, ...], dtype: Dtype = jnp.float32) -> Array:
        base = (1,) + tuple(shape[-3:])
        k_mul, k_add = initializers.fold_keys(key)
        g_mul = initializers.normal(1.0)(k_mul, base, dtype)
        g_add = _timm_trunc_normal(0.02)(k_add, base, dtype)
        if lam != 0 and gamma != 0:
            return jnp.stack([g_mul, g_add]).reshape(shape)
        return (g_add if lam == 0 else g_mul).reshape(shape)

    return init


class ELSA(nn.Module):
    """Enhanced local self-attention on ``[B, H, W, dim]`` (see the module docstring).

    Attributes:
      dim: input/output channels (``d_v = dim``); must be divisible by ``num_heads``.
      num_heads: heads ``h`` (contiguous channel blocks of ``v``).
      kernel_size: odd window size ``k``.
      group_width: channels per group of the k×k attention conv (also rounds ``d_qk``).
      lam: exponent of the multiplicative ghost ``G_mul``; 0 removes it.
      gamma: scale of the additive ghost ``G_add``; 0 removes it.
      qk_scale: scale of ``q ⊙ k``; None means ``(dim // num_heads)^-1/2``.
      impl: aggregation, ``"loop"`` (bounded memory) or ``"patches"`` (unfold reference).
      dtype: computation dtype of the layers (None: the input's); softmax runs in float32.
      param_dtype: parameter dtype.
      precision: matmul/conv precision passed to every layer.
    """

    dim: int
    num_heads: int = 8
    kernel_size: int = 7
    group_width: int = 8
    lam: float = 1.0
    gamma: float = 1.0
    qk_scale: float | None = None
    impl: str = "loop"
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    precision: PrecisionLike = None

    @property
    def dim_qk(self) -> int:
        return qk_dim(self.dim, self.group_width)

    @property
    def scale(self) -> float:
        # The repo uses ``qk_scale or head_dim ** -0.5``.
        return self.qk_scale or (self.dim // self.num_heads) ** -0.5

    def _ghost_terms(self) -> tuple[Array | None, Array | None]:
        """``(M, D)`` as ``[dim, K]`` arrays (None when absent), from ``ghost_head``."""
        shape = ghost_head_shape(self.dim, self.kernel_size, self.lam, self.gamma)
        if shape is None:
            return None, None
        kk = self.kernel_size * self.kernel_size
        init = ghost_head_init(self.lam, self.gamma)
        ghost = self.param("ghost_head", init, shape, self.param_dtype)
        if len(shape) == 5:
            raw_mul, raw_add = ghost[0, 0], ghost[1, 0]
        elif self.lam == 0:
            raw_mul, raw_add = None, ghost[0]
        else:
            raw_mul, raw_add = ghost[0], None
        g_mul = g_add = None
        if raw_mul is not None:
            g_mul = raw_mul.reshape(self.dim, kk)
            if self.lam != 1:
                lam = int(self.lam) if float(self.lam).is_integer() else self.lam
                g_mul = g_mul**lam
        if raw_add is not None:
            g_add = raw_add.reshape(self.dim, kk)
            if self.gamma != 1:
                g_add = g_add * self.gamma
        return g_mul, g_add

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """x: ``[B, H, W, dim]`` -> ``[B, H, W, dim]``."""
        if x.ndim != 4 or x.shape[-1] != self.dim:
            raise ValueError(f"ELSA expects [B, H, W, {self.dim}], got {x.shape}")
        if self.kernel_size < 1 or self.kernel_size % 2 != 1:
            raise ValueError(f"kernel_size must be odd and positive, got {self.kernel_size}")
        if self.dim % self.num_heads:
            raise ValueError(f"dim {self.dim} is not divisible by num_heads {self.num_heads}")
        if self.impl not in IMPLS:
            raise ValueError(f"impl must be one of {IMPLS}, got {self.impl!r}")
        k, heads, d_qk, d_v = self.kernel_size, self.num_heads, self.dim_qk, self.dim
        kk = k * k
        b, hh, ww, _ = x.shape
        dtype = x.dtype if self.dtype is None else self.dtype
        common = {"dtype": dtype, "param_dtype": self.param_dtype, "precision": self.precision}

        qkv = nn.Conv(
            2 * d_qk + d_v,
            (1, 1),
            use_bias=False,
            kernel_init=initializers.torch_conv_kernel_init,
            name="pre_proj",
            **common,
        )(x)
        q, kq, v = jnp.split(qkv, [d_qk, 2 * d_qk], axis=-1)
        s = q * kq * self.scale

        fan_in = self.group_width * kk
        s = GroupedConv2d(
            d_qk,
            k,
            self.group_width,
            bias_init=initializers.torch_uniform(fan_in),
            name="attn_conv",
            param_dtype=self.param_dtype,
        )(s)
        s = gelu(s)
        logits = nn.Conv(
            heads * kk,
            (1, 1),
            kernel_init=initializers.torch_conv_kernel_init,
            bias_init=initializers.torch_uniform(d_qk),
            name="attn_proj",
            **common,
        )(s)
        logits = logits.reshape(b, hh, ww, heads, kk)
        attn = jax.nn.softmax(logits.astype(jnp.float32), axis=-1).astype(v.dtype)

        g_mul, g_add = self._ghost_terms()
        if g_mul is not None:
            g_mul = g_mul.astype(v.dtype)
        if g_add is not None:
            g_add = g_add.astype(v.dtype)
        out = elsa_aggregate(v, attn, g_mul, g_add, impl=self.impl)

        return nn.Dense(
            self.dim,
            kernel_init=_timm_trunc_normal(0.02),
            bias_init=nn.initializers.zeros,
            name="post_proj",
            **common,
        )(out)


class ELSABlock(nn.Module):
    """``x + ELSA(LN(x))`` then ``+ MLP(LN(.))``; the MLP is Dense(dim·mlp_ratio), GELU, Dense(dim).

    Shapes ``[B, H, W, dim] -> [B, H, W, dim]``. As in the repo's ``ELSABlock``, ``qk_scale``
    defaults to 1. LayerNorm epsilon is PyTorch's 1e-5; GELU is exact (erf).
    Submodules: ``norm1``, ``attn`` (ELSA), ``norm2``, ``mlp_fc1``, ``mlp_fc2``.
    (PyTorch names: ``norm1``, ``attn``, ``norm2``, ``mlp.fc1``, ``mlp.fc2``.)
    """

    dim: int
    num_heads: int = 8
    kernel_size: int = 7
    group_width: int = 8
    lam: float = 1.0
    gamma: float = 1.0
    qk_scale: float | None = 1.0
    mlp_ratio: float = 3.0
    impl: str = "loop"
    dtype: Dtype | None = None
    param_dtype: Dtype = jnp.float32
    precision: PrecisionLike = None

    @nn.compact
    def __call__(self, x: Array) -> Array:
        """x: ``[B, H, W, dim]`` -> ``[B, H, W, dim]``."""
        dtype = x.dtype if self.dtype is None else self.dtype
        common = {"dtype": dtype, "param_dtype": self.param_dtype}
        dense = {
            "precision": self.precision,
            "kernel_init": _timm_trunc_normal(0.02),
            "bias_init": nn.initializers.zeros,
            **common,
        }
        y = nn.LayerNorm(epsilon=1e-5, name="norm1", **common)(x)
        y = ELSA(
            self.dim,
            num_heads=self.num_heads,
            kernel_size=self.kernel_size,
            group_width=self.group_width,
            lam=self.lam,
            gamma=self.gamma,
            qk_scale=self.qk_scale,
            impl=self.impl,
            precision=self.precision,
            name="attn",
            **common,
        )(y)
        x = x + y
        y = nn.LayerNorm(epsilon=1e-5, name="norm2", **common)(x)
        y = nn.Dense(int(self.dim * self.mlp_ratio), name="mlp_fc1", **dense)(y)
        y = gelu(y)
        y = nn.Dense(self.dim, name="mlp_fc2", **dense)(y)
        return x + y

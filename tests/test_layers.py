"""Layer tests: transposed convolution forms, GDN maths, MRACB and attention structure."""

from __future__ import annotations

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mracnn_jax.layers.conv import Conv2d, conv_stride2, pointwise_conv
from mracnn_jax.layers.gdn import GDN, PEDESTAL, deparameterize, reparameterize
from mracnn_jax.layers.mracb import MRACD, MRACU
from mracnn_jax.layers.upsampling import (
    ConvTranspose2d,
    conv_transpose_dilated,
    conv_transpose_subpixel,
    depth_to_space,
)
from mracnn_jax.layers.wam import WAM, WindowAttention, shift_mask
from mracnn_jax.ops import gelu


def count(params) -> int:
    return sum(int(np.prod(p.shape)) for p in jax.tree_util.tree_leaves(params))


def naive_conv_transpose(x, w, p):
    """PyTorch ConvTranspose2d(stride 2, padding p, output_padding 1) as an explicit scatter."""
    b, h, wd, _ = x.shape
    k = w.shape[0]
    full = np.zeros((b, 2 * h + k, 2 * wd + k, w.shape[3]))
    for i in range(h):
        for j in range(wd):
            for ty in range(k):
                for tx in range(k):
                    full[:, 2 * i + ty, 2 * j + tx] += x[:, i, j] @ w[ty, tx]
    return full[:, p : p + 2 * h, p : p + 2 * wd]


@pytest.mark.parametrize("k", [3, 5])
@pytest.mark.parametrize("c_out", [3, 12])  # matmul + col2im form, per-phase convolutions
def test_conv_transpose_forms_agree_with_scatter_and_flax(k, c_out):
    rng = np.random.default_rng(k)
    x = rng.standard_normal((2, 5, 7, 4))
    w = rng.standard_normal((k, k, 4, c_out))
    ref = naive_conv_transpose(x, w, k // 2)
    xj, wj = jnp.asarray(x, jnp.float32), jnp.asarray(w, jnp.float32)
    sub = conv_transpose_subpixel(xj, wj, k // 2)
    dil = conv_transpose_dilated(xj, wj, k // 2)
    assert sub.shape == (2, 10, 14, c_out)
    np.testing.assert_allclose(sub, ref, atol=1e-5 * np.abs(ref).max())
    np.testing.assert_allclose(dil, ref, atol=1e-5 * np.abs(ref).max())
    # flax.linen.ConvTranspose with the flipped kernel and PyTorch's implicit padding.
    p = k // 2
    flax_layer = nn.ConvTranspose(
        c_out, (k, k), strides=(2, 2), padding=((k - 1 - p, k - p),) * 2, use_bias=False
    )
    out = flax_layer.apply({"params": {"kernel": wj[::-1, ::-1]}}, xj)
    np.testing.assert_allclose(sub, out, atol=1e-5 * np.abs(ref).max())


@pytest.mark.parametrize("c_out", [3, 12])
def test_conv_transpose_module_impls_share_parameters_and_gradients(c_out):
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 6, 4, 8))
    fast, slow = ConvTranspose2d(c_out, 5, "subpixel"), ConvTranspose2d(c_out, 5, "dilated")
    params = fast.init(jax.random.PRNGKey(1), x)
    assert jax.tree_util.tree_map(jnp.shape, params) == jax.tree_util.tree_map(
        jnp.shape, slow.init(jax.random.PRNGKey(1), x)
    )
    f = lambda m: jax.grad(lambda p, x: jnp.sum(jnp.sin(m.apply(p, x))), argnums=(0, 1))
    (gp1, gx1), (gp2, gx2) = f(fast)(params, x), f(slow)(params, x)
    np.testing.assert_allclose(gx1, gx2, atol=1e-5)
    for a, b in zip(jax.tree_util.tree_leaves(gp1), jax.tree_util.tree_leaves(gp2)):
        np.testing.assert_allclose(a, b, atol=1e-4)


def _xla_conv_stride2(x, kernel):
    p = kernel.shape[0] // 2
    return jax.lax.conv_general_dilated(
        x, kernel, (2, 2), ((p, p), (p, p)), dimension_numbers=("NHWC", "HWIO", "NHWC")
    )


@pytest.mark.parametrize("k", [3, 5])
def test_stride2_conv_gradients_equal_xla(k):
    # conv_stride2 computes its input gradient as a sub-pixel transposed convolution and its
    # kernel gradient by polyphase components; both must equal XLA's own gradients.
    x = jax.random.normal(jax.random.PRNGKey(0), (2, 10, 6, 3))
    kernel = jax.random.normal(jax.random.PRNGKey(1), (k, k, 3, 5))
    cotangent = jax.random.normal(jax.random.PRNGKey(2), (2, 5, 3, 5))
    ours, vjp_ours = jax.vjp(conv_stride2, x, kernel)
    ref, vjp_ref = jax.vjp(_xla_conv_stride2, x, kernel)
    np.testing.assert_array_equal(ours, ref)
    for a, b in zip(vjp_ours(cotangent), vjp_ref(cotangent)):
        np.testing.assert_allclose(a, b, atol=1e-5 * float(jnp.abs(b).max()))


def test_conv2d_stride2_gradient_on_even_and_odd_sizes():
    # Even sizes take conv_stride2, odd ones XLA's strided convolution: same layer, same maths.
    layer = Conv2d(4, 5, stride=2)
    for shape in [(1, 8, 12, 3), (1, 7, 9, 3)]:
        x = jax.random.normal(jax.random.PRNGKey(3), shape)
        params = layer.init(jax.random.PRNGKey(4), x)
        kernel, bias = params["params"]["kernel"], params["params"]["bias"]
        loss = lambda p, x: jnp.sum(jnp.sin(layer.apply(p, x)))
        ref = lambda k, x, bias=bias: jnp.sum(jnp.sin(_xla_conv_stride2(x, k) + bias))
        (g_p, g_x), (g_k, g_x_ref) = (
            jax.grad(loss, (0, 1))(params, x),
            jax.grad(ref, (0, 1))(kernel, x),
        )
        assert g_x.shape == shape
        np.testing.assert_allclose(g_x, g_x_ref, atol=1e-5)
        np.testing.assert_allclose(g_p["params"]["kernel"], g_k, atol=1e-5)


def test_conv2d_1x1_is_xla_convolution_with_its_gradients():
    # Conv2d runs 1x1 kernels as one matrix product (pointwise_conv); values and both gradients
    # must be XLA's 1x1 convolution's, on a batch with odd sizes.
    layer = Conv2d(7, 1)
    x = jax.random.normal(jax.random.PRNGKey(5), (3, 5, 9, 6))
    params = layer.init(jax.random.PRNGKey(6), x)
    kernel, bias = params["params"]["kernel"], params["params"]["bias"]
    assert kernel.shape == (1, 1, 6, 7)
    xla = lambda k, x: jax.lax.conv_general_dilated(
        x, k, (1, 1), ((0, 0), (0, 0)), dimension_numbers=("NHWC", "HWIO", "NHWC")
    )
    np.testing.assert_allclose(pointwise_conv(x, kernel), xla(kernel, x), atol=1e-6, rtol=1e-6)
    loss = lambda p, x: jnp.sum(jnp.sin(layer.apply(p, x)))
    ref = lambda k, x: jnp.sum(jnp.sin(xla(k, x) + bias))
    (g_p, g_x), (g_k, g_x_ref) = jax.grad(loss, (0, 1))(params, x), jax.grad(ref, (0, 1))(kernel, x)
    np.testing.assert_allclose(g_x, g_x_ref, atol=1e-5)
    np.testing.assert_allclose(g_p["params"]["kernel"], g_k, atol=1e-5)
    np.testing.assert_allclose(loss(params, x), ref(kernel, x), rtol=1e-6)


def test_depth_to_space_order():
    # channel (i*r + j)*C + c goes to pixel offset (i, j)
    x = jnp.arange(8, dtype=jnp.float32).reshape(1, 1, 1, 8)  # r = 2, C = 2
    y = depth_to_space(x, 2)
    assert y.shape == (1, 2, 2, 2)
    np.testing.assert_array_equal(y[0, :, :, 0], [[0, 2], [4, 6]])
    np.testing.assert_array_equal(y[0, :, :, 1], [[1, 3], [5, 7]])


def test_conv2d_symmetric_padding_matches_numpy():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((1, 7, 6, 2)).astype(np.float32)
    layer = Conv2d(3, 3, stride=2)
    params = layer.init(jax.random.PRNGKey(0), x)
    w, bias = (np.asarray(params["params"][k]) for k in ("kernel", "bias"))
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)))
    ref = np.zeros((1, 4, 3, 3))
    for i in range(4):
        for j in range(3):
            ref[0, i, j] = (
                np.einsum("hwc,hwco->o", xp[0, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3], w) + bias
            )
    np.testing.assert_allclose(layer.apply(params, x), ref, atol=1e-5)


def test_gelu_is_the_exact_erf_gelu_with_its_gradient():
    """ops.gelu (erf form) against jax.nn.gelu's erfc form and the closed-form derivative
    Phi(x) + x phi(x), over the range where GELU bends and into both tails."""
    x = jnp.linspace(-12.0, 12.0, 20001, dtype=jnp.float32)
    np.testing.assert_allclose(gelu(x), jax.nn.gelu(x, approximate=False), atol=2e-6, rtol=0)
    xs = np.asarray(x, np.float64)
    phi = np.exp(-0.5 * xs * xs) / np.sqrt(2.0 * np.pi)
    cdf = 0.5 * (1.0 + np.vectorize(math.erf)(xs / np.sqrt(2.0)))
    np.testing.assert_allclose(jax.vmap(jax.grad(gelu))(x), cdf + xs * phi, atol=2e-6, rtol=0)
    assert gelu(jnp.float32(-12.0)) == 0.0 and gelu(jnp.float32(12.0)) == 12.0


def test_gdn_matches_formula_and_reparameterisation():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3, 4, 5)).astype(np.float32)
    beta = rng.uniform(0.5, 2, 5)
    gamma = rng.uniform(0, 0.3, (5, 5))
    params = {
        "params": {
            "beta": reparameterize(jnp.asarray(beta)),
            "gamma": reparameterize(jnp.asarray(gamma)),
        }
    }
    norm = np.einsum("bhwj,ij->bhwi", x.astype(np.float64) ** 2, gamma) + beta
    np.testing.assert_allclose(GDN().apply(params, x), x / np.sqrt(norm), rtol=1e-5)
    np.testing.assert_allclose(GDN(inverse=True).apply(params, x), x * np.sqrt(norm), rtol=1e-5)
    # the stored form round-trips, and the lower bounds hold
    np.testing.assert_allclose(
        deparameterize(reparameterize(jnp.asarray(beta)), 1e-6), beta, rtol=1e-6
    )
    assert float(deparameterize(jnp.zeros(()), 1e-6)) == pytest.approx(1e-6, rel=1e-3)
    assert float(deparameterize(jnp.zeros(()), 0.0)) == pytest.approx(0.0, abs=PEDESTAL)


def test_igdn_inverts_gdn_only_without_cross_terms():
    rng = np.random.default_rng(2)
    x = jnp.asarray(rng.standard_normal((1, 4, 4, 6)) * 3, jnp.float32)
    gdn, igdn = GDN(), GDN(inverse=True)
    params = gdn.init(jax.random.PRNGKey(0), x)
    # gamma = 0: GDN is x / sqrt(beta) and IGDN undoes it exactly
    zero = {"params": {"beta": params["params"]["beta"] * 2.0, "gamma": jnp.zeros((6, 6))}}
    np.testing.assert_allclose(igdn.apply(zero, gdn.apply(zero, x)), x, rtol=1e-5)
    # with the initial gamma = 0.1 I and beta = 1 the composition shrinks magnitudes:
    # |GDN(x)| <= |x| so IGDN(GDN(x)) = x sqrt(1 + .1 y^2) / sqrt(1 + .1 x^2) has |.| <= |x|
    y = igdn.apply(params, gdn.apply(params, x))
    assert np.all(np.abs(y) <= np.abs(x) + 1e-6)
    assert np.max(np.abs(y - x)) > 1e-2  # not an identity
    # and it is the identity to first order near zero
    small = x * 1e-3
    np.testing.assert_allclose(
        igdn.apply(params, gdn.apply(params, small)), small, rtol=1e-5, atol=1e-9
    )


def test_gdn_lower_bound_gradient_lets_parameters_recover():
    stored = jnp.asarray([0.0, 1.0])  # the first is below the bound
    g_down = jax.grad(lambda p: jnp.sum(deparameterize(p, 1e-6)))(stored)  # descent lowers it
    g_up = jax.grad(lambda p: -jnp.sum(deparameterize(p, 1e-6)))(stored)  # descent raises it
    assert g_down[0] == 0.0 and g_up[0] < 0.0
    assert g_down[1] > 0.0


def test_mracb_parameter_counts_and_shapes():
    x = jnp.zeros((1, 32, 32, 192))
    down = MRACD(192)
    p = down.init(jax.random.PRNGKey(0), jnp.zeros((1, 32, 32, 3)))
    assert count(p) == 601_344
    assert count(MRACD(192).init(jax.random.PRNGKey(0), x)) == 1_254_528
    up = MRACU(192)
    pu = up.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 320)))
    assert count(pu) == 1_696_896
    assert up.apply(pu, jnp.zeros((1, 8, 8, 320))).shape == (1, 16, 16, 192)
    assert down.apply(p, jnp.zeros((1, 32, 32, 3))).shape == (1, 16, 16, 192)


def test_wam_parameter_count():
    for c, window, shift, expected in ((192, 8, 4, 908_232), (320, 4, 2, 2_514_632)):
        x = jnp.zeros((1, 2 * window, 2 * window, c))
        init = lambda window=window, shift=shift, x=x: WAM(8, window, shift).init(
            jax.random.PRNGKey(0), x
        )
        assert count(jax.eval_shape(init)) == expected


def test_window_attention_bias_table_is_drawn_as_timm_draws_it():
    """N(0, 0.02²) cut at ±2 (timm's trunc_normal_, STF's and the PyTorch twin's): in practice
    untruncated, so the std is 0.02 and a few values lie beyond 2 std (a cut at ±0.04 gave 0.0176
    and none)."""
    layer = WindowAttention(num_heads=16, window=8, shift=0)
    params = layer.init(jax.random.PRNGKey(0), jnp.zeros((1, 8, 8, 64)))["params"]
    table = np.asarray(params["relative_position_bias_table"])  # 225 x 16 values
    assert table.std() == pytest.approx(0.02, rel=0.05)
    assert np.sum(np.abs(table) > 0.04) > 50  # about 4.6 % of 3,600


def naive_window_attention(x, params, heads, window, shift):
    """Swin (shifted-)window attention with explicit loops over windows and heads (numpy)."""
    b, h, w, c = x.shape
    d = c // heads
    xs = np.roll(x, (-shift, -shift), axis=(1, 2))
    mask = shift_mask(h, w, window, shift) if shift else None
    qkv_w, qkv_b = params["qkv"]["kernel"], params["qkv"]["bias"]
    proj_w, proj_b = params["proj"]["kernel"], params["proj"]["bias"]
    table = params["relative_position_bias_table"]
    out = np.zeros_like(xs)
    coords = [(i, j) for i in range(window) for j in range(window)]
    for bi in range(b):
        for wi, (r0, c0) in enumerate(
            (r, cc) for r in range(0, h, window) for cc in range(0, w, window)
        ):
            tok = xs[bi, r0 : r0 + window, c0 : c0 + window].reshape(-1, c)
            qkv = tok @ qkv_w + qkv_b
            res = np.zeros((window * window, c))
            for hd in range(heads):
                q = qkv[:, hd * d : (hd + 1) * d] * d**-0.5
                k = qkv[:, c + hd * d : c + (hd + 1) * d]
                v = qkv[:, 2 * c + hd * d : 2 * c + (hd + 1) * d]
                logits = q @ k.T
                for n, (i1, j1) in enumerate(coords):
                    for m, (i2, j2) in enumerate(coords):
                        logits[n, m] += table[
                            (i1 - i2 + window - 1) * (2 * window - 1) + (j1 - j2 + window - 1), hd
                        ]
                if mask is not None:
                    logits = logits + mask[wi]
                a = np.exp(logits - logits.max(-1, keepdims=True))
                a /= a.sum(-1, keepdims=True)
                res[:, hd * d : (hd + 1) * d] = a @ v
            out[bi, r0 : r0 + window, c0 : c0 + window] = (res @ proj_w + proj_b).reshape(
                window, window, c
            )
    return x + np.roll(out, (shift, shift), axis=(1, 2))


@pytest.mark.parametrize("shift", [0, 2])
def test_window_attention_matches_naive_loops(shift):
    x = np.random.default_rng(3).standard_normal((2, 8, 12, 16)).astype(np.float32)
    layer = WindowAttention(num_heads=4, window=4, shift=shift)
    params = layer.init(jax.random.PRNGKey(0), x)
    params = jax.tree_util.tree_map(
        lambda p: p + 0.1 * jax.random.normal(jax.random.PRNGKey(9), p.shape), params
    )
    ref = naive_window_attention(
        x.astype(np.float64), jax.tree_util.tree_map(np.asarray, params["params"]), 4, 4, shift
    )
    np.testing.assert_allclose(layer.apply(params, x), ref, atol=1e-4)

"""Tests for mracnn_jax.layers.elsa against a naive float64 NumPy ELSA written from the maths."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mracnn_jax.layers.elsa import ELSA, ELSABlock, ghost_head_init, ghost_head_shape
from mracnn_jax.layers.elsa_aggregation import elsa_aggregate

# ----------------------------------------------------------------------------------------------
# Naive reference: explicit loops over pixels and offsets, float64, no code shared with the module.


def _erf(x: np.ndarray) -> np.ndarray:
    return np.vectorize(math.erf)(x)


def _gelu(x: np.ndarray) -> np.ndarray:
    return 0.5 * x * (1.0 + _erf(x / math.sqrt(2.0)))


def _f64(tree):
    return jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), tree)


def naive_elsa(p, x, *, num_heads, kernel_size, group_width, lam, gamma, qk_scale):
    """ELSA on x [B, H, W, dim] with the Flax parameter dict ``p`` (float64 NumPy)."""
    p = _f64(p)
    x = np.asarray(x, np.float64)
    bsz, hh, ww, dim = x.shape
    k, r = kernel_size, kernel_size // 2
    d_qk = math.ceil((dim // 3 * 2) / group_width) * group_width
    scale = qk_scale if qk_scale else (dim // num_heads) ** -0.5

    qkv = x @ p["pre_proj"]["kernel"][0, 0]
    q, kk, v = qkv[..., :d_qk], qkv[..., d_qk : 2 * d_qk], qkv[..., 2 * d_qk :]
    s = q * kk * scale

    # Grouped k×k conv, zero padding: out[m, o] = b[o] + Σ_{dy,dx} Σ_i s[m + off, grp(o)·gw + i] W.
    wc, bc = p["attn_conv"]["kernel"], p["attn_conv"]["bias"]
    conv = np.zeros_like(s) + bc
    for y in range(hh):
        for xx in range(ww):
            for dy in range(k):
                for dx in range(k):
                    yy, xs = y + dy - r, xx + dx - r
                    if not (0 <= yy < hh and 0 <= xs < ww):
                        continue
                    for g in range(d_qk // group_width):
                        sl = slice(g * group_width, (g + 1) * group_width)
                        conv[:, y, xx, sl] += s[:, yy, xs, sl] @ wc[dy, dx, :, sl]
    logits = _gelu(conv) @ p["attn_proj"]["kernel"][0, 0] + p["attn_proj"]["bias"]
    logits = logits.reshape(bsz, hh, ww, num_heads, k * k)  # channel = head·K + (dy·k + dx)
    e = np.exp(logits - logits.max(-1, keepdims=True))
    attn = e / e.sum(-1, keepdims=True)

    # Ghost head, repo layout.
    ones, zeros = np.ones((dim, k, k)), np.zeros((dim, k, k))
    if lam != 0 and gamma != 0:
        gh = p["ghost_head"]
        g_mul, g_add = gh[0, 0] ** lam, gh[1, 0] * gamma
    elif lam == 0 and gamma != 0:
        g_mul, g_add = ones, p["ghost_head"][0] * gamma
    elif lam != 0:
        g_mul, g_add = p["ghost_head"][0] ** lam, zeros
    else:
        g_mul, g_add = ones, zeros

    head_of = np.arange(dim) // (dim // num_heads)  # contiguous channel blocks
    out = np.zeros_like(v)
    for y in range(hh):
        for xx in range(ww):
            for dy in range(k):
                for dx in range(k):
                    yy, xs = y + dy - r, xx + dx - r
                    if not (0 <= yy < hh and 0 <= xs < ww):
                        continue  # v is zero there (the softmax weight is still spent)
                    a = attn[:, y, xx, head_of, dy * k + dx]  # [B, dim]
                    wgt = g_mul[:, dy, dx] * a + g_add[:, dy, dx]
                    out[:, y, xx, :] += v[:, yy, xs, :] * wgt
    return out @ p["post_proj"]["kernel"] + p["post_proj"]["bias"]


def naive_block(p, x, *, mlp_ratio, **kw):
    p = _f64(p)
    x = np.asarray(x, np.float64)

    def ln(z, q):
        mu = z.mean(-1, keepdims=True)
        var = ((z - mu) ** 2).mean(-1, keepdims=True)
        return (z - mu) / np.sqrt(var + 1e-5) * q["scale"] + q["bias"]

    x = x + naive_elsa(p["attn"], ln(x, p["norm1"]), **kw)
    h = _gelu(ln(x, p["norm2"]) @ p["mlp_fc1"]["kernel"] + p["mlp_fc1"]["bias"])
    assert h.shape[-1] == int(x.shape[-1] * mlp_ratio)
    return x + h @ p["mlp_fc2"]["kernel"] + p["mlp_fc2"]["bias"]


# ----------------------------------------------------------------------------------------------
# Helpers


def _random_params(shapes, rng: np.random.Generator):
    """Random float32 weights with the module's parameter shapes: kernels ~ N(0, 1/fan_in),
    biases ~ N(0, 0.5²), LN scales ~ 1 + N(0, 0.5²), ghost ~ N(0, 1), so every term (biases and
    the additive ghost included) matters."""
    flat, treedef = jax.tree_util.tree_flatten_with_path(shapes)
    new = []
    for path, leaf in flat:
        name = str(path[-1].key)
        z = rng.standard_normal(leaf.shape)
        if name == "kernel":
            z = z / np.sqrt(np.prod(leaf.shape[:-1]))
        elif name == "scale":
            z = 1.0 + 0.5 * z
        elif name != "ghost_head":
            z = 0.5 * z
        new.append(jnp.asarray(z, jnp.float32))
    return jax.tree_util.tree_unflatten(treedef, new)


def _n_params(tree) -> int:
    return sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(tree))


def _setup(module, shape, seed=0):
    """(x, params) with random values; shapes from ``init`` traced abstractly (fast)."""
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.standard_normal(shape), jnp.float32)
    shapes = jax.eval_shape(module.init, jax.random.PRNGKey(0), x)["params"]
    return x, _random_params(shapes, rng)


def _close(actual, desired, tol=1e-5):
    actual, desired = np.asarray(actual, np.float64), np.asarray(desired, np.float64)
    np.testing.assert_allclose(actual, desired, rtol=tol, atol=tol * np.abs(desired).max())


# ----------------------------------------------------------------------------------------------
# Tests

# (kernel_size, num_heads, group_width, lam, gamma, qk_scale, (B, H, W))
CASES = [
    (3, 1, 8, 1.0, 1.0, None, (2, 9, 11)),
    (7, 4, 8, 1.0, 1.0, None, (1, 9, 11)),
    (7, 8, 4, 1.0, 1.0, 0.7, (1, 9, 11)),
    (3, 8, 8, 0.0, 1.0, None, (2, 9, 11)),
    (5, 4, 8, 2.0, 0.5, None, (1, 6, 7)),
    (7, 4, 8, 1.0, 0.0, None, (1, 3, 5)),  # map smaller than the window
]


@pytest.mark.parametrize("k,heads,gw,lam,gamma,qk_scale,bhw", CASES)
def test_matches_naive_reference(k, heads, gw, lam, gamma, qk_scale, bhw):
    dim = 32
    module = ELSA(
        dim, num_heads=heads, kernel_size=k, group_width=gw, lam=lam, gamma=gamma, qk_scale=qk_scale
    )
    x, params = _setup(module, bhw + (dim,))
    ref = naive_elsa(
        params,
        x,
        num_heads=heads,
        kernel_size=k,
        group_width=gw,
        lam=lam,
        gamma=gamma,
        qk_scale=qk_scale,
    )
    assert np.abs(ref).max() > 0.1
    for impl in ("loop", "patches"):
        y = jax.jit(module.clone(impl=impl).apply)({"params": params}, x)
        assert y.shape == x.shape
        _close(y, ref)


def test_block_matches_naive_reference():
    dim, heads, k = 24, 4, 3
    module = ELSABlock(dim, num_heads=heads, kernel_size=k)
    x, params = _setup(module, (2, 5, 7, dim), seed=3)
    assert set(params) == {"norm1", "attn", "norm2", "mlp_fc1", "mlp_fc2"}
    ref = naive_block(
        params,
        x,
        mlp_ratio=3,
        num_heads=heads,
        kernel_size=k,
        group_width=8,
        lam=1.0,
        gamma=1.0,
        qk_scale=1.0,
    )
    _close(jax.jit(module.apply)({"params": params}, x), ref)


@pytest.mark.parametrize(
    "dim,elsa_count,block_extra",
    [(128, 137_440, 99_328), (192, 242_760, 222_720), (320, 544_672, 616_960)],
)
def test_parameter_counts(dim, elsa_count, block_extra):
    x = jax.ShapeDtypeStruct((1, 8, 8, dim), jnp.float32)
    rng = jax.random.PRNGKey(0)
    p_elsa = jax.eval_shape(ELSA(dim, num_heads=8, kernel_size=7).init, rng, x)["params"]
    p_block = jax.eval_shape(ELSABlock(dim, num_heads=8, kernel_size=7).init, rng, x)["params"]
    assert _n_params(p_elsa) == elsa_count
    assert _n_params(p_block) - elsa_count == block_extra
    d_qk = ELSA(dim).dim_qk
    shapes = jax.tree_util.tree_map(lambda a: a.shape, p_elsa)
    assert shapes == {
        "pre_proj": {"kernel": (1, 1, dim, 2 * d_qk + dim)},
        "attn_conv": {"kernel": (7, 7, 8, d_qk), "bias": (d_qk,)},
        "attn_proj": {"kernel": (1, 1, d_qk, 8 * 49), "bias": (8 * 49,)},
        "ghost_head": (2, 1, dim, 7, 7),
        "post_proj": {"kernel": (dim, dim), "bias": (dim,)},
    }


def test_ghost_head_layout_and_init():
    dim, k = 64, 7
    x = jnp.zeros((1, 4, 4, dim))
    rng = jax.random.PRNGKey(0)
    gh = ghost_head_init(1.0, 1.0)(rng, ghost_head_shape(dim, k, 1.0, 1.0))
    assert gh.shape == (2, 1, dim, k, k)
    assert 0.9 < float(jnp.std(gh[0])) < 1.1  # G_mul ~ N(0, 1)
    assert 0.018 < float(jnp.std(gh[1])) < 0.022  # G_add ~ N(0, 0.02²)
    assert ghost_head_shape(dim, k, 0.0, 1.0) == (1, dim, k, k)
    assert float(jnp.std(ghost_head_init(0.0, 1.0)(rng, (1, dim, k, k)))) < 0.022
    for lam, gamma, shape in [(1.0, 1.0, (2, 1, dim, k, k)), (0.0, 1.0, (1, dim, k, k))]:
        p = jax.eval_shape(ELSA(dim, lam=lam, gamma=gamma).init, rng, x)["params"]
        assert p["ghost_head"].shape == shape
    p = jax.eval_shape(ELSA(dim, gamma=0.0).init, rng, x)["params"]
    assert p["ghost_head"].shape == (1, dim, k, k)
    p = jax.eval_shape(ELSA(dim, lam=0.0, gamma=0.0).init, rng, x)["params"]
    assert "ghost_head" not in p


@pytest.mark.parametrize("lam,gamma,heads", [(1.0, 1.0, 4), (0.0, 1.0, 8), (2.0, 0.5, 1)])
def test_loop_gradients_match_patches(lam, gamma, heads):
    dim, k = 32, 5
    module = ELSA(dim, num_heads=heads, kernel_size=k, lam=lam, gamma=gamma)
    x, params = _setup(module, (2, 9, 11, dim), seed=1)
    ct = jax.random.normal(jax.random.PRNGKey(7), x.shape)

    def grads(impl):
        m = module.clone(impl=impl)

        def loss(p, inp):
            return jnp.sum(m.apply({"params": p}, inp) * ct)

        return jax.jit(jax.grad(loss, argnums=(0, 1)))(params, x)

    g_loop, g_patch = grads("loop"), grads("patches")
    flat_loop = jax.tree_util.tree_flatten_with_path(g_loop)[0]
    flat_patch = jax.tree_util.tree_leaves(g_patch)
    assert len(flat_loop) == len(flat_patch) == len(jax.tree_util.tree_leaves(params)) + 1
    for (path, a), b in zip(flat_loop, flat_patch):
        _close(a, b)
        assert np.all(np.asarray(a) != 0), f"zero gradient entries in {jax.tree_util.keystr(path)}"


def _bf16_aggregation_inputs(rng):
    """bfloat16 ``(v [1, 16, 16, 64], softmaxed attn [1, 16, 16, 8, 49], g_mul, g_add [64, 49])``
    drawn from ``rng``."""
    v = jnp.asarray(rng.standard_normal((1, 16, 16, 64)), jnp.bfloat16)
    attn = jax.nn.softmax(jnp.asarray(rng.standard_normal((1, 16, 16, 8, 49)), jnp.float32))
    attn = attn.astype(jnp.bfloat16)
    g_mul = jnp.asarray(1 + 0.1 * rng.standard_normal((64, 49)), jnp.bfloat16)
    g_add = jnp.asarray(0.01 * rng.standard_normal((64, 49)), jnp.bfloat16)
    return v, attn, g_mul, g_add


def test_bfloat16_aggregation_rounds_only_its_result():
    """bfloat16 inputs: the loop's sum of 49 products is carried in float32, so its output is
    the float32 aggregation of the same inputs rounded once (within bfloat16's half ulp, 2^-8
    relative), where a bfloat16 running sum was 0.9 % off in relative RMS."""
    rng = np.random.default_rng(3)
    v, attn, g_mul, g_add = _bf16_aggregation_inputs(rng)
    out = elsa_aggregate(v, attn, g_mul, g_add)
    assert out.dtype == jnp.bfloat16
    f32 = [a.astype(jnp.float32) for a in (v, attn, g_mul, g_add)]
    exact = np.asarray(elsa_aggregate(*f32), np.float64)
    err = np.abs(np.asarray(out, np.float64) - exact)
    assert np.all(err <= 2.0**-8 * np.abs(exact) * (1 + 1e-5) + 1e-7)


def test_bfloat16_aggregation_gradient_sums_in_float32():
    """bfloat16 inputs: the backward pass's 49-term sum for the values' gradient is carried in
    float32 and rounded once, as the forward pass's is (a bfloat16 running sum is several
    bfloat16 ulps off); every gradient stays within a few ulps of the float32 gradient of the
    same inputs."""
    rng = np.random.default_rng(4)
    v, attn, g_mul, g_add = _bf16_aggregation_inputs(rng)
    dout = jnp.asarray(rng.standard_normal((1, 16, 16, 64)), jnp.bfloat16)

    def grads(*args):
        out, vjp = jax.vjp(lambda *a: elsa_aggregate(*a), *args)
        return vjp(dout.astype(out.dtype))

    low = grads(v, attn, g_mul, g_add)
    exact = grads(*[a.astype(jnp.float32) for a in (v, attn, g_mul, g_add)])
    assert [g.dtype for g in low] == [jnp.bfloat16] * 4
    for name, a, b in zip(("v", "attn", "mul", "add"), low, exact):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        rel_rms = np.sqrt(np.mean((a - b) ** 2) / np.mean(b**2))
        assert rel_rms < 2.0**-8, f"d{name}: relative RMS {rel_rms:.2e} of the float32 gradient"


def test_loop_memory_is_bounded():
    """The loop's training step stores nothing of the unfold tensor's size ([B, H, W, C·K])."""
    b, hh, ww, c, heads, k = 2, 32, 32, 128, 8, 7
    v = jax.ShapeDtypeStruct((b, hh, ww, c), jnp.float32)
    attn = jax.ShapeDtypeStruct((b, hh, ww, heads, k * k), jnp.float32)
    ghost = jax.ShapeDtypeStruct((c, k * k), jnp.float32)

    def temp_bytes(impl):
        def loss(*args):
            return jnp.sum(elsa_aggregate(*args, impl=impl) ** 2)

        step = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3)))
        stats = step.lower(v, attn, ghost, ghost).compile().memory_analysis()
        if stats is None:
            pytest.skip("memory_analysis is not available on this backend")
        return stats.temp_size_in_bytes

    unfold_bytes = 4 * b * hh * ww * c * k * k  # 49 MiB here; v and A together are 4 MiB
    loop = temp_bytes("loop")
    assert loop < unfold_bytes / 4
    assert loop < temp_bytes("patches") / 4


def test_rejects_bad_configuration():
    x = jnp.zeros((1, 4, 4, 32))
    with pytest.raises(ValueError, match="odd"):
        jax.eval_shape(ELSA(32, kernel_size=4).init, jax.random.PRNGKey(0), x)
    with pytest.raises(ValueError, match="divisible"):
        jax.eval_shape(ELSA(32, num_heads=5).init, jax.random.PRNGKey(0), x)
    with pytest.raises(ValueError, match="impl"):
        jax.eval_shape(ELSA(32, impl="unfold").init, jax.random.PRNGKey(0), x)

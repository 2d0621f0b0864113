"""Tests of ``mracnn_jax.convert``: PyTorch (STF / CompressAI) state dicts <-> Flax parameters.

Without torch (CI's JAX environments): round trips on NumPy state dicts, the PixelShuffle
permutation, error messages. With torch: parity against PyTorch with the same random weights,
max abs diff <= 1e-4 (``test_*parity*``), for CompressAI's GDN / IGDN, EntropyBottleneck and
GaussianConditional (each against the real ``compressai`` package, which ``make test`` installs,
and against the reference re-implementation in ``tests/reference/torch_wacnn.py``, which needs
only torch), and for the whole WACNN (``tests/reference/torch_wacnn.py``) on a 256x256 image.
The models are narrow (``presets.small``: N = 16, M = 40) to keep the file fast.
"""

from __future__ import annotations

import pathlib
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from load_script import load_script  # a sibling helper module

from mracnn_jax import convert, model_file
from mracnn_jax.convert import ConversionError, layouts, state_dicts
from mracnn_jax.entropy.factorized import FactorizedPrior
from mracnn_jax.entropy.gaussian import gaussian_likelihood
from mracnn_jax.layers.gdn import GDN
from mracnn_jax.layers.upsampling import depth_to_space
from mracnn_jax.models import presets
from mracnn_jax.models.registry import build_model

TOL = 1e-4
_REF_PATH = pathlib.Path(__file__).parent / "reference" / "torch_wacnn.py"
_NO_TORCH = "PyTorch not installed: parity tests need requirements/torch-cpu.txt"
_NO_COMPRESSAI = (
    "compressai not installed: the CompressAI parity runs need `pip install --no-deps "
    "-r requirements/compressai.txt` (make test installs it)"
)


def import_compressai():
    """CompressAI's ``entropy_models``, ``gdn`` and ``ans`` (a namespace), or a skip.

    CompressAI's package root does not load here (torchvision); see
    ``tests/reference/compressai_loader.py`` for how its modules are imported without it.
    """
    loader = load_script(_REF_PATH.parent / "compressai_loader.py", "mracnn_compressai_loader")
    try:
        return loader.import_compressai()
    except ImportError:
        pytest.skip(_NO_COMPRESSAI)


def import_compressai_layers():
    """``(GDN, EntropyBottleneck, GaussianConditional)`` of the installed CompressAI, or a skip."""
    compressai = import_compressai()
    em = compressai.entropy_models
    return compressai.gdn.GDN, em.EntropyBottleneck, em.GaussianConditional


def small_wacnn():
    return presets.small(presets.wacnn(), 16)


def random_params(cfg, seed: int = 0) -> dict:
    """Random float32 parameters of ``cfg``'s shapes (no Flax init; only the shapes are traced)."""
    rng = np.random.default_rng(seed)
    shapes = state_dicts._param_shapes(cfg)
    flat = {p: rng.normal(0.0, 0.5, s).astype(np.float32) for p, s in sorted(shapes.items())}
    return model_file.unflatten_params(flat)


def assert_trees_equal(a, b):
    fa, fb = model_file.flatten_params(a), model_file.flatten_params(b)
    assert sorted(fa) == sorted(fb)
    for k in fa:
        assert fa[k].dtype == fb[k].dtype and fa[k].shape == fb[k].shape, k
        assert np.array_equal(fa[k], fb[k]), k


# -------------------------------------------------------------------------------------------------
# Without torch.


@pytest.mark.parametrize(
    "arch, variant",
    [
        ("wacnn", "small"),
        ("mracnn", "small"),
        ("mracnn", "block+third_elam+lam0"),
        ("wacnn", "gray"),
        ("mracnn", "gray"),
    ],
)
def test_roundtrip_export_and_back_is_identical(arch, variant):
    cfg = presets.small(getattr(presets, arch)(), 16)
    if variant == "gray":  # one channel in and out: read off g_a's first kernel for a WACNN
        cfg.channels = 1
    elif variant != "small":  # ELSABlock, the extra ELAM, a one-slot ghost head; 2 slices (faster)
        cfg.elsa.block, cfg.third_elam, cfg.elsa.lam = "block", True, 0.0
        cfg.entropy.num_slices = 2
    params = random_params(cfg)
    sd = convert.to_torch_state_dict(params, cfg)
    assert all(isinstance(v, np.ndarray) for v in sd.values())
    cfg2, back, report = convert.from_torch_state_dict(sd, arch, None if arch == "wacnn" else cfg)
    assert cfg2.to_dict() == cfg.to_dict() or arch == "wacnn"
    assert_trees_equal(params, back)
    sd2 = convert.to_torch_state_dict(back, cfg2)
    assert list(sd) == list(sd2)
    for k in sd:
        assert sd[k].dtype == sd2[k].dtype and np.array_equal(sd[k], sd2[k]), k
    # exported quantiles sit at the density's medians
    assert report.max_median_deviation < 1e-4


def test_wacnn_keys_follow_stf_and_config_is_read_off_shapes():
    cfg = small_wacnn()
    sd = convert.to_torch_state_dict(random_params(cfg), cfg)
    assert len(sd) == 585  # as the public WACNN's state dict (tests/test_torch_reference.py)
    assert sd["g_s.1.weight"].shape == (40, 16, 5, 5)  # ConvTranspose2d: (in, out, k, k)
    assert sd["g_a.0.weight"].shape == (16, 3, 5, 5)
    assert sd["h_mean_s.2.0.weight"].shape == (64, 16, 3, 3)
    assert sd["g_a.4.conv_b.0.attn.relative_position_bias_table"].shape == (225, 8)
    assert sd["g_a.4.conv_b.0.attn.relative_position_index"].dtype == np.int64
    assert sd["entropy_bottleneck.quantiles"].shape == (16, 1, 3)
    for key in (
        "lrp_transforms.9.8.bias",
        "cc_scale_transforms.0.0.weight",
        "g_a.1.beta_reparam.pedestal",
    ):
        assert key in sd
    inferred = convert.infer_wacnn_config(sd)
    for field in ("N", "M", "Z", "hyper_analysis_widths", "hyper_synthesis_widths", "wam"):
        assert inferred[field] == cfg[field], field
    assert inferred.entropy == cfg.entropy or inferred.entropy.to_dict() == {
        **cfg.entropy.to_dict(),
        "clab_dim": inferred.entropy.clab_dim,
    }


def test_mracnn_key_names():
    cfg = presets.small(presets.mracnn(), 16)
    sd = convert.to_torch_state_dict(random_params(cfg), cfg, buffers=False)
    for key in (
        "g_a.0.down.weight",
        "g_a.0.asym.conv_1xn.weight",
        "g_a.0.gdn.gamma",
        "g_a.0.skip.bias",
        "g_a.2.conv_a.2.conv.4.weight",
        "g_a.2.conv_b.0.attn.pre_proj.weight",
        "g_a.2.conv_b.0.attn.attn.0.weight",
        "g_a.2.conv_b.0.attn.attn.2.bias",
        "g_a.2.conv_b.0.attn.ghost_head",
        "g_a.2.conv_b.0.attn.post_proj.weight",
        "g_a.2.conv_b.4.bias",
        "g_s.1.up.weight",
        "g_s.1.igdn.beta",
        "g_s.5.weight",
        "atten_mean.0.in_conv.weight",
        "atten_scale.4.out_conv.bias",
        "atten_mean.3.non_local_block.attn.ghost_head",
        "atten_mean.1.conv_b.3.weight",
        "cc_mean_transforms.4.4.weight",
        "lrp_transforms.0.0.bias",
        "entropy_bottleneck._factor3",
    ):
        assert key in sd, key
    assert sd["g_s.1.up.weight"].shape == (40, 16, 3, 3)  # transposed: (in, out, k, k)
    assert sd["g_a.0.asym.conv_1xn.weight"].shape == (16, 16, 1, 3)


def test_subpel_permutation_matches_pixel_shuffle():
    """Our depth_to_space of the converted channels equals PixelShuffle of PyTorch's channels."""
    rng = np.random.default_rng(0)
    c, r = 5, 2
    t = rng.normal(size=(2, c * r * r, 3, 4)).astype(np.float32)  # NCHW conv output, torch order
    shuffled = t.reshape(2, c, r, r, 3, 4).transpose(0, 1, 4, 2, 5, 3).reshape(2, c, 3 * r, 4 * r)
    bias_t = rng.normal(size=(c * r * r,)).astype(np.float32)
    bias = layouts.leaf_from_torch("subpel_bias", bias_t, r)
    ours = depth_to_space(jnp.asarray(t.transpose(0, 2, 3, 1)[..., layouts.subpel_perm(c, r)]), r)
    np.testing.assert_array_equal(np.asarray(ours), shuffled.transpose(0, 2, 3, 1))
    np.testing.assert_array_equal(bias, bias_t[layouts.subpel_perm(c, r)])


def test_state_dict_wrappers_and_names():
    cfg = small_wacnn()
    params = random_params(cfg)
    sd = convert.to_torch_state_dict(params, cfg)
    wrapped = {"epoch": 3, "state_dict": {}}
    for k, v in sd.items():  # DataParallel prefix, CompressAI 1.2 entropy-bottleneck names
        k = k.replace("entropy_bottleneck._matrix", "entropy_bottleneck.matrices.")
        k = k.replace("entropy_bottleneck._bias", "entropy_bottleneck._biases.")
        wrapped["state_dict"]["module." + k] = v
    _, back, _ = convert.from_torch_state_dict(wrapped, "wacnn")
    assert_trees_equal(params, back)
    eb = convert.entropy_bottleneck_from_torch(wrapped["state_dict"], "module.entropy_bottleneck.")
    assert_trees_equal({"eb": eb}, {"eb": back["entropy_bottleneck"]})
    gdn = convert.gdn_from_torch(sd, "g_s.2.")
    assert_trees_equal({"g": gdn}, {"g": back["g_s"]["igdn_2"]})


def test_misfit_state_dicts_fail_naming_the_key():
    cfg = small_wacnn()
    sd = dict(convert.to_torch_state_dict(random_params(cfg), cfg))

    def error(d, arch="wacnn", config=cfg):
        with pytest.raises(ConversionError) as info:
            convert.from_torch_state_dict(d, arch, config)
        msg = str(info.value)
        assert "\n" not in msg
        return msg

    d = dict(sd)
    del d["g_a.4.conv_b.0.attn.qkv.weight"]
    assert "missing key 'g_a.4.conv_b.0.attn.qkv.weight'" in error(d)
    d = dict(sd, **{"g_a.9.weight": np.zeros(3, np.float32)})
    assert "unexpected key 'g_a.9.weight'" in error(d)
    d = dict(sd, **{"h_a.2.weight": np.zeros((3, 3, 3, 3), np.float32)})
    assert "key 'h_a.2.weight' has shape (3, 3, 3, 3)" in error(d)
    d = dict(sd, **{"g_a.1.beta_reparam.lower_bound.bound": np.asarray([0.5], np.float32)})
    assert "'g_a.1.beta_reparam.lower_bound.bound'" in error(d)
    # a WACNN checkpoint is not an MRACNN one: the first missing key in sorted order is named
    assert "missing key 'atten_mean.0.conv_a.0.conv.0.bias'" in error(
        sd, "mracnn", presets.small(presets.mracnn(), 16)
    )
    with pytest.raises(ConversionError, match="unknown arch 'stf'"):
        convert.from_torch_state_dict(sd, "stf")
    # a buffer-free state dict is fine (buffers are optional), the coding tables are ignored
    params_only = {
        k: v for k, v in sd.items() if not k.startswith(("gaussian", "entropy_bottleneck.q"))
    }
    params_only = {k: v for k, v in params_only.items() if "reparam" not in k and "index" not in k}
    convert.from_torch_state_dict(params_only, "wacnn", cfg)


def test_loading_without_torch_says_what_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ImportError, match="needs torch"):
        convert.load_torch_state_dict(tmp_path / "x.pth")


# -------------------------------------------------------------------------------------------------
# With torch.


@pytest.fixture(scope="module")
def torch():
    torch = pytest.importorskip("torch", reason=_NO_TORCH)
    previous = torch.get_num_threads()
    torch.set_num_threads(1)  # a loaded 2-core machine: one thread is faster (test_torch_reference)
    yield torch
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def ref(torch):
    return load_script(_REF_PATH, "mracnn_torch_wacnn_reference_convert")


@pytest.fixture(params=["compressai", "reference"])
def layers(request, ref):
    """(GDN, EntropyBottleneck, GaussianConditional) classes of CompressAI or of the reference."""
    if request.param == "compressai":
        pytest.importorskip("torch", reason=_NO_TORCH)
        TorchGDN, EntropyBottleneck, GaussianConditional = import_compressai_layers()
        return request.param, TorchGDN, EntropyBottleneck, lambda: GaussianConditional(None)
    return request.param, ref.GDN, ref.EntropyBottleneck, ref.GaussianConditional


def _sd(module) -> dict:
    return {k: v.detach().numpy() for k, v in module.state_dict().items()}


def _nhwc(t) -> np.ndarray:
    return t.detach().numpy().transpose(0, 2, 3, 1)


@pytest.mark.parametrize("inverse", [False, True], ids=["gdn", "igdn"])
def test_gdn_parity(torch, layers, inverse):
    _, TorchGDN, _, _ = layers
    c = 12
    g = torch.Generator().manual_seed(0)
    layer = TorchGDN(c, inverse=inverse)
    with torch.no_grad():
        beta = 0.5 + torch.rand(c, generator=g)
        gamma = 0.1 * torch.eye(c) + 0.05 * torch.rand(c, c, generator=g)
        gamma[0, 1] = 0.0  # at the bound
        layer.beta.copy_(layer.beta_reparam.init(beta))
        layer.gamma.copy_(layer.gamma_reparam.init(gamma))
    x = 3.0 * torch.randn(2, c, 9, 7, generator=g)
    with torch.no_grad():
        expected = layer(x)
    params = convert.gdn_from_torch(_sd(layer))
    ours = GDN(inverse=inverse).apply({"params": params}, jnp.asarray(_nhwc(x)))
    diff = float(np.max(np.abs(np.asarray(ours) - _nhwc(expected))))
    print(f"GDN inverse={inverse}: max abs diff {diff:.3g}")
    assert diff <= TOL


def _randomized_entropy_bottleneck(torch, cls, channels: int):
    torch.manual_seed(1)
    eb = cls(channels)
    with torch.no_grad():
        for name, p in eb.named_parameters():
            if "quantiles" in name:
                continue
            p.add_(0.3 * torch.randn_like(p))
    return eb


def test_entropy_bottleneck_likelihood_parity(torch, layers):
    impl, _, EntropyBottleneck, _ = layers
    c = 8
    eb = _randomized_entropy_bottleneck(torch, EntropyBottleneck, c)
    prior = FactorizedPrior(c)
    params = convert.entropy_bottleneck_from_torch(_sd(eb), "")
    ours_medians = np.asarray(prior.apply({"params": params}, method=FactorizedPrior.medians))
    with torch.no_grad():
        eb.quantiles[:, 0, 1] = torch.from_numpy(
            ours_medians.copy()
        )  # what the converted model uses
    g = torch.Generator().manual_seed(2)
    z = 6.0 * torch.randn(2, c, 5, 6, generator=g)
    with torch.no_grad():
        z_hat, expected = eb(z, training=False)  # rounded around the medians
    ours = prior.apply(
        {"params": params}, jnp.asarray(_nhwc(z_hat)), method=FactorizedPrior.likelihood
    )
    diff = float(np.max(np.abs(np.asarray(ours) - _nhwc(expected))))
    # the density itself on a grid of continuous values (no rounding)
    values = torch.linspace(-40, 40, 801).reshape(1, 1, -1).repeat(c, 1, 1)  # [C, 1, n]
    with torch.no_grad():
        lik = eb._likelihood(values)
        lik = (lik[0] if isinstance(lik, tuple) else lik).clamp_min(1e-9).numpy().reshape(c, -1)
    grid = jnp.asarray(values.numpy().reshape(c, -1).T)  # [n, C]: channels last
    ours_grid = np.asarray(prior.apply({"params": params}, grid, method=FactorizedPrior.likelihood))
    diff_grid = float(np.max(np.abs(ours_grid.T - lik)))
    print(f"EntropyBottleneck ({impl}): max abs diff {diff:.3g} (rounded), {diff_grid:.3g} (grid)")
    assert diff <= TOL and diff_grid <= TOL
    if impl == "compressai":  # CompressAI's own bisection of the quantiles agrees with ours
        eb._update_quantiles(rtol=1e-6, atol=1e-5)  # its default tolerance is 1e-3
        q = eb.quantiles.detach().numpy()
        assert np.max(np.abs(q[:, 0, 1] - ours_medians)) <= TOL
        exported = convert.density_quantiles(params)
        assert np.max(np.abs(q - exported) / np.maximum(1.0, np.abs(q))) <= TOL


def test_gaussian_conditional_likelihood_parity(torch, layers):
    impl, _, _, GaussianConditional = layers
    gc = GaussianConditional()
    g = torch.Generator().manual_seed(3)
    shape = (2, 16, 8, 8)
    y = 8.0 * torch.randn(shape, generator=g)
    means = 2.0 * torch.randn(shape, generator=g)
    scales = torch.exp(
        4.0 * torch.rand(shape, generator=g) - 3.0
    )  # 0.05 .. 2.7: both sides of 0.11
    with torch.no_grad():
        y_hat, expected = gc(y, scales, means, training=False)
    ours = gaussian_likelihood(
        jnp.asarray(_nhwc(y_hat)), jnp.asarray(_nhwc(means)), jnp.asarray(_nhwc(scales))
    )
    diff = float(np.max(np.abs(np.asarray(ours) - _nhwc(expected))))
    print(f"GaussianConditional ({impl}): max abs diff {diff:.3g}")
    assert diff <= TOL
    assert float(expected.min()) == pytest.approx(1e-9)  # the lower bound is exercised


def _torch_wacnn(torch, ref, cfg):
    torch.manual_seed(0)
    model = ref.WACNN(
        cfg.N,
        cfg.M,
        Z=cfg.Z,
        hyper_analysis_widths=tuple(cfg.hyper_analysis_widths),
        hyper_synthesis_widths=tuple(cfg.hyper_synthesis_widths),
        cc_widths=tuple(cfg.entropy.cc_widths),
        num_slices=cfg.entropy.num_slices,
        max_support_slices=cfg.entropy.max_support,
        num_heads=cfg.wam.heads,
    )
    with torch.no_grad():  # move every special parameter away from its initial value
        for name, p in model.named_parameters():
            if name.endswith("relative_position_bias_table"):
                p.normal_(0.0, 1.0)
            elif name.endswith(".beta"):
                p.copy_(torch.sqrt(0.5 + torch.rand_like(p)))
            elif name.endswith(".gamma"):
                p.add_(0.1 * torch.rand_like(p))
            elif name.startswith("entropy_bottleneck.") and "quantiles" not in name:
                p.add_(0.3 * torch.randn_like(p))
    return ref.spread_latents(model).eval()  # y and z several units, predicted scales about 2


def test_wacnn_parity_with_torch_reference(torch, ref):
    """Whole WACNN: reference weights -> state dict -> convert -> Flax, 256x256, eval mode."""
    cfg = small_wacnn()
    model = _torch_wacnn(torch, ref, cfg)
    sd = model.state_dict()
    cfg2, params, report = convert.from_torch_state_dict(sd, "wacnn")
    assert {**cfg2.to_dict(), "name": cfg.name} == {
        **cfg.to_dict(),
        "entropy": {**cfg.entropy.to_dict(), "clab_dim": 128},
    }
    flax_model = build_model(cfg2)
    medians = np.asarray(flax_model.apply({"params": params}, method=flax_model.z_offsets))
    with torch.no_grad():  # the converted model quantises z around the density's medians
        model.entropy_bottleneck.quantiles[:, 0, 1] = torch.from_numpy(medians.copy())
    x = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        expected = model(x)
    out = flax_model.apply(
        {"params": params}, jnp.asarray(_nhwc(x)), train=False
    )  # eager: no compile
    diffs = {
        "x_hat": np.max(np.abs(np.asarray(out["x_hat"]) - _nhwc(expected["x_hat"]))),
        "y": np.max(
            np.abs(np.asarray(out["likelihoods"]["y"]) - _nhwc(expected["likelihoods"]["y"]))
        ),
        "z": np.max(
            np.abs(np.asarray(out["likelihoods"]["z"]) - _nhwc(expected["likelihoods"]["z"]))
        ),
    }
    bpp_t = float(ref.rate_distortion_loss(expected, x, 0.01)["bpp"])
    bpp = float(out["bpp"])
    print(f"WACNN: max abs diffs {diffs}; bpp {bpp:.6f} vs {bpp_t:.6f}; {report.summary()}")
    assert float(np.std(_nhwc(expected["x_hat"]))) > 1e-3  # a non-trivial reconstruction
    assert all(d <= TOL for d in diffs.values()), diffs
    assert abs(bpp - bpp_t) <= 1e-4 * bpp_t


def test_codec_codes_the_symbols_of_the_pytorch_compressai_codec(torch, ref):
    """Our codec against the PyTorch WACNN codec with CompressAI's rANS coder (the speed reference
    of benchmarks/bench_codec.py, STF's compress/decompress in benchmarks/
    bench_torch_wacnn_codec.py), same weights, same 128x128 Kodak crop, z quantised around the
    same medians: both code the same y symbols (a symbol may differ where round(y - mu) sits on a
    rounding boundary and the frameworks' float32 sums differ), and each decodes its own stream
    to exactly the encoder's latents."""
    from mracnn_jax import codec, images
    from mracnn_jax.evaluation.inputs import SAMPLES_DIR

    compressai = import_compressai()
    bench = load_script(
        _REF_PATH.parents[2] / "benchmarks" / "bench_torch_wacnn_codec.py",
        "mracnn_bench_torch_wacnn_codec",
    )
    cfg = small_wacnn()
    net = _torch_wacnn(torch, ref, cfg)
    ours = codec.LoadedModel(*convert.from_torch_state_dict(net.state_dict(), "wacnn")[:2])
    theirs = bench.TorchWacnnCodec(net, compressai, ref)
    with torch.no_grad():  # CompressAI's own median search lands up to 4e-4 from ours here
        theirs.eb.quantiles[:, 0, 1] = torch.from_numpy(ours.offsets.copy())
    theirs.eb.update(force=True)

    rgb = images.read_image(SAMPLES_DIR / "kodim23.png")[0][200:328, 300:428]
    x = torch.from_numpy(rgb.transpose(2, 0, 1)[None].astype(np.float32) / 255.0)
    coded = theirs.compress(x)
    result = codec.compress_with_info(rgb, ours, estimate_bits=False)

    slices = np.split(result.y_symbols, cfg.entropy.num_slices, axis=-1)
    # torch's symbols: slice after slice, NCHW within a slice
    our_symbols = np.concatenate([sl.transpose(0, 3, 1, 2).reshape(-1) for sl in slices])
    their_symbols = np.asarray(coded.symbols)
    differ = our_symbols != their_symbols
    print(
        f"y symbols: {differ.sum()} of {differ.size} differ; nonzero {np.mean(our_symbols != 0):.2f}"
    )
    assert np.mean(our_symbols != 0) > 0.2  # latents worth coding
    assert differ.mean() <= 1e-3 and np.all(np.abs(our_symbols - their_symbols) <= 1)
    assert torch.equal(theirs.decompress(coded.strings).y_hat, coded.y_hat)
    assert np.array_equal(codec.decompress(result.data, ours), result.reconstruction)


def test_cli_convert_writes_a_model_file(torch, ref, tmp_path, capsys):
    from mracnn_jax import cli

    cfg = small_wacnn()
    model = _torch_wacnn(torch, ref, cfg)
    src = tmp_path / "wacnn.pth.tar"
    torch.save({"epoch": 1, "state_dict": model.state_dict()}, src)
    out = tmp_path / "wacnn.mracnn"
    assert cli.main(["convert", str(src), str(out), "--arch", "wacnn"]) == 0
    assert "wacnn" in capsys.readouterr().out
    cfg2, params, metadata = model_file.load_model(out)
    _, expected, _ = convert.from_torch_state_dict(model.state_dict(), "wacnn")
    assert_trees_equal(params, expected)
    assert cfg2.N == 16 and metadata["converted_from"] == "pytorch (wacnn)"
    # back to a PyTorch file: the reference loads it strictly, every parameter identical
    back = tmp_path / "back.pth"
    convert.save_torch_state_dict(convert.to_torch_state_dict(params, cfg2), back)
    fresh = _torch_wacnn(torch, ref, cfg)
    result = ref.load_stf_state_dict(fresh, torch.load(back, weights_only=True))
    assert not result.missing_keys and not result.unexpected_keys
    for name, p in model.named_parameters():
        if name != "entropy_bottleneck.quantiles":
            assert torch.equal(p, fresh.get_parameter(name)), name
    assert cli.main(["convert", str(tmp_path / "nope.pth"), str(out)]) == 1
    assert "no such checkpoint" in capsys.readouterr().err

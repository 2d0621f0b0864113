"""The PyTorch twin (mracnn_jax.torch_models) against the Flax model and the STF reference.

The same parameters give the same numbers: x_hat and both likelihoods of the evaluation forward
pass (everything rounded) agree with ``ImageCompressor.apply(..., train=False)`` to 1e-4, for
random mracnn_jax/configs/small.py, mracnn_jax/configs/mracnn.py and mracnn_jax/configs/wacnn.py models, for a bundled model on a
Kodak crop, and for the ablations' layer variants (weights going the other way, twin -> Flax).
Needs torch (requirements/torch-cpu.txt); skipped, with the reason, where it is absent.
"""

from __future__ import annotations

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

torch = pytest.importorskip(
    "torch",
    reason="PyTorch not installed: the twin needs requirements/torch-cpu.txt "
    "(or pip install 'mracnn-jax[torch]')",
)

from mracnn_jax import convert, model_file, zoo
from mracnn_jax import torch_models as tm
from mracnn_jax.config_files import load_config
from mracnn_jax.images import read_image
from mracnn_jax.models import build_model, init_params, presets
from mracnn_jax.summary import parameter_counts as flax_parameter_counts

TOLERANCE = 1e-4

# The twin's top-level modules and the Flax summary's groups (mracnn_jax.summary).
FLAX_GROUP = {
    "cc_mean_transforms": "cc_mean",
    "cc_scale_transforms": "cc_scale",
    "lrp_transforms": "lrp",
    "atten_mean": "clab_mean",
    "atten_scale": "clab_scale",
}


def _nchw(a) -> np.ndarray:
    return np.asarray(a).transpose(0, 3, 1, 2)


def _differences(model_config, params, x: np.ndarray, net=None) -> dict[str, float]:
    """Max |Flax - twin| of x_hat, y_hat and both likelihoods for NHWC images ``x``, and the
    largest |x_hat| (``scale``)."""
    out = build_model(model_config).apply({"params": params}, jnp.asarray(x), train=False)
    net = tm.from_flax(model_config, params) if net is None else net.eval()
    seen = {}
    hook = net.g_s.register_forward_pre_hook(lambda _, args: seen.update(y_hat=args[0]))
    with torch.no_grad():
        twin = net(torch.from_numpy(_nchw(x).copy()))
    hook.remove()
    pairs = {
        "x_hat": (out["x_hat"], twin["x_hat"]),
        "y_hat": (out["y_hat"], seen["y_hat"]),
        "y": (out["likelihoods"]["y"], twin["likelihoods"]["y"]),
        "z": (out["likelihoods"]["z"], twin["likelihoods"]["z"]),
    }
    diffs = {}
    for key, (flax_value, torch_value) in pairs.items():
        assert tuple(torch_value.shape) == _nchw(flax_value).shape, key
        diffs[key] = float(np.max(np.abs(_nchw(flax_value) - torch_value.numpy())))
    diffs["scale"] = float(np.max(np.abs(out["x_hat"])))
    return diffs


def _assert_equal(diffs: dict[str, float], x_hat_tolerance: float = TOLERANCE) -> None:
    # A y_hat differing by ~1 means one rounding decision went the other way (a value within
    # float32 noise of a half-integer), not a wrong layer.
    assert diffs["y_hat"] < 1e-3, f"a rounding decision differs: {diffs}"
    assert diffs["y"] <= TOLERANCE and diffs["z"] <= TOLERANCE, diffs
    assert diffs["x_hat"] <= x_hat_tolerance, diffs


@pytest.mark.parametrize(
    "name, size",
    [
        pytest.param("small", 128, id="small"),
        pytest.param("mracnn", 64, marks=pytest.mark.slow, id="mracnn"),
        pytest.param("wacnn", 64, marks=pytest.mark.slow, id="wacnn"),
    ],
)
def test_random_model_forward_equals_flax(name, size, repo_root, make_latents_informative):
    config = load_config(name)
    params = init_params(build_model(config.model), jax.random.PRNGKey(0))
    # latents spanning many quantisation steps, so that rounding is exercised
    params = make_latents_informative(params)
    x = np.random.default_rng(1).uniform(size=(1, size, size, 3)).astype(np.float32)
    net = tm.from_flax(config, params)  # the whole config: the twin takes its model block
    diffs = _differences(config.model, params, x, net)
    # These random decoders put out values up to ~70 (not [0, 1]): x_hat is held to 1e-4 of that
    # scale, float32 rounding through ~30 layers; the likelihoods to 1e-4 absolute.
    _assert_equal(diffs, TOLERANCE * max(1.0, diffs["scale"]))


def test_grayscale_model_forward_equals_flax(make_latents_informative):
    """A one-channel model (``channels = 1``): the twin reads and writes one channel too."""
    config = load_config("small")
    config.model.channels = 1
    params = make_latents_informative(init_params(build_model(config.model), jax.random.PRNGKey(0)))
    x = np.random.default_rng(2).uniform(size=(1, 64, 64, 1)).astype(np.float32)
    diffs = _differences(config.model, params, x)
    _assert_equal(diffs, TOLERANCE * max(1.0, diffs["scale"]))


def test_bundled_model_on_kodak_crop_equals_flax(repo_root):
    path = zoo.default().path
    config, params, _ = model_file.load_model(path)
    rgb, _ = read_image(repo_root / "mracnn_jax" / "assets" / "samples" / "kodim23.png")
    x = (rgb[None, 192:320, 320:448].astype(np.float32) / 255.0).copy()
    net, metadata = tm.load_model_file(path)
    assert not net.training and metadata == model_file.load_model(path)[2]
    diffs = _differences(config, params, x, net)
    _assert_equal(diffs)


def _variant(name: str):
    """A small config with the ablations' and ELSA's less common layers."""
    if name == "wacnn+clab":  # WAM, conv5 transforms and CLAB
        return presets.small(presets.wacnn_clab())
    cfg = presets.small()
    if name == "elsa-block+third-elam+add-ghost":
        cfg.elsa.block, cfg.third_elam = "block", True
        cfg.elsa.lam, cfg.elsa.qk_scale = 0.0, 0.5
    elif name == "mul-ghost-squared":
        cfg.elsa.lam, cfg.elsa.gamma, cfg.elsa.kernel = 2.0, 0.0, 5
    elif name == "no-ghost":
        cfg.elsa.lam, cfg.elsa.gamma = 0.0, 0.0
    return cfg


@pytest.mark.parametrize(
    "name", ["wacnn+clab", "elsa-block+third-elam+add-ghost", "mul-ghost-squared", "no-ghost"]
)
def test_twin_weights_run_in_flax(name, make_latents_informative):
    """Twin -> state dict -> ``convert.from_torch_state_dict`` -> Flax: the same numbers."""
    cfg = _variant(name)
    torch.manual_seed(0)
    net = tm.build_model(cfg)
    with torch.no_grad():  # a larger ghost head and hyper-latent, so that both paths matter
        for module in net.modules():
            if isinstance(module, tm.elsa.ELSA) and hasattr(module, "ghost_head"):
                module.ghost_head.normal_()
        net.h_a[-1].weight.mul_(20.0)
    flax_config, params, _ = convert.from_torch_state_dict(net.state_dict(), model_config=cfg)
    params = make_latents_informative(params)
    tm.load_flax_params(net, params)  # back, with the quantiles computed from the density
    x = np.random.default_rng(2).uniform(size=(2, 64, 64, 3)).astype(np.float32)
    diffs = _differences(flax_config, params, x, net)
    _assert_equal(diffs, TOLERANCE * max(1.0, diffs["scale"]))


@pytest.mark.parametrize(
    "preset",
    [
        presets.small,
        presets.mracnn,
        presets.wacnn,
        presets.wacnn_mracb,
        presets.wacnn_elam,
        presets.wacnn_clab,
    ],
)
def test_parameter_counts_equal_ours(preset):
    cfg = preset()
    ours = flax_parameter_counts(cfg)
    twin = tm.parameter_counts(tm.build_model(cfg))
    assert twin.pop("gaussian_conditional") == 0
    # CompressAI's quantiles [Z, 1, 3] are the one parameter the Flax prior does not keep
    twin["entropy_bottleneck"] -= 3 * cfg.Z
    assert {FLAX_GROUP.get(k, k): v for k, v in twin.items()} == ours


def test_paper_size_totals():
    """The totals architecture.md measured on the PyTorch code (quantiles included)."""
    assert sum(tm.parameter_counts(tm.build_model(presets.mracnn())).values()) == 55_346_739
    assert sum(tm.parameter_counts(tm.build_model(presets.wacnn())).values()) == 75_235_779


def test_wacnn_twin_equals_stf_reference():
    """The STF-layout reference (tests/reference/torch_wacnn.py, written independently from STF's
    code) and the WACNN twin compute the same thing from one state dict, strictly loaded both
    ways (coding tables of a trained checkpoint included)."""
    from reference import torch_wacnn

    cfg = presets.small(presets.wacnn())
    torch.manual_seed(0)
    reference = torch_wacnn.WACNN(
        cfg.N,
        cfg.M,
        Z=cfg.Z,
        hyper_analysis_widths=cfg.hyper_analysis_widths,
        hyper_synthesis_widths=cfg.hyper_synthesis_widths,
        cc_widths=cfg.entropy.cc_widths,
        num_slices=cfg.entropy.num_slices,
        max_support_slices=cfg.entropy.max_support,
    )
    state = reference.state_dict()
    state["entropy_bottleneck._quantized_cdf"] = torch.ones(cfg.Z, 7, dtype=torch.int32)
    net = tm.build_model(cfg)
    net.load_state_dict(state, strict=True)
    assert net.entropy_bottleneck._quantized_cdf.shape == (cfg.Z, 7)
    torch_wacnn.load_stf_state_dict(reference, net.state_dict())
    x = torch.rand(1, 3, 64, 64, generator=torch.Generator().manual_seed(3))
    reference.eval(), net.eval()
    with torch.no_grad():
        a, b = reference(x), net(x)
    assert torch.allclose(a["x_hat"], b["x_hat"], rtol=0, atol=1e-6)
    for key in ("y", "z"):
        assert torch.allclose(a["likelihoods"][key], b["likelihoods"][key], rtol=0, atol=1e-7)


def test_training_mode_and_aux_loss():
    torch.manual_seed(0)
    cfg = presets.small()
    net = tm.build_model(cfg).train()
    x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(4))
    out = net(x)
    for p in out["likelihoods"].values():
        assert torch.all(p >= 1e-9) and torch.all(p <= 1.0)
    bpp = sum(-torch.log2(p).sum() for p in out["likelihoods"].values()) / (2 * 64 * 64)
    (0.01 * 255**2 * torch.mean((out["x_hat"] - x) ** 2) + bpp).backward()
    # straight-through rounding: the rate-distortion gradient reaches g_a, but not the quantiles
    assert torch.isfinite(net.g_a[0].down.weight.grad).all()
    assert net.entropy_bottleneck.quantiles.grad is None
    fresh = net.aux_loss().item()
    net.zero_grad(set_to_none=True)
    net.aux_loss().backward()
    trained = [n for n, p in net.named_parameters() if p.grad is not None and p.grad.any()]
    assert trained == ["entropy_bottleneck.quantiles"]
    # Our weights carry the quantiles the auxiliary loss converges to.
    params = convert.from_torch_state_dict(net.state_dict(), model_config=cfg)[1]
    loaded = tm.load_flax_params(net, params).aux_loss().item()
    assert loaded < 1e-3 * fresh, (loaded, fresh)


def test_input_size_is_checked():
    net = tm.build_model(presets.small()).eval()
    with pytest.raises(ValueError, match="multiple of 64"):
        net(torch.zeros(1, 3, 64, 96))


def test_mracnn_jax_does_not_import_torch():
    code = (
        "import sys\n"
        "import mracnn_jax, mracnn_jax.models, mracnn_jax.convert\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
        "sys.modules['torch'] = None  # as if torch were not installed\n"
        "try:\n"
        "    import mracnn_jax.torch_models\n"
        "except ImportError as e:\n"
        "    assert 'mracnn-jax[torch]' in str(e), e\n"
        "else:\n"
        "    raise AssertionError('imported without torch')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], check=False, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr

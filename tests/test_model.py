"""Whole-model tests: parameter budget, training signal, any-size inference."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax.traverse_util import flatten_dict
from tiny_training import unmoved_parameters  # a sibling helper module

from mracnn_jax.config_files import load_config
from mracnn_jax.models import build_model, forward_any_size, init_params, presets
from mracnn_jax.summary import parameter_counts
from mracnn_jax.training import steps
from mracnn_jax.training.train_state import make_optimizer

# Measured from the PyTorch code (architecture.md §1.5 and §4.5); the JAX factorized prior keeps
# no quantiles, so entropy_bottleneck is 576 (= 192 x 3) below CompressAI's 11,712.
WACNN_COUNTS = {
    "g_a": 6_928_528,
    "g_s": 6_928_211,
    "h_a": 3_319_040,
    "h_mean_s": 5_882_624,
    "h_scale_s": 5_882_624,
    "cc_mean": 15_212_640,
    "cc_scale": 15_212_640,
    "lrp": 15_857_760,
    "entropy_bottleneck": 11_712 - 576,
}
MRACNN_COUNTS = {
    "g_a": 7_312_680,
    "g_s": 7_860_139,
    "h_a": 3_319_040,
    "h_mean_s": 5_882_624,
    "h_scale_s": 5_882_624,
    "clab_mean": 2_951_200,
    "clab_scale": 2_951_200,
    "cc_mean": 6_176_800,
    "cc_scale": 6_176_800,
    "lrp": 6_821_920,
    "entropy_bottleneck": 11_712 - 576,
}


@pytest.mark.parametrize(
    "preset, expected, total",
    [
        (presets.wacnn, WACNN_COUNTS, 75_235_779 - 576),
        (presets.mracnn, MRACNN_COUNTS, 55_346_739 - 576),
    ],
)
def test_parameter_counts_match_pytorch(preset, expected, total):
    counts = parameter_counts(preset())
    assert counts == expected
    assert sum(counts.values()) == total


def test_ablation_configs_build():
    for preset in (presets.wacnn_mracb, presets.wacnn_elam, presets.wacnn_clab):
        counts = parameter_counts(preset())
        assert counts["g_a"] > 0 and counts["entropy_bottleneck"] == 11_136
    # +MRACB changes only the transforms, +CLAB only the entropy model
    assert parameter_counts(presets.wacnn_mracb())["cc_mean"] == WACNN_COUNTS["cc_mean"]
    assert parameter_counts(presets.wacnn_clab())["g_a"] == WACNN_COUNTS["g_a"]


def test_bad_config_is_refused_clearly():
    cfg = presets.small()
    cfg.attention = "swin"
    with pytest.raises(ValueError, match="model.attention"):
        build_model(cfg)


def smooth_images(batch: int, size: int, seed: int = 0) -> np.ndarray:
    """Natural-looking test images: smooth colour ramps, a few discs and mild noise."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size] / size
    images = []
    for _ in range(batch):
        img = (
            np.stack([a * xx + b * yy + c for a, b, c in rng.uniform(-0.5, 0.5, (3, 3))], -1) + 0.5
        )
        for _ in range(3):
            cy, cx, r = rng.uniform(0, 1, 3) * [1, 1, 0.3]
            img[(yy - cy) ** 2 + (xx - cx) ** 2 < r**2] = rng.uniform(0, 1, 3)
        images.append(np.clip(img + rng.normal(0, 0.02, img.shape), 0, 1))
    return np.asarray(images, np.float32)


@pytest.fixture(scope="module")
def small_model():
    model = build_model(presets.small())
    return model, init_params(model, jax.random.PRNGKey(0))


def test_training_step_lowers_loss_and_reaches_every_parameter(shared_xla_cache):
    """The library's training step (``make_train_step``: rate-distortion loss, clipping, Adam) of
    the small preset with its own recipe, on smooth images: the loss falls, and every parameter
    moves (Adam leaves a parameter whose gradient was always zero where it was). The step is the
    one bench_train_step's smoke run compiles: whichever runs first, the other loads it."""
    config = load_config("small")
    model = build_model(config.model)
    mesh = steps.make_mesh()
    tx = make_optimizer(config.train)
    init_key, noise_key = steps.root_keys(0)
    state = steps.init_train_state(model, tx, init_key, mesh)
    start = jax.tree_util.tree_map(np.array, state.params)
    step = steps.jit_train_step(steps.make_train_step(model, tx, config.train), mesh)
    images = (smooth_images(config.train.batch_size, config.train.crop_size) * 255).astype(np.uint8)
    batch = steps.make_global_batch(images, mesh)
    losses = []
    for i in range(25):  # the loss goes from about 394 to 191 on these images
        state, metrics = step(state, batch, jax.random.fold_in(noise_key, i))
        losses.append(float(metrics["loss"]))
    assert np.all(np.isfinite(losses))
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:3]), losses
    never = unmoved_parameters(state.params, start)
    assert not never, f"parameters that never received a gradient: {never}"


@pytest.mark.parametrize("height, width", [(64, 64), (100, 37), (256, 192)])
def test_any_size_comes_back_at_its_own_size(small_model, height, width):
    model, params = small_model
    x = jnp.asarray(smooth_images(1, max(height, width))[:, :height, :width])
    out = forward_any_size(model, params, x)
    assert out["x_hat"].shape == (1, height, width, 3)
    assert np.isfinite(float(out["bpp"])) and float(out["bpp"]) > 0
    # inference is deterministic: y_hat is integer-shifted from its slice means, z_hat from the medians
    offsets = model.apply({"params": params}, method=model.z_offsets)
    z_int = np.asarray(out["z_hat"]) - np.asarray(offsets)
    np.testing.assert_allclose(z_int, np.round(z_int), atol=1e-4)


# -- grayscale (model.channels = 1) -------------------------------------------------------------

# The layers that touch the image: (path of the kernel, axis of its image channels).
IMAGE_LAYERS = {
    "mracb": {("g_a", "mracd_0", "down"): 2, ("g_a", "mracd_0", "skip"): 2, ("g_s", "deconv_5"): 3},
    "conv5": {("g_a", "conv_0"): 2, ("g_s", "deconv_8"): 3},
}


def gray(cfg):
    cfg.channels = 1
    return cfg


@pytest.mark.parametrize("base", [presets.mracnn, presets.wacnn])
def test_one_channel_model_differs_only_in_the_image_layers(base):
    from mracnn_jax.summary import parameter_shapes

    colour = flatten_dict(parameter_shapes(presets.small(base())))
    mono = flatten_dict(parameter_shapes(gray(presets.small(base()))))
    assert colour.keys() == mono.keys()
    layers = IMAGE_LAYERS[base().transform]
    changed = {k for k in colour if colour[k].shape != mono[k].shape}
    assert changed == {layer + (leaf,) for layer in layers for leaf in ("kernel",)} | {
        layer + ("bias",) for layer, axis in layers.items() if axis == 3
    }
    expected = 0
    for layer, axis in layers.items():
        kh, kw, c_in, c_out = colour[layer + ("kernel",)].shape
        assert (c_in if axis == 2 else c_out) == 3
        assert mono[layer + ("kernel",)].shape[axis] == 1
        if axis == 2:  # the image's channels feed this convolution: k*k*2*N fewer
            expected += kh * kw * 2 * c_out
        else:  # the convolution produces the image: k*k*N*2 weights and 2 biases fewer
            expected += kh * kw * c_in * 2 + 2
    total = lambda shapes: sum(int(np.prod(s.shape)) for s in shapes.values())
    assert total(colour) - total(mono) == expected


def test_one_channel_model_maps_gray_to_gray():
    model = build_model(gray(presets.small()))
    params = init_params(model, jax.random.PRNGKey(0))
    assert params["g_a"]["mracd_0"]["down"]["kernel"].shape[2] == 1
    x = jnp.asarray(smooth_images(1, 64)[..., :1])
    out = model.apply({"params": params}, x, train=False)
    assert out["x_hat"].shape == (1, 64, 64, 1)
    assert np.isfinite(float(out["bpp"])) and float(out["bpp"]) > 0
    with pytest.raises(ValueError, match="3 channels, the model 1"):
        model.apply({"params": params}, jnp.zeros((1, 64, 64, 3)), train=False)


def test_configs_without_channels_build_colour_models():
    """Model files written before ``channels`` existed hold configs without it: they mean RGB."""
    old = presets.small().to_dict()
    del old["channels"]
    assert build_model(old).cfg.channels == 3
    assert build_model(presets.small()).cfg.channels == 3
    for bad in (0, 2.0, "1", True):
        with pytest.raises(ValueError, match="model.channels"):
            build_model({**old, "channels": bad})

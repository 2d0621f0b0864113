"""Building the codec module from a config, initialising it, and running it on any image size."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from mracnn_jax.entropy.rate import bits_per_pixel
from mracnn_jax.layers.precision import as_dtype
from mracnn_jax.models.compressor import DOWNSAMPLING, ImageCompressor
from mracnn_jax.models.padding import crop, pad_to_multiple
from mracnn_jax.models.presets import with_defaults

_CHOICES = {
    "transform": ("mracb", "conv5"),
    "attention": ("elam", "wam"),
    "deconv_impl": ("subpixel", "dilated"),
}


def _frozen(cfg) -> ml_collections.FrozenConfigDict:
    """The config as the module holds it: frozen, with the fields older model files lack."""
    return ml_collections.FrozenConfigDict(with_defaults(cfg))


def validate_model_config(cfg) -> None:
    """Raises ValueError naming the first field that cannot build a model."""
    for field, allowed in _CHOICES.items():
        if cfg[field] not in allowed:
            raise ValueError(f"model.{field} = {cfg[field]!r}; expected one of {allowed}")
    channels = with_defaults(cfg).channels if "channels" not in cfg else cfg.channels
    if isinstance(channels, bool) or not isinstance(channels, int) or channels < 1:
        raise ValueError(
            f"model.channels = {channels!r}; expected a positive integer (3: RGB, 1: grayscale)"
        )
    if cfg.M % cfg.entropy.num_slices:
        raise ValueError(
            f"model.M = {cfg.M} is not divisible by model.entropy.num_slices = {cfg.entropy.num_slices}"
        )
    if cfg.entropy.support_attention not in ("clab", "none"):
        raise ValueError(f"model.entropy.support_attention = {cfg.entropy.support_attention!r}")
    if cfg.elsa.block not in ("bare", "block"):
        raise ValueError(f"model.elsa.block = {cfg.elsa.block!r}; expected 'bare' or 'block'")
    as_dtype(cfg.get("compute_dtype", "float32"))


def build_model(model_config, compute_dtype: str | None = None) -> ImageCompressor:
    """The Flax module for ``config.model`` (a ConfigDict, FrozenConfigDict or plain dict).

    Its ``cfg`` is the config with the fields older model files lack (``presets.with_defaults``),
    so ``build_model(c).cfg.channels`` is the image channel count of any config.
    ``compute_dtype``, where given, replaces the config's (the coder computes in float32 whatever
    precision a model was trained in).
    """
    cfg = with_defaults(model_config)
    if compute_dtype is not None:
        cfg.compute_dtype = compute_dtype
    cfg = _frozen(cfg)
    validate_model_config(cfg)
    return ImageCompressor(cfg)


def init_params(model: ImageCompressor, rng, image_size: int = DOWNSAMPLING):
    """Initial parameters (the ``'params'`` collection), from one ``image_size``² training pass.

    Runs eagerly on purpose: under ``jit`` XLA compiles one random-key derivation per parameter
    (Flax folds each module path into the key), which takes minutes on CPU, while eagerly the same
    small kernels are compiled once and reused. The initialisers sample on the host
    (``mracnn_jax.layers.init``).

    Parameters are float32 whatever the compute dtype, and their values depend only on ``rng``
    and the module paths, so a bfloat16 model is initialised by its float32 twin: eagerly in
    bfloat16, which the CPU emulates, the pass takes about a minute for the small preset.
    """
    if getattr(model, "compute_dtype", "float32") != "float32":  # (test doubles have none)
        model = build_model(model.cfg, compute_dtype="float32")
    x = jnp.zeros((1, image_size, image_size, model.cfg.channels), jnp.float32)
    p_rng, n_rng = jax.random.split(rng)
    return model.init({"params": p_rng, "noise": n_rng}, x, train=True)["params"]


def forward_any_size(model: ImageCompressor, params, x):
    """Inference forward pass on ``[B, H, W, C]`` images in [0, 1] of any size (C = ``channels``).

    The image is padded to a multiple of 64 (centred zeros), coded, and the reconstruction is
    cropped back; ``bpp`` counts bits per *original* pixel. Returns the model's output dict.
    """
    b, h, w, _ = x.shape
    out = model.apply({"params": params}, pad_to_multiple(x), train=False)
    out["x_hat"] = crop(out["x_hat"], h, w)
    out["bpp"] = bits_per_pixel(out["likelihoods"], b * h * w)
    return out

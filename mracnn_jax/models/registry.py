"""Building the codec module from a config, initialising it, and running it on any image size."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_collections

from mracnn_jax.entropy.rate import bits_per_pixel
from mracnn_jax.layers.init import fold_keys
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


def float32_model(model: ImageCompressor) -> ImageCompressor:
    """``model`` computing in float32: itself, or its twin of the same config with
    ``compute_dtype = 'float32'`` (the same parameters fit both). Test doubles without a
    ``compute_dtype`` are taken as float32."""
    if getattr(model, "compute_dtype", "float32") == "float32":
        return model
    return build_model(model.cfg, compute_dtype="float32")


def init_keys(rng) -> tuple[jax.Array, jax.Array]:
    """``(params key, noise key)`` of Flax's ``init`` as ``init_params`` calls it
    (``layers.init.fold_keys``: the same on every JAX version)."""
    return fold_keys(rng)


def init_params(model: ImageCompressor, rng, image_size: int = DOWNSAMPLING):
    """Initial parameters (the ``'params'`` collection), from one ``image_size``² training pass.

    The pass is traced, not run: under ``jax.eval_shape`` the image is abstract, while
    ``ensure_compile_time_eval`` computes everything that depends on ``rng`` alone (the key that
    Flax folds in for each module path, and the initialisers, which sample on the host,
    ``mracnn_jax.layers.init``) as concrete arrays. The values are those of an eager ``init``,
    bit for bit, without compiling the forward pass op by op (about 22 s for the small preset on
    CPU, against about 5 s; a jitted ``init`` compiles one key derivation per parameter, minutes).
    Under an outer trace (``rng`` a tracer, e.g. ``jax.eval_shape(lambda k: init_params(m, k))``)
    it is the plain traced ``init``.

    Parameters are float32 whatever the compute dtype, and their values depend only on ``rng``
    and the module paths, so a bfloat16 model is initialised by its float32 twin, and the same on
    every JAX version (keys are derived with ``fold_in`` only; Flax folds in the path the same way).
    """
    model = float32_model(model)
    image = jax.ShapeDtypeStruct((1, image_size, image_size, model.cfg.channels), jnp.float32)
    p_rng, n_rng = init_keys(rng)

    def init(x):
        return model.init({"params": p_rng, "noise": n_rng}, x, train=True)["params"]

    if isinstance(rng, jax.core.Tracer):
        return init(jnp.zeros(image.shape, image.dtype))
    concrete = {}

    def trace(x):
        with jax.ensure_compile_time_eval():
            concrete["params"] = init(x)

    jax.eval_shape(trace, image)
    if any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree.leaves(concrete["params"])):
        raise TypeError("a parameter initialiser of this model depends on the input image")
    return concrete["params"]


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

"""Images to ``.mrac`` bytes and back: the JAX networks plus a numba range coder.

    data = compress(image, model)          # image: uint8 [H, W, 3] / [H, W] array or PIL image
    image = decompress(data, model)        # uint8 [H, W, 3] (RGB) or [H, W] (grayscale)
    model = LoadedModel.load("model.mracnn")    or    LoadedModel.from_config(config, seed=0)

The rooms, one concern each:

* ``errors``: the exceptions, each with a one-line message;
* ``loaded_model``: a model's config, parameters, identity, jitted network pieces and coders;
* ``latents``: one latent <-> its range-coded strings (hyperprior, channel slices, LRP, the
  scale-index agreement, the integer digests);
* ``tiles``: g_a and g_s computed tile by tile with halos, for a latent coded as one;
* ``image_codec``: the one path image -> bytes -> image, with its results.

Below them: ``mracnn_jax.images`` reads images (its colour rules), ``mracnn_jax.coding`` holds the
range coder, its tables and the container (the ``.mrac`` bytes, docs/format.md).

Colour (the rules of ``mracnn_jax.images``): RGB is coded as is; grayscale (``L``, ``1``, 16-bit
``I;16`` reduced to 8 bits with a warning) is coded as RGB with equal channels and decoded back to
``L`` (ITU-R 601 luma of the reconstruction); palette images without transparency, CMYK and YCbCr
are coded and decoded as RGB. Images with an alpha channel, 32-bit integer or float images and
sides beyond 65535 pixels are refused (``ImageError``).

Importing the package is cheap: its names load their room (and JAX) on first use, so the CLI can
read ``codec.tiles``'s defaults and ``codec.errors`` without starting JAX.
"""

import importlib

_HOMES = {
    "errors": ("CodecError", "ContainerError", "ImageError", "LatentMismatchError",
               "ModelMismatchError"),
    "image_codec": ("AUTO", "CompressionResult", "DecompressionResult", "auto_tile",
                    "check_identity", "compress", "compress_with_info", "decompress",
                    "decompress_with_info", "tile_plan"),
    "loaded_model": ("LoadedModel", "NetworkPieces", "enable_compilation_cache", "pieces_for"),
    "tiles": ("AUTO_TILE_PIXELS", "DEFAULT_HALO", "DEFAULT_TILE"),
}  # fmt: skip
_HOME_OF = {name: room for room, names in _HOMES.items() for name in names}
__all__ = sorted(_HOME_OF)  # noqa: PLE0605 - the names of _HOMES, one home each


def __getattr__(name: str):
    room = _HOME_OF.get(name)
    if room is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{room}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))

"""The codec's exceptions: every failure of ``compress``/``decompress`` is one of these, with a
one-line message that says why (the CLI prints it as is).

``CodecError`` is a ``ValueError``; ``ImageError`` is also a ``mracnn_jax.images.ImageError``, and
``ContainerError`` (the file's bytes are not a valid ``.mrac``) comes from ``coding.container``.
"""

from __future__ import annotations

from mracnn_jax import images
from mracnn_jax.coding.container import ContainerError

__all__ = [
    "CodecError",
    "ContainerError",
    "ImageError",
    "LatentMismatchError",
    "ModelMismatchError",
]


class CodecError(ValueError):
    """Compression or decompression failed (the message, one line, says why)."""


class ImageError(CodecError, images.ImageError):
    """The input is not an image this codec accepts (also an ``images.ImageError``)."""


class ModelMismatchError(CodecError):
    """The bitstream was written by another model."""


class LatentMismatchError(CodecError):
    """The decoded latents differ from the encoder's (the guard), or a string does not decode."""

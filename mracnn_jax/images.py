"""Reading and listing images: one set of rules for the codec, training and evaluation.

    rgb, mode = read_image("photo.png")      # also a PIL image or a uint8 array
    rgb, mode = read_image("scan.png", high_depth=True)   # uint16 for 16-bit images
    paths = list_images(folder, recursive=True)
    out = restore_mode(rgb, mode)            # [H, W, 3] for 'RGB', [H, W] for 'L'

The rules:

* Result: ``(rgb, mode)``: ``rgb`` a C-contiguous uint8 ``[H, W, 3]`` array (at least one pixel
  per side), ``mode`` the colour mode to give the image back in, ``'RGB'`` or ``'L'``.
* RGB is taken as is. Grayscale (PIL ``L`` and ``1``, arrays ``[H, W]`` and ``[H, W, 1]``) becomes
  three equal channels with mode ``'L'``; ``restore_mode`` turns RGB back into ``L`` with
  Pillow's ITU-R 601 luma, which gives the same gray back for three equal channels.
* 16-bit grayscale (PIL ``I;16*``, and ``I`` with values in 0..65535; an ``I`` image with values
  only in 1..255, 8-bit data in a 32-bit file, gets a warning) becomes 8 bits by
  ``v8 = (v + 128) // 257``, with a warning. That is round-half-up of ``v / 257``; as
  ``v / 257`` is never exactly half-way between two integers, every rounding of it (NumPy's
  ``round(v / 257)`` included) gives the same byte. Mode ``'L'``. With ``high_depth=True`` (the
  codec) such images stay uint16, and uint16 arrays (``[H, W]``, ``[H, W, 3]``) are accepted.
  Pillow reads 16-bit colour PNGs as 8-bit RGB; ``read_image`` warns when a PNG file's header
  says 16 bits and Pillow gave 8.
* Palette images without transparency, CMYK, YCbCr, LAB and HSV become RGB (Pillow's
  conversion), mode ``'RGB'``.
* Orientation: an image whose EXIF Orientation tag (2..8) says it is stored flipped or rotated
  (phone and camera JPEGs) is turned the way viewers show it (``ImageOps.exif_transpose``), so
  that the codec gives back, and evaluation scores, the image a person sees. Colour profiles are
  not applied: the pixel values are taken as stored, with a warning for a file whose embedded
  profile is not sRGB (Display P3 phone photos, Adobe RGB), as the decoded image has none.
* Alpha is refused: ``RGBA``, ``LA``, ``PA``, ``RGBa``, ``La``, images with a transparent colour
  (a palette entry, or a PNG's colour key in ``RGB``, ``L`` or ``I;16``), and arrays with 2 or 4
  channels raise ``ImageError`` ("flatten it onto a background first"). Dropping the alpha
  channel silently would code, train on or score pixels nobody sees.
* Also refused with ``ImageError``: arrays that are not uint8, float and other modes, 32-bit
  integer images outside 0..65535, and files that are empty, directories or not images Pillow
  reads. A missing file raises ``FileNotFoundError``. Every message is one line.
* Listing: the files whose suffix, in any case, is one of ``SUFFIXES``, not hidden (a name that
  starts with ``.``), sorted by path; ``recursive=True`` walks subfolders too (following
  symbolic links), except hidden ones (``.ipynb_checkpoints``, ``.Trash-1000``: copies).
"""

from __future__ import annotations

import os
import struct
import warnings
import zlib
from pathlib import Path
from typing import Any

import numpy as np

__all__ = [
    "SUFFIXES",
    "ImageError",
    "is_image_name",
    "list_images",
    "read_image",
    "restore_mode",
    "to_rgb_array",
]

#: The image files ``list_images`` lists (compared in lower case).
SUFFIXES: tuple[str, ...] = (
    ".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".ppm", ".pgm"
)  # fmt: skip

SAMPLES_DIR = Path(__file__).resolve().parent / "assets" / "samples"  # the bundled sample images
_ALPHA_MODES = ("RGBA", "LA", "PA", "RGBa", "La")
_EXIF_ORIENTATION = 0x0112  # the EXIF tag; values 2..8 flip and/or rotate the stored pixels
_RGB_MODES = ("P", "CMYK", "YCbCr", "LAB", "HSV")


class ImageError(ValueError):
    """The input is not an image these rules accept (the message, one line, says why)."""


def _alpha_error(what: str) -> ImageError:
    return ImageError(
        f"image has an alpha channel ({what}); only opaque images are read: "
        "flatten it onto a background first"
    )


def to_rgb_array(image: Any, *, high_depth: bool = False) -> tuple[np.ndarray, str]:
    """``(uint8 [H, W, 3], mode)`` of a uint8 NumPy array or a PIL image (see the rules); with
    ``high_depth``, uint16 for 16-bit images and arrays."""
    if isinstance(image, np.ndarray):
        arr = image
        allowed = (np.uint8, np.uint16) if high_depth else (np.uint8,)
        if arr.dtype not in allowed:
            names = " or ".join(np.dtype(t).name for t in allowed)
            raise ImageError(f"image array must be {names}, got {arr.dtype}")
        if arr.ndim == 3 and arr.shape[2] == 1:
            arr = arr[:, :, 0]
        if arr.ndim == 2:
            mode, arr = "L", np.repeat(arr[:, :, None], 3, axis=2)
        elif arr.ndim == 3 and arr.shape[2] == 3:
            mode = "RGB"
        elif arr.ndim == 3 and arr.shape[2] in (2, 4):
            raise _alpha_error(f"{arr.shape[2]} channels")
        else:
            raise ImageError(f"image array must be [H, W, 3] or [H, W], got shape {arr.shape}")
    else:
        arr, mode = _pil_to_rgb(image, high_depth)
    if arr.shape[0] < 1 or arr.shape[1] < 1:
        raise ImageError(f"image has no pixels (size {arr.shape[0]}x{arr.shape[1]})")
    return np.ascontiguousarray(arr), mode


def _pil_to_rgb(img: Any, high_depth: bool = False) -> tuple[np.ndarray, str]:
    from PIL import Image

    if not isinstance(img, Image.Image):
        raise ImageError(f"expected a uint8 NumPy array or a PIL image, got {type(img).__name__}")
    if img.getexif().get(_EXIF_ORIENTATION, 1) in range(2, 9):
        from PIL import ImageOps

        img = ImageOps.exif_transpose(img)  # the pixels as viewers show them
    mode = img.mode
    if mode in _ALPHA_MODES or "transparency" in img.info:
        raise _alpha_error(
            f"mode {mode} with a transparent colour" if mode not in _ALPHA_MODES else f"mode {mode}"
        )
    if mode == "RGB":
        return np.asarray(img, np.uint8), "RGB"
    if mode in ("L", "1"):
        g = np.asarray(img.convert("L"), np.uint8)
        return np.repeat(g[:, :, None], 3, axis=2), "L"
    if mode.startswith("I;16") or mode == "I":
        a = np.asarray(img).astype(np.int64)
        if a.size and (a.min() < 0 or a.max() > 65535):
            raise ImageError(f"32-bit integer image (mode {mode}) with values outside 0..65535")
        if mode == "I" and a.size and 0 < a.max() <= 255:
            warnings.warn(
                "32-bit integer image whose values all lie in 0..255, read as 16-bit (nearly "
                "black); if it holds 8-bit values, save it as an 8-bit image",
                stacklevel=3,
            )
        if high_depth:
            g = a.astype(np.uint16)
        else:
            warnings.warn(f"16-bit image (mode {mode}) reduced to 8 bits", stacklevel=3)
            g = ((a + 128) // 257).astype(np.uint8)
        return np.repeat(g[:, :, None], 3, axis=2), "L"
    if mode in _RGB_MODES:
        return np.asarray(img.convert("RGB"), np.uint8), "RGB"
    raise ImageError(
        f"unsupported image mode {mode!r} (RGB, grayscale and palette images are read)"
    )


def _foreign_profile(img: Any) -> str:
    """The description of an embedded ICC profile that is not sRGB ('' for none or sRGB; a
    profile Pillow cannot parse is named as such)."""
    icc = img.info.get("icc_profile")
    if not icc:
        return ""
    try:
        import io

        from PIL import ImageCms

        name = ImageCms.getProfileDescription(ImageCms.ImageCmsProfile(io.BytesIO(icc))).strip()
    except (ImportError, OSError, ValueError, TypeError):
        return "an unreadable profile"
    return "" if "srgb" in name.lower() else name


def read_image(source: Any, *, high_depth: bool = False) -> tuple[np.ndarray, str]:
    """``(uint8 [H, W, 3], mode)`` of an image file (a path: PNG, JPEG, TIFF, BMP, WebP, anything
    Pillow opens), a PIL image or a uint8 array; ``high_depth`` as ``to_rgb_array``."""
    if not isinstance(source, (str, os.PathLike)):
        return to_rgb_array(source, high_depth=high_depth)
    from PIL import Image, UnidentifiedImageError

    path = os.fspath(source)
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such file: {path!r}")
    if os.path.isdir(path):
        raise ImageError(f"{path!r} is a directory, not an image")
    if os.path.getsize(path) == 0:
        raise ImageError(f"{path!r} is empty (0 bytes), not an image")
    try:
        with Image.open(path) as img:
            img.load()
            if img.format == "PNG" and img.mode == "RGB" and _png_bit_depth(path) == 16:
                warnings.warn(
                    "16-bit colour PNG read as 8 bits (Pillow reads no more)", stacklevel=2
                )
            profile = _foreign_profile(img)
            if profile:
                warnings.warn(
                    f"colour profile {profile!r} not applied: the pixel values are taken as "
                    "stored, and viewers show the decoded image (which has no profile) as sRGB",
                    stacklevel=2,
                )
            return to_rgb_array(img, high_depth=high_depth)
    except UnidentifiedImageError:
        raise ImageError(f"{path!r} is not an image Pillow can read") from None
    except ImageError:
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        raise ImageError(f"cannot read image {path!r}: {e}") from None


def _png_bit_depth(path: str) -> int | None:
    """The bit depth in a PNG file's IHDR (byte 24), ``None`` if unreadable."""
    with open(path, "rb") as f:
        head = f.read(25)
    return head[24] if len(head) == 25 and head[12:16] == b"IHDR" else None


def restore_mode(rgb: np.ndarray, mode: str) -> np.ndarray:
    """``rgb`` (uint8 or uint16 ``[H, W, 3]``; ``[H, W, 1]`` from a one-channel model) in colour
    mode ``mode``: as is for ``'RGB'``; for ``'L'``, the one channel, or the ITU-R 601 luma
    ``[H, W]`` of three in Pillow's integer form ``(19595 R + 38470 G + 7471 B + 2^15) >> 16``
    (equal channels give the same gray back)."""
    if mode == "RGB":
        return rgb
    if mode != "L":
        raise ValueError(f"colour mode must be 'RGB' or 'L', got {mode!r}")
    if rgb.shape[-1] == 1:
        return rgb[:, :, 0]
    r, g, b = (rgb[:, :, i].astype(np.int64) for i in range(3))
    return ((19595 * r + 38470 * g + 7471 * b + 0x8000) >> 16).astype(rgb.dtype)


def png16(rgb: np.ndarray) -> bytes:
    """A 16-bit RGB PNG file of ``rgb`` (uint16 ``[H, W, 3]``), which Pillow cannot write:
    IHDR (bit depth 16, colour type 2), one IDAT of the zlib-compressed rows (filter 0, samples
    big-endian), IEND."""
    if rgb.dtype != np.uint16 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"png16 writes uint16 [H, W, 3], got {rgb.dtype} {rgb.shape}")
    h, w = rgb.shape[:2]
    rows = np.zeros((h, 1 + 6 * w), np.uint8)  # a filter byte (0) before each row
    rows[:, 1:] = np.ascontiguousarray(rgb, ">u2").view(np.uint8).reshape(h, 6 * w)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    header = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(rows.tobytes(), 6)) + chunk(b"IEND", b""))  # fmt: skip


def is_image_name(name: str) -> bool:
    """True for a file name ``list_images`` lists: a suffix of ``SUFFIXES``, not hidden."""
    return name.lower().endswith(SUFFIXES) and not name.startswith(".")


def list_images(folder: str | os.PathLike, recursive: bool = False) -> list[Path]:
    """The image files in ``folder`` (with ``recursive``, in its subfolders too), sorted by path.

    Raises ``FileNotFoundError`` when ``folder`` is not a folder; an empty list is no error.
    """
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"image folder {folder!r} does not exist")
    paths: list[str] = []
    if recursive:
        for root, dirs, files in os.walk(folder, followlinks=True):
            dirs[:] = [d for d in dirs if not d.startswith(".")]  # .ipynb_checkpoints, .Trash-*
            paths.extend(os.path.join(root, name) for name in files if is_image_name(name))
    else:
        with os.scandir(folder) as entries:
            paths.extend(e.path for e in entries if is_image_name(e.name) and e.is_file())
    return [Path(p) for p in sorted(set(paths))]

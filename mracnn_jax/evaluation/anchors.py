"""Classic image codecs as rate–distortion anchors, through Pillow: JPEG, WebP, JPEG 2000, AVIF.

Each image is compressed to real bytes and decoded again; the rate is 8·len(bytes) / (H·W)
(`metrics.bpp_from_file_size`), the distortion PSNR and MS-SSIM on the 8-bit result at the
original size, over its channels (`metrics.image_metrics`).

An image is RGB `[H, W, 3]` or grayscale `[H, W]` (uint8). A grayscale image is coded as
grayscale where the codec can: JPEG and JPEG 2000 write one component, AVIF monochrome 4:0:0.
WebP has no grayscale mode: libwebp codes it as YUV 4:2:0 with flat chroma (a few bytes per
file). Decoded images are returned in the mode of the input.

The "quality" of a sweep point means, per codec:
  jpeg      libjpeg quality 1..95 (4:2:0 chroma, `subsampling=2`, optimised Huffman tables)
  webp      libwebp quality 0..100 (lossy, `method=4`)
  jpeg2000  the target rate in bpp: OpenJPEG `quality_mode="rates"`, compression ratio
            8·C / bpp for C 8-bit channels (24 / bpp for RGB); irreversible 9/7 wavelet with the colour transform (`mct=1`).
            Rates hit the target within about 1 %, which gives an evenly spread sweep.
  avif      libavif quality 0..100 (4:2:0, or 4:0:0 for grayscale; encoder speed 8; see
            `DEFAULT_OPTIONS`)
Which of these the installed Pillow can write is `codec_available(name)`.
"""

from __future__ import annotations

import io
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
from PIL import Image, features

from mracnn_jax import images, metrics

CODECS: tuple[str, ...] = ("jpeg", "webp", "jpeg2000", "avif")

# Pillow feature names and save formats.
_FEATURE = {"jpeg": "jpg", "webp": "webp", "jpeg2000": "jpg_2000", "avif": "avif"}
_FORMAT = {"jpeg": "JPEG", "webp": "WEBP", "jpeg2000": "JPEG2000", "avif": "AVIF"}

#: Save options besides the quality. AVIF runs at speed 8 rather than libavif's default 6 so
#: that the four anchors on the 24 Kodak images stay within about two minutes on two CPU cores;
#: speed 6 is ~2-4x slower to encode and slightly better (4 Kodak images at quality 60:
#: 1.040 bpp / 34.69 dB against 1.059 bpp / 34.40 dB at speed 8).
DEFAULT_OPTIONS: dict[str, dict[str, Any]] = {
    "jpeg": {"subsampling": 2, "optimize": True},
    "webp": {"method": 4},
    "jpeg2000": {"quality_mode": "rates", "irreversible": True, "mct": 1},
    "avif": {"subsampling": "4:2:0", "speed": 8},
}

#: Quality sweeps (ascending rate) that cover about 0.1–1.5 bpp on Kodak.
DEFAULT_QUALITIES: dict[str, tuple[float, ...]] = {
    "jpeg": (3, 6, 12, 23, 50, 78),
    "webp": (0, 8, 25, 45, 70, 84),  # quality 0 is WebP's floor, ~0.11 bpp
    "jpeg2000": (0.1, 0.17, 0.3, 0.5, 0.85, 1.5),
    "avif": (4, 15, 30, 45, 60, 78),
}

_LIBRARY = {
    "jpeg": ("JPEG", "libjpeg", "quality"),
    "webp": ("WebP", "libwebp", "quality"),
    "jpeg2000": ("JPEG 2000", "OpenJPEG", "target bpp"),
    "avif": ("AVIF", "libavif", "quality"),
}


class CodedImage(NamedTuple):
    """One image through one codec: the file bytes, the decoded uint8 image (the input's shape:
    `[H, W, 3]` or grayscale `[H, W]`), and the encode and decode wall times in seconds
    (Pillow's save / open+load only)."""

    data: bytes
    decoded: np.ndarray
    encode_s: float
    decode_s: float


def _check_codec(name: str) -> None:
    if name not in _FEATURE:
        raise ValueError(f"unknown codec {name!r}; choose from {', '.join(CODECS)}")


def codec_available(name: str) -> bool:
    """Whether this Pillow build can encode and decode `name` (one of `CODECS`)."""
    _check_codec(name)
    try:
        return bool(features.check(_FEATURE[name]))
    except (ValueError, ImportError):
        return False


def display_name(name: str) -> str:
    """How a codec of `CODECS` is written in text: "WebP", "JPEG 2000"."""
    _check_codec(name)
    return _LIBRARY[name][0]


def available_codecs() -> dict[str, bool]:
    """{codec: available} for all `CODECS` in this Pillow build."""
    return {c: codec_available(c) for c in CODECS}


def require_codec(name: str) -> None:
    """Raise RuntimeError naming what is missing if this Pillow cannot write `name`."""
    if not codec_available(name):
        missing = [c for c, ok in available_codecs().items() if not ok]
        raise RuntimeError(
            f"Pillow {Image.__version__} was built without {name} support (missing here: "
            f"{', '.join(missing)}). Install a Pillow wheel with that codec (the PyPI wheels "
            "include libjpeg, libwebp, OpenJPEG and, from Pillow 11.3, libavif)."
        )


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or not (
        image.ndim == 2 or (image.ndim == 3 and image.shape[-1] == 3)
    ):
        raise ValueError(
            "expected an RGB uint8 image [H, W, 3] or a grayscale one [H, W], got dtype "
            f"{image.dtype} shape {image.shape}"
        )
    return image


def _options(codec: str, channels: int, options: dict[str, Any]) -> dict[str, Any]:
    """`DEFAULT_OPTIONS[codec]` for an image of `channels`, updated with `options`."""
    _check_codec(codec)
    kw = dict(DEFAULT_OPTIONS[codec])
    if codec == "avif" and channels == 1:
        kw["subsampling"] = "4:0:0"  # monochrome AVIF
    kw.update(options)
    return kw


def save_options(codec: str, quality: float, channels: int = 3, **options: Any) -> dict[str, Any]:
    """The Pillow `save` keyword arguments for `codec` at `quality` on an image of `channels`
    (3, or 1 for grayscale; see the module docstring), `DEFAULT_OPTIONS` updated with
    `options`."""
    kw = _options(codec, channels, options)
    if codec == "jpeg2000":
        if not quality > 0:
            raise ValueError(
                f"jpeg2000 quality is a target rate in bpp and must be > 0, got {quality}"
            )
        kw["quality_layers"] = [8.0 * channels / float(quality)]
    else:
        kw["quality"] = round(quality)
    return kw


def encode_decode(image: np.ndarray, codec: str, quality: float, **options: Any) -> CodedImage:
    """Compress a uint8 image (RGB `[H, W, 3]` or grayscale `[H, W]`) with `codec` at
    `quality`, then decode it.

    Returns:
      CodedImage(data, decoded uint8 image of the input's shape, encode seconds, decode seconds).
    """
    image = _check_image(image)
    require_codec(codec)
    mode = "L" if image.ndim == 2 else "RGB"
    kw = save_options(codec, quality, 1 if mode == "L" else 3, **options)
    pil = Image.fromarray(image)
    buf = io.BytesIO()
    t0 = time.perf_counter()
    pil.save(buf, format=_FORMAT[codec], **kw)
    encode_s = time.perf_counter() - t0
    data = buf.getvalue()
    t0 = time.perf_counter()
    out = Image.open(io.BytesIO(data))
    out.load()
    decode_s = time.perf_counter() - t0
    if out.mode != mode:
        out = out.convert(mode)
    decoded = np.asarray(out)
    if decoded.shape != image.shape:
        raise RuntimeError(f"{codec} decoded to shape {decoded.shape}, expected {image.shape}")
    return CodedImage(data, decoded, encode_s, decode_s)


def load_rgb(path: str | Path) -> np.ndarray:
    """Read an image file as RGB uint8 `[H, W, 3]` by the codec's rules (`images.read_image`:
    grayscale as three equal channels; an image with alpha raises `images.ImageError`)."""
    return images.read_image(path)[0]


def load_image(path: str | Path) -> np.ndarray:
    """Read an image file in its own mode by the codec's rules: RGB uint8 `[H, W, 3]`, or
    `[H, W]` for a grayscale one (`images.read_image`, then `images.restore_mode`)."""
    return images.restore_mode(*images.read_image(path))


def load_image_dir(directory: str | Path) -> tuple[list[str], list[np.ndarray]]:
    """The images of `directory` (`images.list_images`), sorted by name: (names, uint8 arrays
    in their own modes, `load_image`)."""
    paths = images.list_images(directory)
    if not paths:
        raise FileNotFoundError(f"no images ({', '.join(images.SUFFIXES)}) in {directory}")
    return [p.name for p in paths], [load_image(p) for p in paths]


_MEAN_KEYS = ("bpp", "payload_bpp", "psnr", "ms_ssim", "encode_s", "decode_s")


def summarize(
    records: Iterable[dict[str, Any]], key: str = "quality", mean_keys: Sequence[str] = _MEAN_KEYS
) -> list[dict[str, Any]]:
    """Per-point means of per-image records grouped by `key`, in order of first appearance.

    Each mean holds `key`, `num_images`, the means over the images of those `mean_keys` the
    records have (default bpp, payload_bpp, psnr, ms_ssim, encode_s and decode_s), and
    `ms_ssim_db` = −10·log10(1 − mean ms_ssim) — the dB of the mean, as a plot drawn from the
    JSON's `ms-ssim-rgb` shows it (not the mean of per-image dB values, which the per-image
    records keep).
    """
    groups: dict[Any, list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault(r[key], []).append(r)
    means = []
    for q, rs in groups.items():
        m: dict[str, Any] = {key: q, "num_images": len(rs)}
        for k in mean_keys:
            if k in rs[0]:
                m[k] = float(np.mean([r[k] for r in rs]))
        m["ms_ssim_db"] = metrics.ms_ssim_db(m["ms_ssim"])
        means.append(m)
    return means


def run_codec(
    codec: str,
    images: Sequence[np.ndarray],
    qualities: Sequence[float] | None = None,
    names: Sequence[str] | None = None,
    **options: Any,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Run one codec over images and a quality sweep.

    Args:
      codec: one of `CODECS`.
      images: uint8 images, RGB `[H, W, 3]` or grayscale `[H, W]`; each must be at least
        `metrics.min_size_for_ms_ssim()` (161) pixels on each side for MS-SSIM.
      qualities: the sweep, default `DEFAULT_QUALITIES[codec]`.
      names: image names for the records, default "0", "1", ….
      options: extra Pillow save options, overriding `DEFAULT_OPTIONS[codec]`.

    Returns:
      (records, means). records: one dict per (image, quality), image-major, with codec, quality, image,
      height, width, num_bytes, bpp (= 8·num_bytes / (H·W)), payload_bpp (= bpp: a classic
      codec's file has no header/payload split here), psnr, ms_ssim, ms_ssim_db,
      encode_s, decode_s. means: `summarize(records)`, one dict per quality in sweep order.
    """
    require_codec(codec)
    qualities = tuple(DEFAULT_QUALITIES[codec] if qualities is None else qualities)
    names = [str(i) for i in range(len(images))] if names is None else list(names)
    if len(names) != len(images):
        raise ValueError(f"{len(names)} names for {len(images)} images")
    records = []
    for name, image in zip(names, images):
        records += image_records(codec, name, _check_image(image), qualities, **options)
    return records, summarize(records)


def image_records(
    codec: str,
    name: str,
    image: np.ndarray,
    qualities: Sequence[float],
    score: Callable[[np.ndarray, np.ndarray], dict] | None = None,
    label: str = "codec",
    **options: Any,
) -> list[dict[str, Any]]:
    """The records of `run_codec` for one image (`[H, W, 3]` or `[H, W]`), one per quality.

    `score(image, decoded_stack)` gives psnr / ms_ssim / ms_ssim_db arrays (default
    `metrics.image_metrics`); `label` names the field that holds the codec's name.
    """
    score = metrics.image_metrics if score is None else score
    h, w = image.shape[:2]
    coded = [encode_decode(image, codec, q, **options) for q in qualities]
    # One batched metric call per image: the original's filtered maps are computed once.
    m = score(image, np.stack([c.decoded for c in coded]))
    return [
        {
            label: codec,
            "quality": q,
            "image": name,
            "height": h,
            "width": w,
            "num_bytes": len(c.data),
            "bpp": metrics.bpp_from_file_size(len(c.data), h, w),
            "payload_bpp": metrics.bpp_from_file_size(len(c.data), h, w),  # no split: = bpp
            "psnr": float(m["psnr"][i]),
            "ms_ssim": float(m["ms_ssim"][i]),
            "ms_ssim_db": float(m["ms_ssim_db"][i]),
            "encode_s": c.encode_s,
            "decode_s": c.decode_s,
        }
        for i, (q, c) in enumerate(zip(qualities, coded))
    ]


def description(
    codec: str, qualities: Sequence[float] | None = None, channels: int = 3, **options: Any
) -> str:
    """A one-line description of the anchor and its settings on images of `channels` (3, or 1
    when they are grayscale), for the results JSON."""
    from PIL import __version__ as pil_version

    label, lib, sweep = _LIBRARY[codec]
    kw = _options(codec, channels, options)
    qualities = tuple(DEFAULT_QUALITIES[codec] if qualities is None else qualities)
    opts = ", ".join(f"{k}={v!r}" for k, v in kw.items())
    gray = ""
    if channels == 1:
        gray = (
            "; grayscale coded as YUV 4:2:0 with flat chroma (WebP has no grayscale mode)"
            if codec == "webp"
            else "; grayscale coded as one component"
        )
    return (
        f"{label} ({lib} via Pillow {pil_version}); {opts}{gray}; {sweep} sweep {list(qualities)}"
    )

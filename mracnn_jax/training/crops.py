"""One training or validation image: decode, pad, crop, flip, and gray for a one-channel model.

Each file is decoded by ``images.read_image`` (the codec's rules: grayscale, palette, CMYK and
16-bit images become 8-bit RGB; images with an alpha channel are refused, so skipped), randomly
cropped to ``crop_size``² and randomly flipped, with a NumPy generator seeded by ``(seed, p)``:
the crop of a position does not depend on the number of workers, the backend or a restart.
For a grayscale model (``channels=1``, the model config's ``channels``) each crop then becomes
its ITU-R 601 luma (``images.restore_mode(crop, 'L')``, the gray of Pillow's ``convert('L')``,
which the codec restores too), ``[c, c, 1]``: gray photos stay as they are, colour photos become
gray.

* Images smaller than the crop: ``small_images='pad'`` reflect-pads them up to the crop (the
  default: BSDS500's 321-pixel side is fine for 256 crops, but 64x64 thumbnails would otherwise be
  lost); ``'skip'`` skips them like undecodable files.
* Files that fail to decode are skipped, counted (``TrainIterator.skipped``) and warned about once
  each; the run never crashes on them. A stream that yields no decodable image at all raises.

Shapes: uint8 ``[H, W, 3]`` in, ``[c, c, C]`` out (C = ``channels``, 3 or 1).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mracnn_jax import images
from mracnn_jax.training.data_order import GRAIN
from mracnn_jax.training.defaults import SMALL_IMAGE_POLICIES

#: Image channels the pipeline delivers: 3 (RGB) or 1 (the luma of the crop).
CHANNELS: tuple[int, ...] = (3, 1)


def decode_rgb(path: str) -> np.ndarray:
    """Decodes an image file to uint8 RGB ``[H, W, 3]`` (``images.read_image``, grayscale as
    three equal channels). Raises on an unreadable or refused file."""
    return images.read_image(path)[0]


def pad_to_at_least(img: np.ndarray, size: int) -> np.ndarray:
    """Reflect-pads ``[H, W, 3]`` (centred) so that H and W are at least ``size``."""
    h, w = img.shape[:2]
    ph, pw = max(size - h, 0), max(size - w, 0)
    if ph == 0 and pw == 0:
        return img
    mode = "reflect" if min(h, w) > 1 else "edge"
    return np.pad(img, ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)), mode=mode)


def random_crop_flip(
    img: np.ndarray, size: int, rng: np.random.Generator, flip_lr: bool, flip_ud: bool
) -> np.ndarray:
    """A uniformly placed ``size``² crop, then optional flips (p = ½ each).

    Always draws four numbers from ``rng`` (top, left, lr, ud), so the crop position does not
    depend on which flips are enabled.
    """
    h, w = img.shape[:2]
    top = int(rng.integers(0, h - size + 1))
    left = int(rng.integers(0, w - size + 1))
    do_lr, do_ud = rng.random() < 0.5, rng.random() < 0.5
    out = img[top : top + size, left : left + size]
    if flip_lr and do_lr:
        out = out[:, ::-1]
    if flip_ud and do_ud:
        out = out[::-1]
    return np.ascontiguousarray(out)


def check_channels(channels: int) -> int:
    if channels not in CHANNELS:
        raise ValueError(f"channels must be one of {CHANNELS} (the model's), got {channels!r}")
    return int(channels)


def to_channels(img: np.ndarray, channels: int) -> np.ndarray:
    """uint8 ``[H, W, 3]`` → ``[H, W, channels]``: as is for 3, the ITU-R 601 luma
    (``images.restore_mode``, Pillow's ``convert('L')``) for 1."""
    if channels == 3:
        return img
    return np.ascontiguousarray(images.restore_mode(img, "L")[..., None])


def centre_crop(img: np.ndarray, size: int) -> np.ndarray:
    """The centred ``size``² crop (reflect-padded first when the image is smaller)."""
    img = pad_to_at_least(img, size)
    h, w = img.shape[:2]
    top, left = (h - size) // 2, (w - size) // 2
    return np.ascontiguousarray(img[top : top + size, left : left + size])


_Base = GRAIN.RandomMapTransform if GRAIN is not None else object


class DecodeCropFlip(_Base):
    """path → ``{'image': uint8 [c, c, C], 'valid': bool, 'reason': str, 'path': str}``.

    An undecodable (or, with ``small_images='skip'``, too small) file gives ``valid=False`` and a
    zero image; the main process drops and counts it, so the count is exact with worker processes.
    """

    def __init__(
        self,
        crop_size: int,
        flip_lr: bool,
        flip_ud: bool,
        small_images: str = "pad",
        channels: int = 3,
    ):
        if small_images not in SMALL_IMAGE_POLICIES:
            raise ValueError(
                f"small_images must be one of {SMALL_IMAGE_POLICIES}, got {small_images!r}"
            )
        self.crop_size = int(crop_size)
        self.flip_lr, self.flip_ud = bool(flip_lr), bool(flip_ud)
        self.small_images = small_images
        self.channels = check_channels(channels)

    def _invalid(self, path: str, reason: str) -> dict[str, Any]:
        c = self.crop_size
        return {
            "image": np.zeros((c, c, self.channels), np.uint8),
            "valid": False,
            "reason": reason,
            "path": path,
        }

    def random_map(self, path: str, rng: np.random.Generator) -> dict[str, Any]:
        try:
            img = decode_rgb(path)
        except Exception as e:  # noqa: BLE001 - any decoder failure means "skip this file"
            return self._invalid(path, f"decode error: {type(e).__name__}: {e}")
        if min(img.shape[:2]) < self.crop_size:
            if self.small_images == "skip":
                return self._invalid(path, f"smaller than the crop: {img.shape[1]}x{img.shape[0]}")
            img = pad_to_at_least(img, self.crop_size)
        crop = random_crop_flip(img, self.crop_size, rng, self.flip_lr, self.flip_ud)
        crop = to_channels(crop, self.channels)
        return {"image": crop, "valid": True, "reason": "", "path": path}

    # The 'python' backend calls the transform directly.
    __call__ = random_map

"""Images to ``.mrac`` bytes and back: the one path, for images of any size.

    compress:    image -> RGB (``images``) -> y = g_a in tiles (``tiles``) -> strings (``latents``)
                 -> ``.mrac`` bytes (``coding.container``)
    decompress:  bytes -> strings -> y^ (``latents``, digests checked) -> g_s in tiles -> image

An image computed as one tile (``tile=None``) and one computed in tiles make the same file up to
float noise in g_a (no seams: the latent is one), and any file decodes with any tile size. The
default, ``tile="auto"``, computes images of more than ``AUTO_TILE_PIXELS`` pixels in tiles of
``DEFAULT_TILE`` so that memory follows the tile size, and smaller ones in one tile.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from mracnn_jax import images, zoo
from mracnn_jax.codec import latent_refinement, latents, tiles
from mracnn_jax.codec.errors import CodecError, ImageError, ModelMismatchError
from mracnn_jax.codec.loaded_model import LoadedModel
from mracnn_jax.coding import container
from mracnn_jax.coding.container import Bitstream
from mracnn_jax.models.padding import padded_size, padding_amounts

PROGRESS_DELAY_S = 3.0  # the progress bar appears once the work has taken this long
AUTO = "auto"


@dataclasses.dataclass
class CompressionResult:
    """Everything ``compress_with_info`` knows (the tests compare it with the decoder).

    Latent arrays are the whole image's; ``reconstruction`` is ``None`` with
    ``reconstruct=False``, and every latent array is ``None`` with ``keep_latents=False``.
    """

    data: bytes
    reconstruction: np.ndarray | None  # what decompress will return (uint8)
    z_symbols: np.ndarray | None  # int32 [1, h/4, w/4, Z] (h, w: y's size)
    y_symbols: np.ndarray | None  # int32 [1, h, w, M]
    z_hat: np.ndarray | None  # float32, s_z + m
    y_tilde: np.ndarray | None  # float32 [1, h, w, M], s + mu (quantised y)
    y_hat: np.ndarray | None  # float32, after the LRP (what g_s sees)
    scale_indexes: np.ndarray | None  # int32 [1, h, w, M]
    bits: dict  # payload and ideal-code-length ("table") bits, per stream
    seconds: dict  # setup / network / entropy coding / total
    tiling: dict | None = None  # the tiles g_a ran in (``TilePlan.describe``), None for one
    refinement: latent_refinement.Refinement | None = None  # with ``refine_steps``: its losses


@dataclasses.dataclass
class DecompressionResult:
    image: np.ndarray
    bitstream: Bitstream
    z_symbols: np.ndarray | None
    y_symbols: np.ndarray | None
    z_hat: np.ndarray | None
    y_tilde: np.ndarray | None
    y_hat: np.ndarray | None
    scale_indexes: np.ndarray | None
    seconds: dict
    tiling: dict | None = None  # the tiles g_s ran in


_LATENT_FIELDS = ("z_symbols", "y_symbols", "z_hat", "y_tilde", "y_hat", "scale_indexes")


def auto_tile(height: int, width: int) -> int | None:
    """The tile size ``tile="auto"`` picks: ``DEFAULT_TILE`` above ``AUTO_TILE_PIXELS`` pixels,
    else ``None`` (one tile)."""
    return tiles.DEFAULT_TILE if height * width > tiles.AUTO_TILE_PIXELS else None


def tile_plan(
    height: int,
    width: int,
    tile: int | str | None = AUTO,
    halo=None,
    align: int = tiles.LATENT_STRIDE,
) -> tiles.TilePlan:
    """The ``TilePlan`` of an image (``tile``: pixels, ``None`` for one tile, ``"auto"``;
    ``halo``: (analysis, synthesis) pixels, ``DEFAULT_HALO`` when ``None``; ``align``: the
    model's ``tiles.alignment`` in pixels). Raises ``CodecError`` (one line) for a size or halo it
    cannot use."""
    if isinstance(tile, str):
        if tile != AUTO:
            raise CodecError(f"tile must be a number of pixels, None or {AUTO!r}, got {tile!r}")
        tile = auto_tile(height, width)
    if halo is None:
        halo = tiles.DEFAULT_HALO
    elif not isinstance(halo, (str, bytes)):
        try:
            halo = tuple(halo)
        except TypeError:
            pass  # check_tiling says what a halo must be
    (top, _), (left, _) = padding_amounts(height, width)
    try:
        return tiles.TilePlan(
            height, width, padded_size(height, width), (top, left), tile, halo, align
        )
    except ValueError as e:
        raise CodecError(str(e)) from None


def _coded_image(image: Any, model: LoadedModel, bits: int | None) -> tuple[np.ndarray, str, int]:
    """``(samples [H, W, C], mode, bits)``: ``images.to_rgb_array(image, high_depth=True)`` within
    the format's limits, with the model's C channels (a grayscale model codes ``L`` images only);
    ``bits`` defaults to the array's (8 for uint8, 16 for uint16). Raises ``ImageError``."""
    try:
        rgb, mode = images.to_rgb_array(image, high_depth=True)
    except images.ImageError as e:
        raise ImageError(str(e)) from None
    h, w = rgb.shape[:2]
    if not (1 <= h <= container.MAX_SIDE and 1 <= w <= container.MAX_SIDE):
        raise ImageError(f"image size {h}x{w} outside 1..{container.MAX_SIDE} pixels per side")
    if h * w > container.MAX_PIXELS:
        raise ImageError(
            f"image size {h}x{w} is above the format's {container.MAX_PIXELS} pixels: "
            "split it into images of at most that many"
        )
    native = 8 * rgb.itemsize
    bits = native if bits is None else int(bits)
    low = container.MIN_BITS if native == 16 else 8
    if not low <= bits <= native:
        raise ImageError(f"{bits} bits per sample for {rgb.dtype} samples (use {low}..{native})")
    if bits < native and int(rgb.max()) >= 1 << bits:
        raise ImageError(f"sample value {int(rgb.max())} does not fit in {bits} bits")
    if model.channels == 1:
        if mode != "L":
            raise ImageError(f"model {model.name} codes grayscale images; this one is {mode}")
        rgb = rgb[:, :, :1]
    return rgb, mode, bits


def _progress(total: int, desc: str, enabled: bool, unit: str = "tile"):
    """A tqdm bar on stderr that appears only for work taking more than a few seconds."""
    return tqdm(
        total=total, desc=desc, unit=unit, delay=PROGRESS_DELAY_S, disable=not enabled,
        leave=False, dynamic_ncols=True,
    )  # fmt: skip


def _bits(bs: Bitstream, data: bytes, lat: latents.Latents, plan: tiles.TilePlan) -> dict:
    """Sizes in bits; ``agreement`` is the part of the y payload that carries the scale-index
    agreement blocks (``coding.scale_agreement``), the rest of ``y_payload`` is range-coded."""
    return {
        "payload": 8 * bs.payload_bytes(),
        "agreement": 8 * lat.agreement_bytes,
        "header": 8 * bs.header_bytes(),
        "file": 8 * len(data),
        "z_payload": 8 * bs.z_bytes(),
        "y_payload": [8 * b for b in bs.y_bytes()],
        "tiles": plan.num_tiles,
    }


def compress_with_info(
    image: Any,
    model: LoadedModel,
    *,
    estimate_bits: bool = True,
    tile: int | str | None = AUTO,
    halo: tuple[int, int] | None = None,
    bits: int | None = None,
    reconstruct: bool = True,
    keep_latents: bool = True,
    progress: bool = False,
    refine_steps: int = 0,
    refine_learning_rate: float = latent_refinement.DEFAULT_LEARNING_RATE,
) -> CompressionResult:
    """Compresses ``image`` and returns the bytes with the encoder's view of the result.

    ``bits`` holds the payload and header sizes and, with ``estimate_bits``, the ideal code
    length of the symbols under the coding tables (``"table"``, ``"z_table"``, ``"y_table"``).
    ``tile``/``halo`` choose how g_a (and g_s for the reconstruction) are computed
    (``tile_plan``); the file does not depend on them beyond float noise. ``image`` may hold
    uint16 samples (``bits`` per sample, 16 unless given: 10 or 12 for such sensors' data); the
    model sees ``samples / (2^bits - 1)`` and the file records ``bits``. ``reconstruct=False``
    skips the encoder's prediction of the decoded image (``reconstruction`` is then ``None``);
    ``keep_latents=False`` drops the latent arrays; ``progress`` shows a bar over the tiles.
    ``refine_steps`` > 0 optimises g_a's latent for this image before coding it
    (``codec.latent_refinement``; raises ``RefinementError`` where it cannot run); the decoder
    needs nothing new.
    """
    t_start = time.perf_counter()
    if refine_steps:
        latent_refinement.model_lambda(model)  # a model without its lambda fails before any work
    rgb, mode, bits = _coded_image(image, model, bits)
    peak = (1 << bits) - 1
    h, w = rgb.shape[:2]
    plan = tile_plan(h, w, tile, halo, tiles.alignment(model.config))
    clock = latents.Clock()
    zc, yc = clock.setup(model.z_coder), clock.setup(model.y_coder)
    refinement = None
    with _progress(plan.num_tiles * (1 + reconstruct), "mracnn compress", progress) as bar:
        y = tiles.analyse(model, rgb, plan, clock, bar, peak)
        if refine_steps:
            refinement = _refine(model, rgb, peak, y, refine_steps, refine_learning_rate, progress)
            clock.seconds["refine"] = refinement.seconds
            y = refinement.y
        lat = latents.encode(model, y, zc, yc, clock)
        del y
        reconstruction = None
        if reconstruct:
            x_hat = tiles.synthesise(model, lat.y_hat, plan, clock, bar, peak)
            reconstruction = images.restore_mode(x_hat, mode)
    symbol_digest, index_digest = lat.digests()
    bs = Bitstream(
        height=h, width=w, colour_mode=mode, model_name=model.name,
        params_digest=model.identity, symbol_digest=symbol_digest, index_digest=index_digest,
        z_string=lat.z_string, y_strings=tuple(lat.y_strings), bits=bits,
    )  # fmt: skip
    data = container.pack(bs)
    bits = _bits(bs, data, lat, plan)
    if estimate_bits:
        bits.update(lat.table_bits(zc, yc))
    arrays = lat.arrays() if keep_latents else dict.fromkeys(_LATENT_FIELDS)
    clock.seconds["total"] = time.perf_counter() - t_start
    return CompressionResult(
        data=data, reconstruction=reconstruction, **arrays, bits=bits, seconds=clock.seconds,
        tiling=plan.describe() if plan.tile is not None else None, refinement=refinement,
    )  # fmt: skip


def _refine(model, samples, peak, y, steps, learning_rate, progress):
    """``latent_refinement.refine_latent`` with a bar over its steps."""
    with _progress(steps, "refining the latent", progress, unit="step") as bar:

        def tick(_, loss):
            bar.set_postfix(loss=f"{loss:.4f}", refresh=False)
            bar.update()

        return latent_refinement.refine_latent(model, samples, peak, y, steps, learning_rate, tick)


def compress(image: Any, model: LoadedModel, **kwargs) -> bytes:
    """``image`` (uint8 [H, W, 3] / [H, W] array or PIL image) -> ``.mrac`` bytes (``kwargs`` as
    ``compress_with_info``). Runs no synthesis unless asked: the bytes do not depend on it."""
    kwargs = {"reconstruct": False, "keep_latents": False, "estimate_bits": False, **kwargs}
    return compress_with_info(image, model, **kwargs).data


def check_identity(bs: Bitstream, model: LoadedModel) -> None:
    """Raises ``ModelMismatchError`` unless ``bs`` was written by ``model`` (``zoo.identity_error``,
    the check the CLI runs on a model file's header too)."""
    message = zoo.identity_error(bs, model.name, model.identity, "the loaded model")
    if message is not None:
        raise ModelMismatchError(message)


def decompress_with_info(
    data: bytes | Bitstream,
    model: LoadedModel,
    *,
    check_model: bool = True,
    tile: int | str | None = AUTO,
    halo: tuple[int, int] | None = None,
    keep_latents: bool = True,
    progress: bool = False,
) -> DecompressionResult:
    """Decodes ``data``; raises ``ContainerError``, ``ModelMismatchError`` or
    ``LatentMismatchError`` (all one-line) on failure. Every integer is checked against the
    file's digests before any pixel is synthesised.

    ``check_model=False`` skips the identity check (for testing the latent guard only);
    ``tile``/``halo`` choose how g_s is computed (``tile_plan``), ``keep_latents=False`` drops
    the latent arrays, ``progress`` shows a bar over the tiles.
    """
    t_start = time.perf_counter()
    bs = data if isinstance(data, Bitstream) else container.unpack(data)
    if check_model:
        check_identity(bs, model)
    if bs.num_slices != model.num_slices:
        raise ModelMismatchError(
            f"the file has {bs.num_slices} y slices, the model codes {model.num_slices}"
        )
    plan = tile_plan(bs.height, bs.width, tile, halo, tiles.alignment(model.config))
    clock = latents.Clock()
    zc, yc = clock.setup(model.z_coder), clock.setup(model.y_coder)
    lat = latents.decode(model, bs.z_string, bs.y_strings, plan.latent_shape, zc, yc, clock)
    latents.check_digests(bs, lat)
    with _progress(plan.num_tiles, "mracnn decompress", progress) as bar:
        image = tiles.synthesise(model, lat.y_hat, plan, clock, bar, bs.peak)
    image = images.restore_mode(image, bs.colour_mode)
    arrays = lat.arrays() if keep_latents else dict.fromkeys(_LATENT_FIELDS)
    clock.seconds["total"] = time.perf_counter() - t_start
    return DecompressionResult(
        image=np.ascontiguousarray(image), bitstream=bs, **arrays, seconds=clock.seconds,
        tiling=plan.describe() if plan.tile is not None else None,
    )  # fmt: skip


def decompress(data: bytes, model: LoadedModel, **kwargs) -> np.ndarray:
    """``.mrac`` bytes -> image ``[H, W, 3]`` (RGB) or ``[H, W]`` (grayscale), uint8, or uint16
    for files of more than 8 bits per sample; ``kwargs`` as ``decompress_with_info``."""
    return decompress_with_info(data, model, keep_latents=False, **kwargs).image

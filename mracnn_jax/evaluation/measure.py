"""Measuring: every image coded by one model through real files, or by one classic anchor over
its quality sweep, and scored; the per-point means.

For every model file and every image the image is compressed to a real ``.mrac`` file, the file
is read back and decompressed, and the record of that pair holds:

    bpp        8 · (file size in bytes) / (H · W), H x W the original size (not the padded one)
    payload_bpp  8 · (payload bytes: the z and y strings, ``container.Bitstream.payload_bytes``)
               / (H · W): CompressAI's count, without the file's header and CRC
    est_bpp    the ideal code length of the coded symbols under the coding tables (−log2 of
               each symbol's quantised probability, as the model's likelihoods predict it),
               over H · W; the file is longer by its header and the range coder's overhead
    psnr       PSNR in dB of the 8-bit decoded image at the original size, over its channels:
               PSNR-RGB, or the one channel of a grayscale image
    ms_ssim    MS-SSIM (8-bit, averaged over the channels) and ms_ssim_db = −10·log10(1 −
               MS-SSIM); NaN for images with a side under ``metrics.min_size_for_ms_ssim()``
               (161) pixels, where MS-SSIM's five scales do not fit
    encode_s   wall seconds of ``codec.compress_with_info`` (networks, range coding, container,
               and the few milliseconds of the ideal-code-length estimate), including the
               encoder's prediction of the decoded image (the synthesis, which the exactness
               check needs and ``mracnn compress`` skips), and the latent refinement where
               the run asks for it (``--refine N``: N gradient steps per image)
    decode_s   wall seconds of ``codec.decompress_with_info`` on the bytes read from the file

Compilation is kept out of encode_s and decode_s: the first image of every padded shape (the
network is compiled once per shape and architecture, shared by all models of one config) is
coded once beforehand, and that first call's time is reported apart (``first_calls``), with
the compile estimate first call − timed call of the same image. Building a model's coding
tables (and the range coder's first compilation) is timed apart as ``setup_s``.
"""

from __future__ import annotations

import dataclasses
import math
import os
import sys
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mracnn_jax import codec, metrics
from mracnn_jax.coding import container
from mracnn_jax.evaluation import anchors, journal, results
from mracnn_jax.evaluation.inputs import ModelSpec, slug  # noqa: F401 (measure.slug)
from mracnn_jax.models.padding import padded_size

#: Columns of the per-image CSV of a model curve, in order.
MODEL_COLUMNS = (
    "curve",
    "point",
    "model",
    "image",
    "height",
    "width",
    "num_bytes",
    "bpp",
    "payload_bpp",
    "est_bpp",
    "psnr",
    "ms_ssim",
    "ms_ssim_db",
    "encode_s",
    "decode_s",
    "bitstream",
)
#: Per-image keys averaged per point (``ms_ssim_db`` of a point is the dB of its mean MS-SSIM).
MEAN_KEYS = ("bpp", "payload_bpp", "est_bpp", "psnr", "ms_ssim", "encode_s", "decode_s")


# -------------------------------------------------------------------------------------------------
# Scoring.


def score(original: np.ndarray, decoded: np.ndarray) -> dict[str, Any]:
    """PSNR, MS-SSIM and MS-SSIM dB of ``decoded`` (uint8, the shape of ``original`` or a stack
    of them) against ``original`` (``[H, W, 3]``, or grayscale ``[H, W]``, scored on its one
    channel: ``metrics.with_channel_axis``); MS-SSIM is NaN for images under 161 pixels a side
    (see the module docstring)."""
    original, decoded = metrics.with_channel_axis(original, decoded)
    h, w = original.shape[:2]
    if min(h, w) >= metrics.min_size_for_ms_ssim():
        return metrics.image_metrics(original, decoded)
    p = np.asarray(metrics.psnr(original, decoded, 255.0), np.float64)
    m = np.full(p.shape, np.nan)
    if p.ndim == 0:
        return {"psnr": float(p), "ms_ssim": math.nan, "ms_ssim_db": math.nan}
    return {"psnr": p, "ms_ssim": m, "ms_ssim_db": m}


def summarize(records: Sequence[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """Means per point (``anchors.summarize`` over ``MEAN_KEYS``), sorted by mean bpp."""
    return sorted(anchors.summarize(records, key, MEAN_KEYS), key=lambda m: m["bpp"])


def curve_result(name: str, description: str, means: list[dict[str, Any]], **extra: Any) -> dict:
    """A CompressAI-layout result; MS-SSIM is left out when some image had none (NaN)."""
    if any(not math.isfinite(m["ms_ssim"]) for m in means):
        warnings.warn(
            f"{name}: some images are under 161 pixels a side, so the curve has no MS-SSIM",
            stacklevel=2,
        )
        means = [{k: v for k, v in m.items() if k != "ms_ssim"} for m in means]
    return results.make_result(name, description, means, **extra)


# -------------------------------------------------------------------------------------------------
# Running models and anchors.


class Progress:
    """A tqdm bar over every (model or anchor, image) pair, or nothing."""

    def __init__(self, total: int, enabled: bool):
        self.bar = None
        if enabled and total:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="img", dynamic_ncols=True, file=sys.stderr)

    def describe(self, text: str) -> None:
        if self.bar is not None:
            self.bar.set_description(text)

    def update(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@dataclasses.dataclass
class ModelRun:
    """What one model gave on the image set."""

    spec: ModelSpec
    records: list[dict[str, Any]]
    setup_s: float | None  # coding tables and coder start-up; None: never loaded
    first_calls: list[dict[str, Any]]  # one per padded shape compiled for this model
    resumed: int = 0  # records taken from an earlier run's journal


def evaluate_model(
    spec: ModelSpec,
    names: Sequence[str],
    images: Sequence[np.ndarray],
    bitstream_dir: Path,
    *,
    warmed: set,
    decoded_dir: Path | None = None,
    progress: Progress | None = None,
    done: journal.Journal | None = None,
) -> ModelRun:
    """Code every image with one model through real files (see the module docstring).

    ``warmed`` holds the (architecture, padded shape) pairs already compiled in this process
    and is updated, so that models of one architecture share the warm-up. Images whose record
    ``done`` holds (an earlier, interrupted run into the same folder) are not coded again; every
    new record is added to it as soon as it is measured.
    """
    model, setup_s = None, None  # loaded when the first image needs coding
    bitstream_dir.mkdir(parents=True, exist_ok=True)
    records, first_calls, resumed = [], [], 0
    for name, image in zip(names, images):
        path = bitstream_dir / f"{Path(name).stem}.mrac"
        pixels = journal.image_digest(image) if done is not None else None
        earlier = done.lookup(spec.journal_key, name, pixels) if done is not None else None
        if (
            earlier is not None
            and path.is_file()
            and os.path.getsize(path) == earlier.get("num_bytes")
            and (decoded_dir is None or (decoded_dir / _png(name)).is_file())
        ):
            earlier.update(
                curve=spec.curve, point=spec.point, model=spec.path.name, bitstream=str(path)
            )
            if "payload_bpp" not in earlier:  # journalled before the field existed
                earlier["payload_bpp"] = _payload_bpp(path.read_bytes())
            records.append(earlier)
            resumed += 1
            if progress is not None:
                progress.update()
            continue
        if model is None:
            model = codec.LoadedModel.load(spec.path)
            t0 = time.perf_counter()
            model.z_coder()
            model.y_coder()
            setup_s = time.perf_counter() - t0
        h, w = image.shape[:2]
        shape = padded_size(h, w)
        first = None
        if (id(model.pieces), shape) not in warmed:
            t0 = time.perf_counter()
            warm = codec.compress_with_info(image, model, refine_steps=min(spec.refine_steps, 1))
            t1 = time.perf_counter()
            codec.decompress_with_info(warm.data, model)
            first = (t1 - t0, time.perf_counter() - t1)
            warmed.add((id(model.pieces), shape))

        t0 = time.perf_counter()
        enc = codec.compress_with_info(image, model, refine_steps=spec.refine_steps)
        encode_s = time.perf_counter() - t0
        path.write_bytes(enc.data)
        data = path.read_bytes()
        t0 = time.perf_counter()
        dec = codec.decompress_with_info(data, model)
        decode_s = time.perf_counter() - t0
        if not np.array_equal(dec.image, enc.reconstruction):
            raise RuntimeError(
                f"{spec.path}: decoding {path} gave another image than the encoder's reconstruction"
            )
        if decoded_dir is not None:
            decoded_dir.mkdir(parents=True, exist_ok=True)
            Image.fromarray(dec.image).save(decoded_dir / _png(name))
        if first is not None:
            first_calls.append(
                {
                    "shape": f"{shape[1]}x{shape[0]}",  # padded width x height
                    "image": name,
                    "encode_first_s": first[0],
                    "decode_first_s": first[1],
                    "encode_compile_s": max(first[0] - encode_s, 0.0),
                    "decode_compile_s": max(first[1] - decode_s, 0.0),
                }
            )
        num_bytes = os.path.getsize(path)
        m = score(image, dec.image)
        records.append(
            {
                "curve": spec.curve,
                "point": spec.point,
                "model": spec.path.name,
                "image": name,
                "height": h,
                "width": w,
                "num_bytes": num_bytes,
                "bpp": metrics.bpp_from_file_size(num_bytes, h, w),
                "payload_bpp": _payload_bpp(data),
                "est_bpp": float(enc.bits["table"]) / (h * w),
                "psnr": float(m["psnr"]),
                "ms_ssim": float(m["ms_ssim"]),
                "ms_ssim_db": float(m["ms_ssim_db"]),
                "encode_s": encode_s,
                "decode_s": decode_s,
                "bitstream": str(path),
            }
        )
        if done is not None:
            done.add(spec.journal_key, name, pixels, records[-1])
        if progress is not None:
            progress.update()
    return ModelRun(spec, records, setup_s, first_calls, resumed)


def _payload_bpp(data: bytes) -> float:
    """8 · payload bytes (the z and y strings, no header or CRC) / original H·W of a .mrac file:
    the rate CompressAI reports."""
    bs = container.unpack(data)
    return 8 * bs.payload_bytes() / (bs.height * bs.width)


def _png(image_name: str) -> str:
    return f"{Path(image_name).stem}.png"


def evaluate_anchor(
    codec_name: str,
    names: Sequence[str],
    images: Sequence[np.ndarray],
    qualities: Sequence[float] | None = None,
    progress: Progress | None = None,
) -> list[dict[str, Any]]:
    """Per-image records of one Pillow anchor over its quality sweep (as
    ``anchors.run_codec``, with MS-SSIM NaN on images too small for it)."""
    qualities = tuple(anchors.DEFAULT_QUALITIES[codec_name] if qualities is None else qualities)
    records = []
    for name, image in zip(names, images):
        records += anchors.image_records(codec_name, name, image, qualities, score, label="curve")
        if progress is not None:
            progress.update()
    return records

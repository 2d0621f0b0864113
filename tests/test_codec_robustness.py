"""The codec against forged files and broken models: one-line errors, before any large work.

A small model (``presets.small()``, random initialisation, seed 0, with conftest's informative
latents) codes a 64x64 image; the files are then forged (sizes, empty strings, CRC recomputed),
and models with NaN parameters stand in for damaged model files. The coders' own guards are
tested without a model.
"""

from __future__ import annotations

import dataclasses
import struct
import time
import zlib

import jax
import numpy as np
import pytest

from mracnn_jax import codec
from mracnn_jax.codec import latents
from mracnn_jax.coding import coders, container, scale_agreement
from mracnn_jax.coding.range_coder import RangeCodingError
from mracnn_jax.models import presets


@pytest.fixture(scope="module")
def model(make_latents_informative):
    base = codec.LoadedModel.from_config(presets.small(), seed=0)
    return codec.LoadedModel(base.config, make_latents_informative(base.params), {"test": "rich"})


@pytest.fixture(scope="module")
def image():
    return np.random.default_rng(0).integers(0, 256, (64, 64, 3)).astype(np.uint8)


@pytest.fixture(scope="module")
def encoded(model, image):
    return codec.compress_with_info(image, model, tile=None, estimate_bits=False)


def _forged(data: bytes, height: int | None = None, width: int | None = None, **strings) -> bytes:
    """``data`` with another size and/or strings (``z_string``, ``y_strings``), CRC recomputed:
    what anyone can write, no encoder needed."""
    bs = container.unpack(data)
    out = bytearray(container.pack(dataclasses.replace(bs, **strings)))
    struct.pack_into("<II", out, 8, height or bs.height, width or bs.width)
    out[-4:] = struct.pack("<I", zlib.crc32(bytes(out[:-4])))
    return bytes(out)


def _nan_model(model, group: str) -> codec.LoadedModel:
    """``model`` with NaN in every parameter of ``group`` (a damaged model file)."""
    params = jax.tree_util.tree_map(np.array, model.params)
    params[group] = jax.tree_util.tree_map(lambda a: np.full_like(a, np.nan), params[group])
    return codec.LoadedModel(model.config, params, coding_tables=model.coding_tables())


def _one_line(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message and message
    return message


# -------------------------------------------------------------------------------------------------
# Forged files.


def test_a_size_bomb_is_refused_at_once(model, encoded):
    """About a hundred bytes announcing 65535² pixels and empty strings: a one-line error right
    after unpacking, not a latent of tens of GB."""
    bomb = _forged(encoded.data, 65535, 65535, z_string=b"", y_strings=(b"",) * model.num_slices)
    assert len(bomb) < 200
    t = time.perf_counter()
    with pytest.raises(codec.ContainerError, match="above the format's 1073741824 pixels") as e:
        codec.decompress(bomb, model)
    assert time.perf_counter() - t < 1.0
    _one_line(e)


@pytest.mark.parametrize("which", ["z", "y"])
def test_empty_strings_are_refused_before_any_network(model, encoded, which, monkeypatch):
    """At the largest size the format holds, an empty z or y string fails before h_s runs (which
    would hold the whole latent's means and scales)."""
    bs = container.unpack(encoded.data)
    if which == "z":
        strings = {"z_string": b""}
    else:
        strings = {"y_strings": (*bs.y_strings[:2], b"", *bs.y_strings[3:])}
    forged = _forged(encoded.data, 65535, 16384, **strings)

    def no_network(*args):
        raise AssertionError("a network ran on a forged file")

    monkeypatch.setattr(model, "hyper_synthesis", no_network)
    monkeypatch.setattr(model, "synthesis", no_network)
    t = time.perf_counter()
    with pytest.raises(codec.LatentMismatchError, match=f"{which} .*string is empty") as e:
        codec.decompress(forged, model)
    assert time.perf_counter() - t < 1.0
    if which == "y":
        assert "y slice 2" in _one_line(e)
    # The same strings at the file's own size: the same error.
    with pytest.raises(codec.LatentMismatchError, match="string is empty"):
        codec.decompress(_forged(encoded.data, **strings), model)


def test_encoder_refuses_what_the_decoder_would(model, image, monkeypatch):
    """The pixel limit holds for the encoder too (before any network runs)."""
    monkeypatch.setattr(container, "MAX_PIXELS", 64 * 63)
    with pytest.raises(codec.ImageError, match="64x64 is above the format's 4032 pixels") as e:
        codec.compress(image, model)
    _one_line(e)


# -------------------------------------------------------------------------------------------------
# Broken models: NaN latents.


def test_nan_latents_are_a_codec_error(model, image, encoded):
    """NaN cast to int32 is INT_MIN, which |s| < 2^24 in int32 let through: the symbols are
    checked before the cast, and the error is the codec's, in one line."""
    with pytest.raises(codec.CodecError, match="z symbols are not finite") as e:
        codec.compress(image, _nan_model(model, "g_a"), tile=None)
    assert "intact model file" in _one_line(e)
    # Finite z, NaN means and scales: the first y slice's symbols.
    broken = _nan_model(model, "h_mean_s")
    with pytest.raises(codec.CodecError, match="y slice 0 symbols are not finite") as e:
        codec.compress(image, broken, tile=None)
    _one_line(e)
    # The decoder's NaN scale indexes (a broken decoder model): LatentMismatchError, one line.
    with pytest.raises(codec.LatentMismatchError, match="not finite") as e:
        codec.decompress(encoded.data, _nan_model(model, "h_scale_s"), check_model=False)
    _one_line(e)


def test_latents_encode_checks_y_directly(model):
    y = np.zeros((1, 4, 4, model.config.M), np.float32)
    y[0, 1, 2, 3] = np.nan
    clock = latents.Clock()
    with pytest.raises(codec.CodecError, match="not finite"):
        latents.encode(model, y, model.z_coder(), model.y_coder(), clock)


# -------------------------------------------------------------------------------------------------
# The coders' guards (no model).


@pytest.mark.parametrize(
    "bad",
    [
        np.array([0, np.iinfo(np.int32).min], np.int32),  # |INT_MIN| is negative in int32
        np.array([1.0, np.nan], np.float32),
        np.array([-np.inf], np.float64),
        np.array([2**24], np.int64),
        np.array([-(2**24)], np.int32),
        np.array([2**63], np.uint64),
        np.array([3e9], np.float32),  # would wrap in int32
    ],
)
def test_check_symbols_refuses_what_int32_cannot_hold(bad):
    with pytest.raises(RangeCodingError, match="not finite|out of range") as e:
        coders.check_symbols(bad, "y")
    _one_line(e)


def test_check_symbols_keeps_what_it_can_hold():
    ok = np.array([[-(2**24) + 1, 0, 2**24 - 1]], np.float32)
    np.testing.assert_array_equal(coders.check_symbols(ok, "z"), ok.astype(np.int32))
    assert coders.check_symbols(np.zeros((0,), np.float32), "z").dtype == np.int32


@pytest.mark.parametrize("bad", [np.nan, np.inf, -1, 64, 2.5])
def test_scale_indexes_and_agreement_refuse_non_finite(bad):
    yc = coders.y_coder()
    idx = np.full((1, 2, 2, 3), 5.0)
    idx[0, 1, 1, 2] = bad
    with pytest.raises(RangeCodingError, match="integers in"):
        yc.decompress(b"\x00\x01", idx)  # a ValueError too, as callers expected before
    if not np.isfinite(bad):
        for side in (scale_agreement.encode, lambda f: scale_agreement.decode(f, b"\xff" * 8)):
            with pytest.raises(scale_agreement.AgreementError, match="not finite"):
                side(idx)

"""Images of more than 8 bits per sample: coded without reduction, decoded at their own depth.

A 16-bit grayscale PNG whose samples use all 16 bits (a Kodak crop scaled to 16 bits plus a
smooth gradient and fine noise) goes through ``mracnn compress`` / ``decompress`` and comes back
as a 16-bit PNG of the same size, not as 8-bit data shifted up. One small model (mracnn_jax/configs/small.py,
conftest's export, rescaled so y carries real symbols) does the coding.
"""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from mracnn_jax import cli, codec, images
from mracnn_jax.coding import container


@pytest.fixture(scope="module")
def gray16(request):
    try:
        kodak = request.getfixturevalue("kodak_dir")
        g = np.asarray(Image.open(kodak / "kodim23.png").convert("L"))[100:228, 200:392]
    except pytest.skip.Exception:
        g = (np.arange(128 * 192).reshape(128, 192) % 251).astype(np.uint8)
    yy, xx = np.mgrid[0 : g.shape[0], 0 : g.shape[1]]
    noise = np.random.default_rng(0).integers(0, 64, g.shape)
    v = g.astype(np.int64) * 250 + xx * 7 + yy * 3 + noise
    return np.clip(v, 0, 65535).astype(np.uint16)


def _is_shifted_8_bit(a: np.ndarray) -> bool:
    """True for 8-bit data put into 16 bits (v * 257 or v << 8)."""
    return bool(np.all(a % 257 == 0) or np.all(a % 256 == 0))


def test_16_bit_gray_png_round_trip(gray16, rich_model, rich_model_path, tmp_path, capsys):
    assert not _is_shifted_8_bit(gray16) and len(np.unique(gray16)) > 4096
    src, mrac, out = tmp_path / "g16.png", tmp_path / "g16.mrac", tmp_path / "back.png"
    Image.fromarray(gray16).save(src)
    assert Image.open(src).mode == "I;16"
    assert cli.main(["compress", str(src), str(mrac), "--model", str(rich_model_path)]) == 0
    assert "L 16-bit" in capsys.readouterr().out
    bs = container.unpack(mrac.read_bytes())
    assert (bs.bits, bs.peak, bs.colour_mode) == (16, 65535, "L") and mrac.read_bytes()[5] == 0x81
    assert cli.main(["decompress", str(mrac), str(out), "--model", str(rich_model_path)]) == 0
    back = Image.open(out)
    assert back.mode == "I;16" and back.size == (gray16.shape[1], gray16.shape[0])
    decoded = np.asarray(back).astype(np.uint16)
    np.testing.assert_array_equal(decoded, codec.decompress(mrac.read_bytes(), rich_model))
    assert not _is_shifted_8_bit(decoded) and len(np.unique(decoded)) > 256
    # PSNR at the 16-bit peak; the 8-bit coding of the same image, at its peak, is comparable.
    mse16 = np.mean((decoded.astype(np.float64) - gray16) ** 2)
    psnr16 = 10 * np.log10(65535.0**2 / mse16)
    g8 = ((gray16.astype(np.int64) + 128) // 257).astype(np.uint8)
    d8 = codec.decompress(codec.compress(g8, rich_model), rich_model)
    psnr8 = 10 * np.log10(255.0**2 / np.mean((d8.astype(np.float64) - g8) ** 2))
    assert abs(psnr16 - psnr8) < 1.0, (psnr16, psnr8)
    assert cli.main(["info", str(mrac)]) == 0
    assert '"bits_per_sample": 16' in capsys.readouterr().out


def test_10_and_12_bit_samples(gray16, rich_model):
    twelve = (gray16 >> 4).astype(np.uint16)
    r = codec.compress_with_info(twelve, rich_model, bits=12)
    bs = container.unpack(r.data)
    assert bs.bits == 12 and bs.peak == 4095
    decoded = codec.decompress(r.data, rich_model)
    assert decoded.dtype == np.uint16 and decoded.max() <= 4095
    np.testing.assert_array_equal(decoded, r.reconstruction)
    with pytest.raises(codec.ImageError, match="does not fit in 10 bits") as e:
        codec.compress(twelve, rich_model, bits=10)
    assert "\n" not in str(e.value)
    with pytest.raises(codec.ImageError, match="bits per sample"):
        codec.compress(twelve.astype(np.uint8), rich_model, bits=12)


def _read_png16(data: bytes) -> np.ndarray:
    """An independent reader of the 16-bit RGB PNGs ``images.png16`` writes (filter 0 only)."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, w = 8, b"", 0
    while pos < len(data):
        (n,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + n]
        assert struct.unpack(">I", data[pos + 8 + n : pos + 12 + n])[0] == zlib.crc32(kind + body)
        if kind == b"IHDR":
            w, h, depth, colour = struct.unpack(">IIBB", body[:10])
            assert (depth, colour) == (16, 2)
        elif kind == b"IDAT":
            idat += body
        pos += 12 + n
    rows = np.frombuffer(zlib.decompress(idat), np.uint8).reshape(h, 1 + 6 * w)
    assert not rows[:, 0].any()
    return rows[:, 1:].copy().view(">u2").reshape(h, w, 3).astype(np.uint16)


def test_16_bit_colour(gray16, rich_model, rich_model_path, tmp_path):
    rgb16 = np.stack([gray16, gray16[::-1], 65535 - gray16], axis=-1)
    r = codec.compress_with_info(rgb16, rich_model)
    assert container.unpack(r.data).bits == 16 and r.data[5] == 0x80
    decoded = codec.decompress(r.data, rich_model)
    assert decoded.dtype == np.uint16 and decoded.shape == rgb16.shape
    mrac, out = tmp_path / "c16.mrac", tmp_path / "c16.png"
    mrac.write_bytes(r.data)
    assert cli.main(["decompress", str(mrac), str(out), "--model", str(rich_model_path)]) == 0
    np.testing.assert_array_equal(_read_png16(out.read_bytes()), decoded)
    assert cli.main(["decompress", str(mrac), str(tmp_path / "c16.webp"), "--model",
                     str(rich_model_path)]) == 1  # fmt: skip


def test_8_bit_files_keep_their_layout(rich_model):
    """An 8-bit image's file has sample format 0 (RGB) or 1 (L) in byte 5, as before."""
    rgb = np.random.default_rng(3).integers(0, 256, (40, 50, 3)).astype(np.uint8)
    data = codec.compress(rgb, rich_model)
    assert data[5] == 0 and container.unpack(data).bits == 8
    assert codec.decompress(data, rich_model).dtype == np.uint8
    assert codec.compress(rgb[:, :, 0], rich_model)[5] == 1
    assert (
        images.restore_mode(np.stack([rgb[:, :, 0]] * 3, -1), "L").tolist() == rgb[:, :, 0].tolist()
    )

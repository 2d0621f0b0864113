"""The .mrac container (mracnn_jax/coding/container.py): layout, strict parsing. No model."""

from __future__ import annotations

import struct
import time
import zlib

import numpy as np
import pytest

from mracnn_jax.coding import container
from mracnn_jax.coding.container import Bitstream, ContainerError


def _bitstream(num_slices=5, name="mracnn", h=17, w=300, mode="RGB"):
    rng = np.random.default_rng(num_slices)
    return Bitstream(
        height=h,
        width=w,
        colour_mode=mode,
        model_name=name,
        params_digest=bytes(range(16)),
        symbol_digest=bytes(range(16, 32)),
        index_digest=bytes(range(32, 48)),
        z_string=rng.bytes(37),
        y_strings=tuple(rng.bytes(int(n)) for n in rng.integers(0, 300, num_slices)),
    )


def test_round_trip_and_layout():
    bs = _bitstream()
    data = container.pack(bs)
    assert container.unpack(data) == bs
    # Byte layout of docs/format.md.
    assert data[:4] == b"MRAC" and data[4] == 5 and data[5] == 0 and data[6] == 5 and data[7] == 6
    assert struct.unpack_from("<II", data, 8) == (17, 300)
    assert data[16:32] == bs.params_digest and data[32:48] == bs.symbol_digest
    assert data[48:64] == bs.index_digest
    assert struct.unpack_from("<I", data, 64)[0] == 37
    assert list(struct.unpack_from("<5I", data, 68)) == [len(s) for s in bs.y_strings]
    assert data[88:94] == b"mracnn"
    assert data[94 : 94 + 37] == bs.z_string
    assert struct.unpack("<I", data[-4:])[0] == zlib.crc32(data[:-4])
    # Header size: 72 fixed bytes + 4 per slice + the name.
    assert container.FIXED_OVERHEAD == 72
    assert bs.header_bytes() == 72 + 4 * 5 + 6 == len(data) - bs.payload_bytes()


@pytest.mark.parametrize("mode, slices, name", [("L", 1, "x"), ("RGB", 10, "wacnn+mracb-small")])
def test_variants(mode, slices, name):
    bs = _bitstream(slices, name, h=1, w=65535, mode=mode)
    assert container.unpack(container.pack(bs)) == bs


def test_describe():
    bs = _bitstream()
    info = container.describe(bs, len(container.pack(bs)))
    assert info["model"] == {"name": "mracnn", "params_digest": bytes(range(16)).hex()}
    assert info["bits"]["y"] == [8 * len(s) for s in bs.y_strings]
    assert info["file_bytes"] == info["header_bytes"] + info["payload_bytes"]
    assert info["bpp"] == pytest.approx(8 * info["file_bytes"] / (17 * 300))


def test_pack_validates():
    with pytest.raises(ValueError):
        container.pack(_bitstream(h=0))
    with pytest.raises(ValueError):
        container.pack(_bitstream(name="bad name"))
    with pytest.raises(ValueError):
        container.pack(_bitstream(mode="RGBA"))


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "empty"),
        (b"GIF89a....", "not an .mrac file"),
        (b"MRA", "not an .mrac file"),
        (b"MRAC", "truncated"),
        (b"MRAC\x05" + bytes(20), "truncated"),
    ],
)
def test_garbage(data, message):
    with pytest.raises(ContainerError, match=message):
        container.unpack(data)


def test_wrong_version():
    data = bytearray(container.pack(_bitstream()))
    data[4] = 6  # version 5 is read
    with pytest.raises(ContainerError, match="version 6"):
        container.unpack(bytes(data))


@pytest.mark.parametrize("version", [1, 2, 3, 4])
def test_legacy_versions_are_refused_with_the_reason(version):
    """Versions 1 and 2 (float latent digest, no scale-index agreement) decode only with the
    encoder's exact arithmetic, version 3 had an earlier agreement block, version 4 coded tiles
    independently: each is refused in one line that names the version and says why."""
    data = bytearray(container.pack(_bitstream()))
    data[4] = version
    data[-4:] = struct.pack("<I", zlib.crc32(bytes(data[:-4])))
    with pytest.raises(ContainerError, match=f"version {version} .*encode the image again") as e:
        container.unpack(bytes(data))
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("slices", [1, 5, 40])
def test_every_truncation_and_extension(slices):
    """Every prefix that keeps the magic is reported as truncated, in one line, also those that
    end inside the y lengths (72 <= n < 68 + 4 S) or the name, where no length can be read."""
    data = container.pack(_bitstream(slices))
    for n in range(len(data)):
        with pytest.raises(ContainerError) as e:
            container.unpack(data[:n])
        message = str(e.value)
        assert "\n" not in message
        expected = "truncated" if n >= 4 else "not an .mrac" if n else "empty"
        assert expected in message, (n, message)
    with pytest.raises(ContainerError, match="checksum"):
        container.unpack(data + b"\0")


def test_every_bit_flip_is_detected():
    data = container.pack(_bitstream(2))
    for i in range(len(data)):
        for bit in range(8):
            bad = bytearray(data)
            bad[i] ^= 1 << bit
            with pytest.raises(ContainerError) as e:
                container.unpack(bytes(bad))
            assert "\n" not in str(e.value)


def test_consistent_but_malformed():
    """A file whose checksum matches but whose fields are inconsistent (written wrongly)."""
    data = bytearray(container.pack(_bitstream()))
    struct.pack_into("<I", data, 64, 10**9)  # z length far beyond the file
    data[-4:] = struct.pack("<I", zlib.crc32(bytes(data[:-4])))
    with pytest.raises(ContainerError, match="announces"):
        container.unpack(bytes(data))
    data = bytearray(container.pack(_bitstream()))
    data[5] = 7  # colour mode
    data[-4:] = struct.pack("<I", zlib.crc32(bytes(data[:-4])))
    with pytest.raises(ContainerError, match="colour mode"):
        container.unpack(bytes(data))


def test_random_mutations_fast():
    """Random flips, truncations, insertions: always ContainerError, never slow."""
    rng = np.random.default_rng(0)
    data = container.pack(_bitstream())
    for _ in range(500):
        bad = bytearray(data)
        kind = rng.integers(3)
        if kind == 0:
            for _ in range(rng.integers(1, 5)):
                bad[rng.integers(len(bad))] ^= 1 << int(rng.integers(8))
        elif kind == 1:
            del bad[rng.integers(len(bad)) :]
        else:
            pos = rng.integers(len(bad) + 1)
            bad[pos:pos] = rng.bytes(int(rng.integers(1, 9)))
        t = time.perf_counter()
        with pytest.raises(ContainerError):
            container.unpack(bytes(bad))
        assert time.perf_counter() - t < 0.1


def _with_size(data: bytes, height: int, width: int) -> bytes:
    """``data`` announcing another image size, with its CRC recomputed (a forged file)."""
    bad = bytearray(data)
    struct.pack_into("<II", bad, 8, height, width)
    bad[-4:] = struct.pack("<I", zlib.crc32(bytes(bad[:-4])))
    return bytes(bad)


def test_pixel_limit_on_both_sides():
    """Neither side handles more than MAX_PIXELS pixels: a few bytes cannot announce 65535²
    (whose latent would take tens of GB), and every size the writer accepts is read."""
    assert container.MAX_PIXELS == 2**30 < container.MAX_SIDE**2
    at_limit = _bitstream(h=32768, w=32768)
    assert container.unpack(container.pack(at_limit)) == at_limit
    assert container.unpack(container.pack(_bitstream(h=65535, w=16384))).width == 16384
    with pytest.raises(ValueError, match="above 1073741824 pixels"):
        container.pack(_bitstream(h=32768, w=32769))
    bomb = _with_size(container.pack(_bitstream(1)), 65535, 65535)
    t = time.perf_counter()
    with pytest.raises(ContainerError, match=r"65535x65535 is above the format's 1073741824") as e:
        container.unpack(bomb)
    assert time.perf_counter() - t < 0.1 and "\n" not in str(e.value)
    with pytest.raises(ContainerError, match="above"):
        container.unpack(_with_size(container.pack(at_limit), 32769, 32768))

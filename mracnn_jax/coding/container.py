"""The ``.mrac`` bitstream container: header, range-coded strings, checksum (docs/format.md).

Layout (all integers little-endian; S = number of y slices, N = length of the model name)::

    offset     size  field
    0          4     magic b"MRAC"
    4          1     format version (5)
    5          1     sample format: colour mode in bits 0-3 (0 = RGB, 1 = L, grayscale), bits
                    per sample minus 8 in bits 4-7 (0 for 8-bit images, 8 for 16-bit)
    6          1     S, number of y slices (1..255)
    7          1     N, length of the architecture name (1..255)
    8          4     image height (1..65535)
    12         4     image width (1..65535); height x width at most MAX_PIXELS (2^30)
    16         16    params digest: first 16 bytes of the model's SHA-256 parameter digest
    32         16    symbol digest: SHA-256[:16] of the integer symbols of z^ and y^
    48         16    index digest: SHA-256[:16] of the y scale indexes (int32)
    64         4     length of the z string
    68         4 S   lengths of the y strings, slice 0 first
    68 + 4 S   N     architecture name (ASCII)
    ...              z string, then the y strings in slice order
    end - 4    4     CRC-32 of every byte before it

The fixed part (everything but the name, the y lengths and the strings) is 72 bytes
(``FIXED_OVERHEAD``): 68 bytes of header plus the 4-byte CRC.

Each y string starts with the slice's scale-index agreement block
(``mracnn_jax.coding.scale_agreement``) followed by the range-coded symbols; the container does
not look inside. Earlier versions are refused with a one-line ``ContainerError`` that names the
version and says why: versions 1 and 2 (untiled and tiled) had a float latent digest and no
agreement blocks, so they decode only where the encoder's arithmetic is reproduced exactly;
version 4 coded the tiles of a large image independently, each with its own latent, which left
seams. A large image is now computed in tiles and coded as one latent, in this one layout
(``mracnn_jax.codec.tiles``).

Parsing is strict and linear in the input size: every length is checked against the bytes that
are there before anything is sliced, and every failure raises ``ContainerError`` with a one-line
message. An image of more than ``MAX_PIXELS`` pixels is refused on both sides (``pack``, the codec's
encoder, ``unpack``), so that a few bytes cannot announce an image whose decoding (its latent and
entropy parameters, tens of bytes a pixel) exhausts memory.
"""

from __future__ import annotations

import dataclasses
import hashlib
import struct
import zlib
from collections.abc import Sequence

MAGIC = b"MRAC"
VERSION = 5
#: Versions this format replaced, and why each is refused (one line each).
REFUSED_VERSIONS = {
    1: "had a float latent digest and decodes only with the encoder's exact floating-point "
    "arithmetic",
    2: "had a float latent digest and decodes only with the encoder's exact floating-point "
    "arithmetic",
    3: "used an earlier, larger scale-index agreement block",
    4: "coded the tiles of a large image independently (with seams); images are now coded as "
    "one latent",
}
DIGEST_BYTES = 16
MAX_SIDE = 65535
#: Pixels (height x width) of the largest image the format holds, 32768²: more than Pillow opens by
#: default, more than 12 GB to code at docs/history.md's 12 bytes a pixel of tiled coding, and a
#: quarter of MAX_SIDE² (a file cannot announce 65535² pixels).
MAX_PIXELS = 2**30
COLOUR_MODES = ("RGB", "L")
MIN_BITS, MAX_BITS = 8, 16  # bits per sample

_FIXED = struct.Struct("<4sBBBBII16s16s16sI")  # magic .. z length: 68 bytes
_CRC = struct.Struct("<I")
HEADER_FIXED_BYTES = _FIXED.size  # 68
FIXED_OVERHEAD = _FIXED.size + _CRC.size  # 72


class ContainerError(ValueError):
    """The bytes are not a valid ``.mrac`` bitstream; the message (one line) says why."""


@dataclasses.dataclass(frozen=True)
class Bitstream:
    """The parsed contents of a ``.mrac`` file."""

    height: int
    width: int
    colour_mode: str  # "RGB" or "L"
    model_name: str
    params_digest: bytes  # 16 bytes
    symbol_digest: bytes  # 16 bytes
    index_digest: bytes  # 16 bytes
    z_string: bytes
    y_strings: tuple[bytes, ...]
    bits: int = 8  # per sample: the image's samples are 0 .. 2^bits - 1

    version = VERSION

    @property
    def peak(self) -> int:
        return (1 << self.bits) - 1

    @property
    def num_slices(self) -> int:
        return len(self.y_strings)

    def header_bytes(self) -> int:
        """Bytes that are not range-coded payload (header, lengths, name, CRC)."""
        return FIXED_OVERHEAD + 4 * self.num_slices + len(self.model_name.encode("ascii"))

    def z_bytes(self) -> int:
        return len(self.z_string)

    def y_bytes(self) -> list[int]:
        """Bytes of each y slice."""
        return [len(s) for s in self.y_strings]

    def payload_bytes(self) -> int:
        return self.z_bytes() + sum(self.y_bytes())


def digest(chunks: Sequence[bytes]) -> bytes:
    """SHA-256 over length-prefixed chunks (each preceded by its length, u64 LE), truncated to
    16 bytes."""
    h = hashlib.sha256()
    for c in chunks:
        h.update(struct.pack("<Q", len(c)))
        h.update(c)
    return h.digest()[:DIGEST_BYTES]


def _check_name(name: str) -> bytes:
    try:
        raw = name.encode("ascii")
    except UnicodeEncodeError:
        raise ValueError(f"model name {name!r} is not ASCII") from None
    if not 1 <= len(raw) <= 255 or not all(32 < b < 127 for b in raw):
        raise ValueError(f"model name {name!r} must be 1..255 printable ASCII characters")
    return raw


def pack(bs: Bitstream) -> bytes:
    """Serialises a ``Bitstream`` (validating every field)."""
    name = _check_name(bs.model_name)
    if bs.colour_mode not in COLOUR_MODES:
        raise ValueError(f"colour mode {bs.colour_mode!r} not in {COLOUR_MODES}")
    if not MIN_BITS <= bs.bits <= MAX_BITS:
        raise ValueError(f"{bs.bits} bits per sample; the format holds {MIN_BITS}..{MAX_BITS}")
    if not (1 <= bs.height <= MAX_SIDE and 1 <= bs.width <= MAX_SIDE):
        raise ValueError(f"image size {bs.height}x{bs.width} outside 1..{MAX_SIDE}")
    if bs.height * bs.width > MAX_PIXELS:
        raise ValueError(f"image size {bs.height}x{bs.width} is above {MAX_PIXELS} pixels")
    if not 1 <= bs.num_slices <= 255:
        raise ValueError(f"{bs.num_slices} y slices; the format holds 1..255")
    for field in ("params_digest", "symbol_digest", "index_digest"):
        if len(getattr(bs, field)) != DIGEST_BYTES:
            raise ValueError(f"{field} must be {DIGEST_BYTES} bytes")
    strings = (bs.z_string, *bs.y_strings)
    if any(len(s) >= 2**32 for s in strings):
        raise ValueError("a coded string is longer than 4 GiB")
    sample_format = COLOUR_MODES.index(bs.colour_mode) | (bs.bits - MIN_BITS) << 4
    head = (MAGIC, VERSION, sample_format, bs.num_slices, len(name))
    digests = (bs.params_digest, bs.symbol_digest, bs.index_digest)
    out = bytearray(_FIXED.pack(*head, bs.height, bs.width, *digests, len(bs.z_string)))
    out += struct.pack(f"<{bs.num_slices}I", *(len(s) for s in bs.y_strings))
    out += name
    for s in strings:
        out += s
    out += _CRC.pack(zlib.crc32(out))
    return bytes(out)


def _check_version(version: int) -> None:
    if version in REFUSED_VERSIONS:
        raise ContainerError(
            f".mrac format version {version} was written by an earlier mracnn-jax and "
            f"{REFUSED_VERSIONS[version]}; this version reads version {VERSION}: encode the image "
            "again"
        )
    if version != VERSION:
        raise ContainerError(
            f"unsupported .mrac format version {version} (this mracnn-jax reads version {VERSION})"
        )


def unpack(data: bytes) -> Bitstream:
    """Parses and verifies a ``.mrac`` file; raises ``ContainerError`` (one line) on any defect."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ContainerError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    n = len(data)
    if n == 0:
        raise ContainerError("empty file (0 bytes): not an .mrac bitstream")
    if n < len(MAGIC) or data[:4] != MAGIC:
        raise ContainerError(f"not an .mrac file (starts with {data[:4]!r}, expected {MAGIC!r})")
    if n < 5:
        raise ContainerError(f"truncated .mrac file ({n} bytes)")
    _check_version(data[4])
    if n < FIXED_OVERHEAD:
        raise ContainerError(
            f"truncated .mrac file ({n} bytes, the header alone is {FIXED_OVERHEAD})"
        )
    fields = _FIXED.unpack_from(data, 0)
    (_, _, sample_format, num_slices, name_len, height, width, params_dg, symbol_dg, index_dg) = (
        fields[:10]
    )
    mode, bits = sample_format & 15, MIN_BITS + (sample_format >> 4)
    lengths_end = _FIXED.size + 4 * num_slices
    header_end = lengths_end + name_len
    least = header_end + _CRC.size  # the header with its lengths and name, and the CRC
    expected = lengths = None
    if n >= lengths_end:
        lengths = struct.unpack_from(f"<{1 + num_slices}I", data, _FIXED.size - 4)
        expected = header_end + sum(lengths) + _CRC.size
    announced = f"{expected}" if expected is not None else f"at least {least}"
    stored_crc = _CRC.unpack_from(data, n - _CRC.size)[0]
    if zlib.crc32(memoryview(data)[: n - _CRC.size]) != stored_crc:
        if n < least or expected > n:
            raise ContainerError(
                f"truncated .mrac file ({n} bytes, the header announces {announced})"
            )
        raise ContainerError("corrupt .mrac file: checksum mismatch (the file was damaged)")
    # The checksum matched: the remaining checks catch files written wrongly, not damage.
    if expected != n:
        raise ContainerError(
            f"malformed .mrac file: the header announces {announced} bytes, the file has {n}"
        )
    if mode >= len(COLOUR_MODES):
        raise ContainerError(f"malformed .mrac file: unknown colour mode {mode}")
    if bits > MAX_BITS:
        raise ContainerError(f"malformed .mrac file: {bits} bits per sample (at most {MAX_BITS})")
    if num_slices < 1 or name_len < 1:
        raise ContainerError("malformed .mrac file: no y slices or no model name")
    if not (1 <= height <= MAX_SIDE and 1 <= width <= MAX_SIDE):
        raise ContainerError(f"malformed .mrac file: image size {height}x{width}")
    if height * width > MAX_PIXELS:
        raise ContainerError(
            f"malformed .mrac file: image size {height}x{width} is above the format's "
            f"{MAX_PIXELS} pixels (no encoder writes it)"
        )
    raw_name = data[lengths_end:header_end]
    if not all(32 < b < 127 for b in raw_name):
        raise ContainerError("malformed .mrac file: model name is not printable ASCII")
    pos = header_end
    strings = []
    for length in lengths:
        strings.append(data[pos : pos + length])
        pos += length
    return Bitstream(
        height=height, width=width, colour_mode=COLOUR_MODES[mode],
        model_name=raw_name.decode("ascii"), params_digest=params_dg, symbol_digest=symbol_dg,
        index_digest=index_dg, z_string=strings[0], y_strings=tuple(strings[1:]), bits=bits,
    )  # fmt: skip


def describe(bs: Bitstream, file_bytes: int | None = None) -> dict:
    """A JSON-friendly summary: sizes, bits per stream, bpp, model identity."""
    pixels = bs.height * bs.width
    total = file_bytes if file_bytes is not None else bs.header_bytes() + bs.payload_bytes()
    return {
        "format_version": bs.version,
        "height": bs.height,
        "width": bs.width,
        "colour_mode": bs.colour_mode,
        "bits_per_sample": bs.bits,
        "model": {"name": bs.model_name, "params_digest": bs.params_digest.hex()},
        "file_bytes": total,
        "header_bytes": bs.header_bytes(),
        "payload_bytes": bs.payload_bytes(),
        "bits": {
            "z": 8 * bs.z_bytes(),
            "y": [8 * b for b in bs.y_bytes()],
            "header": 8 * bs.header_bytes(),
        },
        "bpp": 8 * total / pixels,
        "payload_bpp": 8 * bs.payload_bytes() / pixels,
        "symbol_digest": bs.symbol_digest.hex(),
        "index_digest": bs.index_digest.hex(),
    }

"""The ``.mrac`` bitstream container: header, range-coded strings, checksum (docs/format.md).

Layout (all integers little-endian; S = number of y slices, N = length of the model name)::

    offset     size  field
    0          4     magic b"MRAC"
    4          1     format version (3)
    5          1     colour mode: 0 = RGB, 1 = L (grayscale, coded as RGB)
    6          1     S, number of y slices (1..255)
    7          1     N, length of the architecture name (1..255)
    8          4     image height (1..65535)
    12         4     image width (1..65535)
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

Version 4 (tiled; ``mracnn_jax.coding.tiling``) keeps bytes 0..63 and continues::

    64         2     tile size T (pixels, a multiple of 64)
    66         2     analysis halo (pixels, a multiple of 16)
    68         2     synthesis halo (pixels, a multiple of 16)
    70         2     tile rows R
    72         2     tile columns C (R and C must be the grid of H, W and T)
    74         4 K (S + 1)  per tile, in row-major order: z length, then the S y lengths
    ...        N     architecture name (ASCII)
    ...              per tile: z string, then its y strings in slice order
    end - 4    4     CRC-32 of every byte before it

(K = R C.) Its fixed part is 78 bytes (``FIXED_OVERHEAD_V2``).

Each y string starts with the slice's scale-index agreement block
(``mracnn_jax.coding.scale_agreement``) followed by the range-coded symbols; the container does
not look inside. Versions 1 and 2 had the same layouts but a float latent digest and no agreement
blocks: they decode only where the encoder's arithmetic is reproduced exactly, and are refused
with a one-line ``ContainerError`` that says so.

Parsing is strict and linear in the input size: every length is checked against the bytes that
are there before anything is sliced, and every failure raises ``ContainerError`` with a one-line
message.
"""

from __future__ import annotations

import dataclasses
import hashlib
import struct
import zlib
from collections.abc import Sequence

from mracnn_jax.coding import tiling as _tiling

MAGIC = b"MRAC"
VERSION = 3  # untiled files
VERSION_TILED = 4
VERSIONS = (VERSION, VERSION_TILED)
LEGACY_VERSIONS = (1, 2)  # same layouts, float digests: refused
DIGEST_BYTES = 16
MAX_SIDE = 65535
COLOUR_MODES = ("RGB", "L")

_FIXED = struct.Struct("<4sBBBBII16s16s16sI")  # magic .. z length: 68 bytes
_CRC = struct.Struct("<I")
HEADER_FIXED_BYTES = _FIXED.size  # 68
FIXED_OVERHEAD = _FIXED.size + _CRC.size  # 72
_FIXED_V2 = struct.Struct("<4sBBBBII16s16s16sHHHHH")  # magic .. tile columns: 74 bytes
HEADER_FIXED_BYTES_V2 = _FIXED_V2.size  # 74
FIXED_OVERHEAD_V2 = _FIXED_V2.size + _CRC.size  # 78


class ContainerError(ValueError):
    """The bytes are not a valid ``.mrac`` bitstream; the message (one line) says why."""


@dataclasses.dataclass(frozen=True)
class TileCode:
    """The range-coded strings of one tile: z, then the y slices."""

    z_string: bytes
    y_strings: tuple[bytes, ...]


@dataclasses.dataclass(frozen=True)
class Tiling:
    """The tiling recorded in a version-2 file (pixels; see ``mracnn_jax.coding.tiling``)."""

    tile: int
    halo_analysis: int = 0
    halo_synthesis: int = 0

    def grid(self, height: int, width: int) -> _tiling.TileGrid:
        return _tiling.TileGrid(height, width, self.tile, self.halo_analysis, self.halo_synthesis)


@dataclasses.dataclass(frozen=True)
class Bitstream:
    """The parsed contents of a ``.mrac`` file.

    Untiled (version 3): ``z_string`` and ``y_strings``. Tiled (version 4): ``tiling`` and one
    ``TileCode`` per tile in row-major order; ``z_string`` is empty and ``y_strings`` too.
    """

    height: int
    width: int
    colour_mode: str  # "RGB" or "L"
    model_name: str
    params_digest: bytes  # 16 bytes
    symbol_digest: bytes  # 16 bytes
    index_digest: bytes  # 16 bytes
    z_string: bytes = b""
    y_strings: tuple[bytes, ...] = ()
    tiling: Tiling | None = None
    tiles: tuple[TileCode, ...] = ()

    @property
    def version(self) -> int:
        return VERSION if self.tiling is None else VERSION_TILED

    @property
    def num_slices(self) -> int:
        if self.tiling is not None:
            return len(self.tiles[0].y_strings) if self.tiles else 0
        return len(self.y_strings)

    def grid(self) -> _tiling.TileGrid | None:
        """The tile grid of a tiled file, ``None`` for an untiled one."""
        return None if self.tiling is None else self.tiling.grid(self.height, self.width)

    def header_bytes(self) -> int:
        """Bytes that are not range-coded payload (header, lengths, name, CRC)."""
        name = len(self.model_name.encode("ascii"))
        if self.tiling is None:
            return FIXED_OVERHEAD + 4 * self.num_slices + name
        return FIXED_OVERHEAD_V2 + 4 * len(self.tiles) * (self.num_slices + 1) + name

    def z_bytes(self) -> int:
        if self.tiling is None:
            return len(self.z_string)
        return sum(len(t.z_string) for t in self.tiles)

    def y_bytes(self) -> list[int]:
        """Bytes of each y slice (summed over the tiles)."""
        if self.tiling is None:
            return [len(s) for s in self.y_strings]
        return [sum(len(t.y_strings[i]) for t in self.tiles) for i in range(self.num_slices)]

    def payload_bytes(self) -> int:
        return self.z_bytes() + sum(self.y_bytes())


class Digest:
    """``digest`` fed one chunk at a time (tiled coding feeds the tiles in order)."""

    def __init__(self):
        self._h = hashlib.sha256()

    def update(self, chunk: bytes) -> None:
        self._h.update(struct.pack("<Q", len(chunk)))
        self._h.update(chunk)

    def value(self) -> bytes:
        return self._h.digest()[:DIGEST_BYTES]


def digest(chunks: Sequence[bytes]) -> bytes:
    """SHA-256 over length-prefixed chunks (each preceded by its length, u64 LE), truncated to
    16 bytes."""
    d = Digest()
    for c in chunks:
        d.update(c)
    return d.value()


def _check_name(name: str) -> bytes:
    try:
        raw = name.encode("ascii")
    except UnicodeEncodeError:
        raise ValueError(f"model name {name!r} is not ASCII") from None
    if not 1 <= len(raw) <= 255 or not raw.isascii() or not all(32 < b < 127 for b in raw):
        raise ValueError(f"model name {name!r} must be 1..255 printable ASCII characters")
    return raw


def pack(bs: Bitstream) -> bytes:
    """Serialises a ``Bitstream`` (validating every field): version 3 without tiling, 4 with."""
    name = _check_name(bs.model_name)
    if bs.colour_mode not in COLOUR_MODES:
        raise ValueError(f"colour mode {bs.colour_mode!r} not in {COLOUR_MODES}")
    if not (1 <= bs.height <= MAX_SIDE and 1 <= bs.width <= MAX_SIDE):
        raise ValueError(f"image size {bs.height}x{bs.width} outside 1..{MAX_SIDE}")
    if not 1 <= bs.num_slices <= 255:
        raise ValueError(f"{bs.num_slices} y slices; the format holds 1..255")
    for field in ("params_digest", "symbol_digest", "index_digest"):
        if len(getattr(bs, field)) != DIGEST_BYTES:
            raise ValueError(f"{field} must be {DIGEST_BYTES} bytes")
    head = (
        MAGIC,
        bs.version,
        COLOUR_MODES.index(bs.colour_mode),
        bs.num_slices,
        len(name),
        bs.height,
        bs.width,
        bs.params_digest,
        bs.symbol_digest,
        bs.index_digest,
    )
    if bs.tiling is None:
        if bs.tiles:
            raise ValueError("an untiled bitstream has no tiles")
        strings = (bs.z_string,) + tuple(bs.y_strings)
        out = bytearray(_FIXED.pack(*head, len(bs.z_string)))
        lengths = [len(s) for s in bs.y_strings]
    else:
        if bs.z_string or bs.y_strings:
            raise ValueError("a tiled bitstream keeps its strings in tiles")
        grid = bs.grid()  # validates the tile size and halos
        rows, cols = grid.shape
        if len(bs.tiles) != rows * cols:
            raise ValueError(f"{len(bs.tiles)} tiles; a {rows}x{cols} grid needs {rows * cols}")
        if any(len(t.y_strings) != bs.num_slices for t in bs.tiles):
            raise ValueError("every tile must have the same number of y slices")
        t = bs.tiling
        out = bytearray(
            _FIXED_V2.pack(*head, t.tile, t.halo_analysis, t.halo_synthesis, rows, cols)
        )
        strings = tuple(s for tile in bs.tiles for s in (tile.z_string, *tile.y_strings))
        lengths = [len(s) for s in strings]
    if any(len(s) >= 2**32 for s in strings):
        raise ValueError("a coded string is longer than 4 GiB")
    out += struct.pack(f"<{len(lengths)}I", *lengths)
    out += name
    for s in strings:
        out += s
    out += _CRC.pack(zlib.crc32(out))
    return bytes(out)


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
    version = data[4]
    if version in LEGACY_VERSIONS:
        raise ContainerError(
            f".mrac format version {version} was written by an earlier mracnn-jax and decodes only "
            "with the encoder's exact floating-point arithmetic; this version reads the portable "
            f"versions {', '.join(map(str, VERSIONS))}: encode the image again"
        )
    if version not in VERSIONS:
        raise ContainerError(
            f"unsupported .mrac format version {version} (this mracnn-jax reads versions "
            f"{', '.join(map(str, VERSIONS))})"
        )
    tiled = version == VERSION_TILED
    fixed, overhead = (_FIXED_V2, FIXED_OVERHEAD_V2) if tiled else (_FIXED, FIXED_OVERHEAD)
    if n < overhead:
        raise ContainerError(f"truncated .mrac file ({n} bytes, the header alone is {overhead})")
    fields = fixed.unpack_from(data, 0)
    (_, _, mode, num_slices, name_len, height, width, params_dg, symbol_dg, index_dg) = fields[:10]
    if tiled:
        tile, halo_a, halo_s, rows, cols = fields[10:]
        num_lengths = rows * cols * (num_slices + 1)
    else:
        num_lengths = 1 + num_slices
    lengths_start = fixed.size - (0 if tiled else 4)  # v1's z length is part of _FIXED
    lengths_end = fixed.size + 4 * (num_lengths - (0 if tiled else 1))
    header_end = lengths_end + name_len
    expected = None
    if n >= lengths_end:
        lengths = struct.unpack_from(f"<{num_lengths}I", data, lengths_start)
        expected = header_end + sum(lengths) + _CRC.size
    stored_crc = _CRC.unpack_from(data, n - _CRC.size)[0]
    if zlib.crc32(memoryview(data)[: n - _CRC.size]) != stored_crc:
        if expected is not None and expected > n:
            raise ContainerError(
                f"truncated .mrac file ({n} bytes, the header announces {expected})"
            )
        raise ContainerError("corrupt .mrac file: checksum mismatch (the file was damaged)")
    # The checksum matched: the remaining checks catch files written wrongly, not damage.
    if expected is None or expected != n:
        raise ContainerError(
            f"malformed .mrac file: the header announces {expected} bytes, the file has {n}"
        )
    if mode >= len(COLOUR_MODES):
        raise ContainerError(f"malformed .mrac file: unknown colour mode {mode}")
    if num_slices < 1 or name_len < 1:
        raise ContainerError("malformed .mrac file: no y slices or no model name")
    if not (1 <= height <= MAX_SIDE and 1 <= width <= MAX_SIDE):
        raise ContainerError(f"malformed .mrac file: image size {height}x{width}")
    tiling = None
    if tiled:
        try:
            tiling = Tiling(tile, halo_a, halo_s)
            grid = tiling.grid(height, width)
        except ValueError as e:
            raise ContainerError(f"malformed .mrac file: {e}") from None
        if grid.shape != (rows, cols):
            raise ContainerError(
                f"malformed .mrac file: {rows}x{cols} tiles, but {tile}-pixel tiles of a "
                f"{height}x{width} image make {grid.shape[0]}x{grid.shape[1]}"
            )
    raw_name = data[lengths_end:header_end]
    if not all(32 < b < 127 for b in raw_name):
        raise ContainerError("malformed .mrac file: model name is not printable ASCII")
    pos = header_end
    strings = []
    for length in lengths:
        strings.append(data[pos : pos + length])
        pos += length
    common = {
        "height": height,
        "width": width,
        "colour_mode": COLOUR_MODES[mode],
        "model_name": raw_name.decode("ascii"),
        "params_digest": params_dg,
        "symbol_digest": symbol_dg,
        "index_digest": index_dg,
    }
    if not tiled:
        return Bitstream(**common, z_string=strings[0], y_strings=tuple(strings[1:]))
    k = num_slices + 1
    tiles = tuple(
        TileCode(strings[i], tuple(strings[i + 1 : i + k])) for i in range(0, len(strings), k)
    )
    return Bitstream(**common, tiling=tiling, tiles=tiles)


def describe(bs: Bitstream, file_bytes: int | None = None) -> dict:
    """A JSON-friendly summary: sizes, bits per stream, bpp, model identity."""
    pixels = bs.height * bs.width
    total = file_bytes if file_bytes is not None else bs.header_bytes() + bs.payload_bytes()
    return {
        "format_version": bs.version,
        "height": bs.height,
        "width": bs.width,
        "colour_mode": bs.colour_mode,
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
        "tiling": None if bs.tiling is None else bs.grid().describe(),
    }

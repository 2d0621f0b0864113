"""A range coder that writes the same bytes as tensorflow-compression 2.14 (no TensorFlow).

It reproduces tfc's ``RangeEncoder``/``RangeDecoder`` (G. N. N. Martin's range coder) and the
escape code of its ``entropy_encode_channel``/``entropy_encode_index`` kernels: ``encode`` returns
exactly the string of ``ContinuousBatchedEntropyModel.compress`` (z: each element's table row is
its channel) or ``LocationScaleIndexedEntropyModel.compress`` (y: the row is the integer scale
index) for one coding unit, elements in C order. Compiled with numba (``coding.jit``: plain
Python where numba is missing, with the same output).

Tables: tfc's flat layout, rows ``[±p, 0, c_1, ..., 2^p]`` in sequence (a row ends at its first
``2^p``; more ``2^p`` values are padding), precision p in [1, 16], negative p = escapes on. Symbol
s of row r is ``v = s - cdf_offset[r]``, the bin ``[cdf[v], cdf[v+1])``. K cdf entries make K - 1
bins; with escapes the last, ``m = K - 2``, is the escape bin and only ``0 <= v < m`` is direct.

State and renormalisation: the encoder keeps ``base`` and ``size - 1`` (32 bits each, ``2^16 <=
size <= 2^32``) and a 64-bit ``delay``. Coding ``[lo, hi)`` at precision p: ``a = size*lo >> p``,
``b = (size*hi >> p) - 1``, ``base += a`` (mod 2^32, the carry noted), ``size - 1 = b - a``. When
``size - 1 < 2^16``, base and size shift left by 16 bits (``size - 1`` gains ``0xFFFF``) and the
top 16 bits of base are written big-endian, unless the interval then straddles 2^32: the
undecided word is kept as ``delay = top + 1`` and ``delay >> 16`` counts pending bytes (2 more
per shift while it straddles). Once the interval leaves 2^32 the word is written: ``delay`` and
that many 0x00 bytes after a carry, else ``delay - 1`` and 0xFF bytes. The decoder mirrors this
with ``base``, ``size - 1`` and a 32-bit window ``value`` (4 bytes at the start, 16 bits per
shift, zeros past the end); the bin is the smallest v with ``(value - base + 1) << p <= size *
cdf[v]`` (binary search).

Escape (overflow) code: ``v < 0`` codes the escape bin, then ``g = -v``, sign 1; ``v >= m`` the
escape bin, then ``g = v - m + 1``, sign 0. g (n significant bits, ``g < 2^30`` here) follows as
n - 1 zero bits, then its n bits from the top (Elias gamma), then the sign bit, each an interval
``[bit, bit + 1)`` of precision 1. It decodes to ``-g`` or ``g + m - 1``.

Flush and byte layout: the string is the bytes written (no header), then one value of the final
interval with its trailing zero bytes left implicit: the delayed word while straddling (its low
byte only if nonzero); nothing if base is 0; else base rounded up to a multiple of 2^24 (1 byte)
if still inside, else to a multiple of 2^16 (1 or 2 bytes). The decoder's final check (tfc's
sanity check: every byte read, the window equal to that value) raises ``RangeCodingError``.
"""

from __future__ import annotations

import numpy as np

from mracnn_jax.coding.jit import njit

__all__ = ["RangeCodingError", "Tables", "decode", "encode"]

_M32 = 0xFFFFFFFF
_MAX_GAMMA = 1 << 30
_MESSAGES = {
    1: "table row index out of range",
    2: "symbol out of its table's range (no escape)",
    3: "symbol has zero probability",
    4: "escaped symbol too far from its table (|value| >= 2^30)",
    5: "corrupt or mismatched string (no bin matches)",
    6: "corrupt or mismatched string (escape code too long)",
    7: "corrupt or mismatched string (final state check failed)",
}


class RangeCodingError(ValueError):
    """Range encoding or decoding failed (the message says why)."""


class Tables:
    """Quantised CDF rows: ``cdf [R, W]`` int64 (padded with ``2^p``), ``sizes [R]`` (cdf entries
    per row, bins + 1), ``offsets [R]`` (first symbol), ``precisions [R]``, ``escapes [R]``."""

    def __init__(self, cdf, sizes, offsets, precisions, escapes):
        self.cdf = np.ascontiguousarray(cdf, np.int64)  # int64: size * cdf stays exact uncompiled
        self.sizes = np.ascontiguousarray(sizes, np.int64)
        self.offsets = np.ascontiguousarray(offsets, np.int64)
        self.precisions = np.ascontiguousarray(precisions, np.int64)
        self.escapes = np.ascontiguousarray(escapes, np.bool_)
        r = len(self.sizes)
        if not (
            r
            and self.cdf.ndim == 2
            and self.cdf.shape[0] == r
            and self.offsets.shape == self.precisions.shape == self.escapes.shape == (r,)
            and 2 <= self.sizes.min()
            and self.sizes.max() <= self.cdf.shape[1]
            and 1 <= self.precisions.min()
            and self.precisions.max() <= 16
            and np.abs(self.offsets).max() < 2**31
        ):
            raise ValueError("Tables: inconsistent shapes, sizes, precisions or offsets")
        for k in range(r):
            row, top = self.cdf[k, : self.sizes[k]], 1 << int(self.precisions[k])
            if row[0] != 0 or row[-1] != top or row[-2] == top or np.any(np.diff(row) < 0):
                raise ValueError(f"Tables: row {k} must rise monotonically from 0 to {top}")

    @property
    def num_rows(self) -> int:
        return len(self.sizes)

    def arrays(self) -> tuple:
        return self.cdf, self.sizes, self.offsets, self.precisions, self.escapes

    @classmethod
    def from_rows(cls, rows, cdf_offset, precision: int, escapes: bool = True) -> Tables:
        """Rows ``[0, c_1, ..., 2^precision]`` (one per table) and their first symbols."""
        head = [-precision if escapes else precision]
        return cls.from_tfc_flat(np.concatenate([np.r_[head, r] for r in rows]), cdf_offset)

    @classmethod
    def from_tfc_flat(cls, cdf, cdf_offset, precision: int | None = None) -> Tables:
        """tfc's flat table (``model.cdf`` or ``tfc_models.z_tables()[0]``) and ``cdf_offset``;
        ``precision``, if given, must be every row's."""
        flat = np.asarray(cdf, np.int64)
        if flat.ndim != 1:
            raise ValueError("Tables.from_tfc_flat: the cdf must be 1-D (tfc's flat layout)")
        rows, precs, esc, i = [], [], [], 0
        while i < len(flat):
            p = abs(int(flat[i]))
            if not 1 <= p <= 16 or i + 2 >= len(flat) or flat[i + 1] != 0:
                raise ValueError(f"Tables.from_tfc_flat: bad row header at {i}")
            top = 1 << p
            ends = np.flatnonzero(flat[i + 1 :] == top)
            if not len(ends):
                raise ValueError(f"Tables.from_tfc_flat: row at {i} does not end with {top}")
            j = i + 1 + int(ends[0])
            rows.append(flat[i + 1 : j + 1])
            precs.append(p)
            esc.append(flat[i] < 0)
            rest = np.flatnonzero(flat[j + 1 :] != top)  # skip padding
            i = j + 1 + (int(rest[0]) if len(rest) else len(flat) - j - 1)
        offsets = np.asarray(cdf_offset, np.int64).reshape(-1)
        if len(rows) != len(offsets):
            raise ValueError(f"Tables.from_tfc_flat: {len(rows)} rows, {len(offsets)} offsets")
        if precision is not None and any(p != precision for p in precs):
            raise ValueError(f"Tables.from_tfc_flat: not all rows have precision {precision}")
        width = max((len(r) for r in rows), default=2)
        table = np.empty((len(rows), width), np.int64)
        for k, r in enumerate(rows):
            table[k, : len(r)], table[k, len(r) :] = r, r[-1]
        return cls(table, [len(r) for r in rows], offsets, precs, esc)

    def to_tfc_flat(self) -> np.ndarray:
        """The flat tfc layout (no padding) of these tables, int32."""
        heads = np.where(self.escapes, -self.precisions, self.precisions)
        rows = [np.r_[h, self.cdf[k, :n]] for k, (h, n) in enumerate(zip(heads, self.sizes))]
        return np.concatenate(rows).astype(np.int32)


# -------------------------------------------------------------------------------------------------
# Compiled kernels. All arithmetic in int64 with explicit 32-bit masks (no unsigned types).


@njit(cache=True, nogil=True, inline="always")
def _put(buf, pos, base, sm1, delay, lo, hi, prec):
    """Codes ``[lo, hi) / 2^prec``; returns the new (pos, base, size - 1, delay)."""
    size = sm1 + 1
    a = (size * lo) >> prec
    b = ((size * hi) >> prec) - 1
    base += a
    carry = base > _M32
    base &= _M32
    sm1 = b - a
    if base + sm1 > _M32:  # the interval straddles 2^32
        if sm1 < 0x10000:
            base = (base << 16) & _M32
            sm1 = (sm1 << 16) | 0xFFFF
            delay += 0x20000
        return pos, base, sm1, delay
    if delay != 0:  # it left 2^32: the delayed word is decided
        fill = 0 if carry else 0xFF
        delay -= 0 if carry else 1
        buf[pos] = (delay >> 8) & 0xFF
        buf[pos + 1] = delay & 0xFF
        pos += 2
        for _ in range(delay >> 16):
            buf[pos] = fill
            pos += 1
        delay = 0
    if sm1 < 0x10000:
        top = base >> 16
        base = (base << 16) & _M32
        sm1 = (sm1 << 16) | 0xFFFF
        if base + sm1 <= _M32:
            buf[pos] = top >> 8
            buf[pos + 1] = top & 0xFF
            pos += 2
        else:
            delay = top + 1
    return pos, base, sm1, delay


@njit(cache=True, nogil=True)
def _encode(symbols, rows, cdf, sizes, offsets, precs, escapes):
    n = symbols.size
    calls = 0
    for i in range(n):  # checks, and a bound on the output: 2 bytes per coded interval
        r = rows[i]
        if r < 0 or r >= sizes.size:
            return np.empty(0, np.uint8), 1, i
        v = symbols[i] - offsets[r]
        m = sizes[r] - 2
        if escapes[r] and (v < 0 or v >= m):
            g = -v if v < 0 else v - m + 1
            if not 0 < g < _MAX_GAMMA:
                return np.empty(0, np.uint8), 4, i
            while g > 0:
                calls += 2
                g >>= 1
            v = m
        elif v < 0 or v > m:
            return np.empty(0, np.uint8), 2, i
        if cdf[r, v + 1] <= cdf[r, v]:
            return np.empty(0, np.uint8), 3, i
        calls += 1
    buf = np.empty(2 * calls + 8, np.uint8)
    pos, base, sm1, delay = 0, 0, _M32, 0
    for i in range(n):
        r = rows[i]
        v, m, p = symbols[i] - offsets[r], sizes[r] - 2, precs[r]
        if escapes[r] and (v < 0 or v >= m):
            sign, g = (1, -v) if v < 0 else (0, v - m + 1)
            pos, base, sm1, delay = _put(buf, pos, base, sm1, delay, cdf[r, m], cdf[r, m + 1], p)
            nb = 1
            while g >= (1 << nb):
                pos, base, sm1, delay = _put(buf, pos, base, sm1, delay, 0, 1, 1)
                nb += 1
            for k in range(nb - 1, -1, -1):
                bit = (g >> k) & 1
                pos, base, sm1, delay = _put(buf, pos, base, sm1, delay, bit, bit + 1, 1)
            pos, base, sm1, delay = _put(buf, pos, base, sm1, delay, sign, sign + 1, 1)
        else:
            pos, base, sm1, delay = _put(buf, pos, base, sm1, delay, cdf[r, v], cdf[r, v + 1], p)
    word, nbytes = 0, 0  # flush: 16 bits (1 or 2 bytes written) of a value in the interval
    if delay != 0:
        word, nbytes = delay & 0xFFFF, 2 if delay & 0xFF else 1
    elif base != 0:
        word = (((base - 1) >> 24) + 1) << 8
        if word > ((base + sm1) & _M32) >> 16:  # base rounded up to 2^24 is outside
            word = ((base - 1) >> 16) + 1
        nbytes = 2 if word & 0xFF else 1
    for q in range(nbytes):
        buf[pos + q] = (word >> (8 - 8 * q)) & 0xFF
    return buf[: pos + nbytes], 0, n


@njit(cache=True, nogil=True, inline="always")
def _shift(data, pos, base, sm1, value):
    """Renormalises after a bin was decoded: returns (pos, base, size - 1, value)."""
    if sm1 < 0x10000:
        base = (base << 16) & _M32
        sm1 = (sm1 << 16) | 0xFFFF
        for _ in range(2):
            value = (value << 8) & _M32
            if pos < data.size:
                value |= data[pos]
                pos += 1
    return pos, base, sm1, value


@njit(cache=True, nogil=True, inline="always")
def _bit(data, pos, base, sm1, value):
    """Decodes one bit of precision 1: returns (bit, pos, base, size - 1, value). (A window past
    the interval, from a corrupt string, reads as 1; the final check catches it.)"""
    size = sm1 + 1
    if (((value - base) & _M32) + 1) << 1 <= size:
        bit, a, b = 0, 0, (size >> 1) - 1
    else:
        bit, a, b = 1, size >> 1, size - 1
    pos, base, sm1, value = _shift(data, pos, (base + a) & _M32, b - a, value)
    return bit, pos, base, sm1, value


@njit(cache=True, nogil=True)
def _decode(data, rows, cdf, sizes, offsets, precs, escapes, out):
    pos, base, sm1, value = 0, 0, _M32, 0
    for _ in range(4):
        value <<= 8
        if pos < data.size:
            value |= data[pos]
            pos += 1
    for i in range(rows.size):
        r = rows[i]
        if r < 0 or r >= sizes.size:
            return 1, i
        p, k, size = precs[r], sizes[r], sm1 + 1
        bound = (((value - base) & _M32) + 1) << p
        j, length = 1, k - 1  # smallest j in [1, k) with bound <= size * cdf[j]
        while length > 0:
            half = length >> 1
            if bound <= size * cdf[r, j + half]:
                length = half
            else:
                j += half + 1
                length -= half + 1
        if j >= k:
            return 5, i
        a = (size * cdf[r, j - 1]) >> p
        b = ((size * cdf[r, j]) >> p) - 1
        base = (base + a) & _M32
        pos, base, sm1, value = _shift(data, pos, base, b - a, value)
        v, m = j - 1, k - 2
        if escapes[r] and v == m:
            nb = 0
            while True:
                bit, pos, base, sm1, value = _bit(data, pos, base, sm1, value)
                if bit == 1:
                    break
                nb += 1
                if nb >= 30:
                    return 6, i
            g = 1 << nb
            for q in range(nb - 1, -1, -1):
                bit, pos, base, sm1, value = _bit(data, pos, base, sm1, value)
                g |= bit << q
            bit, pos, base, sm1, value = _bit(data, pos, base, sm1, value)
            v = -g if bit == 1 else g + m - 1
        out[i] = v + offsets[r]
    # tfc's sanity check: all bytes read, and the window holds the encoder's flushed value
    if pos != data.size:
        return 7, rows.size
    upper = (base + sm1) & _M32
    if base == 0 or upper < base:
        return (0 if value == 0 else 7), rows.size
    shift = 24 if ((base - 1) >> 24) < (upper >> 24) else 16
    mid = ((base - 1) >> shift) + 1
    return (0 if ((mid << shift) & _M32) == value else 7), rows.size


def _ints(x, what: str) -> np.ndarray:
    x = np.asarray(x)
    if x.size and not np.issubdtype(x.dtype, np.integer):
        raise TypeError(f"{what} must be integers, got {x.dtype}")
    if x.size and (x.min() < -(2**31) or x.max() >= 2**31):
        raise RangeCodingError(f"{what} must fit in int32")
    return np.ascontiguousarray(x, np.int64).reshape(-1)


def _raise(code: int, at: int, what: str):
    if code:
        raise RangeCodingError(f"range {what} failed at element {at}: {_MESSAGES[code]}")


def encode(symbols: np.ndarray, rows: np.ndarray, tables: Tables) -> bytes:
    """Integer ``symbols`` coded with table row ``rows`` (same shape) each, in C order: one
    string, byte for byte tfc's ``compress`` of one coding unit."""
    symbols, rows_ = np.asarray(symbols), np.asarray(rows)
    if symbols.shape != rows_.shape:
        raise ValueError(f"symbols {symbols.shape} and rows {rows_.shape} differ in shape")
    buf, code, at = _encode(_ints(symbols, "symbols"), _ints(rows_, "rows"), *tables.arrays())
    _raise(code, at, "encoding")
    return buf.tobytes()


def decode(data: bytes, rows: np.ndarray, tables: Tables) -> np.ndarray:
    """The symbols (int32, ``rows.shape``) of a string written by ``encode`` (or tfc) with the
    same rows and tables; ``RangeCodingError`` where the string cannot be theirs."""
    rows_ = np.asarray(rows)
    out = np.zeros(rows_.shape, np.int32)
    code, at = _decode(
        np.frombuffer(bytes(data), np.uint8).astype(np.int64),
        _ints(rows_, "rows"),
        *tables.arrays(),
        out.reshape(-1),
    )
    _raise(code, at, "decoding")
    return out

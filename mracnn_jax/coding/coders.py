"""The z and y coders of the codec: integer symbols <-> range-coded strings, without TensorFlow.

Both run ``mracnn_jax.coding.range_coder`` (numba), which writes byte for byte the strings of
tensorflow-compression 2.14's coder (``tfc_models`` keeps that reference for the tests). Their
tables are integers that never depend on the decoder's floating point:

z (hyper-latent ``[1, h, w, C]``)
    ``ZCoder``: one table row per channel, the quantised factorized prior of the model. The rows
    and the quantisation offsets (medians) are computed once when the model file is written and
    stored in it (``model_file``, ``coding.tables``); the symbol of an element of channel c is
    ``round(z - m_c)``.

y (latent slices ``[1, h, w, M/S]``)
    ``YCoder``: the 64 Gaussian (convolved with a unit box) tables of tfc's
    ``LocationScaleIndexedEntropyModel(NoisyNormal)`` at the scales
    ``exp(linspace(ln 0.11, ln 256, 64))``, stored as a package asset (``coding.tables``). Each
    element's row is its integer scale index, agreed on by ``coding.scale_agreement``; the symbol
    is ``round(y - mu)``.

Values outside a row's range are escaped (Elias gamma), never clipped. ``table_bits`` gives the
ideal code length of symbols under the integer tables (-log2 of each bin's quantised probability,
plus the escape code's bits), which the range coder's output approaches to within a few bytes.
"""

from __future__ import annotations

import functools

import numpy as np

from mracnn_jax.coding import range_coder, tables
from mracnn_jax.coding.range_coder import RangeCodingError

PRECISION = tables.PRECISION
MAX_SYMBOL = 2**24  # |symbol| bound: exact in float32, far beyond any sane latent

__all__ = [
    "BitTable",
    "RangeCodingError",
    "YCoder",
    "ZCoder",
    "check_scale_indexes",
    "check_symbols",
    "check_y_shapes",
    "y_coder",
]


class BitTable:
    """Code lengths of every bin of a set of quantised CDF rows, for ``table_bits``."""

    def __init__(self, t: range_coder.Tables):
        self.num_bins = t.sizes - 1  # includes the escape bin
        width = int(self.num_bins.max())
        bits = np.zeros((t.num_rows, width), np.float64)
        for k in range(t.num_rows):
            freq = np.diff(t.cdf[k, : t.sizes[k]]).astype(np.float64)
            bits[k, : len(freq)] = t.precisions[k] - np.log2(np.maximum(freq, 1e-300))
        self.bits = bits
        self.cdf_offset = t.offsets
        self.tables = t

    def pmf(self, row: int) -> np.ndarray:
        """Quantised probabilities of row ``row``: symbols ``cdf_offset + 0, 1, ...``, escape last."""
        t = self.tables
        return np.diff(t.cdf[row, : t.sizes[row]]).astype(np.float64) / 2.0 ** t.precisions[row]

    def code_length(self, symbols: np.ndarray, rows: np.ndarray) -> np.ndarray:
        """Bits to code each symbol with the table row given per element (same shapes)."""
        symbols = np.asarray(symbols, np.int64)
        rows = np.asarray(rows, np.int64)
        v = symbols - self.cdf_offset[rows]
        escape = self.num_bins[rows] - 1  # the escape bin's position
        inside = (v >= 0) & (v < escape)
        direct = self.bits[rows, np.clip(v, 0, escape)]
        gamma = np.where(v < 0, -v, v - escape + 1)
        gamma_bits = 2.0 * np.frexp(np.maximum(gamma, 1).astype(np.float64))[1]  # Elias + sign
        return np.where(inside, direct, self.bits[rows, escape] + gamma_bits)


def check_symbols(symbols: np.ndarray, what: str) -> np.ndarray:
    """``symbols`` (integers, or floats holding integers) as int32, or ``RangeCodingError``
    (one line) where one is not finite or ``|s| >= MAX_SYMBOL``. The bounds are compared before
    any cast, so NaN, infinity and values that wrap in int32 cannot pass."""
    symbols = np.asarray(symbols)
    if not symbols.size:
        return symbols.astype(np.int32)
    if symbols.dtype.kind not in "iuf":
        raise RangeCodingError(f"{what} symbols must be numbers, got {symbols.dtype}")
    if symbols.dtype.kind == "f" and not np.isfinite(symbols).all():
        raise RangeCodingError(f"{what} symbols are not finite (NaN or infinity)")
    low, high = int(symbols.min()), int(symbols.max())  # exact: no int32 wrap-around
    if low <= -MAX_SYMBOL or high >= MAX_SYMBOL:
        worst = low if -low >= high else high
        raise RangeCodingError(f"{what} symbol {worst} is out of range (|s| < 2^24)")
    return symbols.astype(np.int32)


def check_scale_indexes(indexes: np.ndarray, num_scales: int) -> np.ndarray:
    """``indexes`` as int32, or ``RangeCodingError`` (a ``ValueError``, one line) unless they are
    integers in [0, num_scales) (NaN and infinity are not)."""
    indexes = np.asarray(indexes)
    if indexes.size and (
        indexes.dtype.kind not in "iuf"
        or not np.isfinite(indexes).all()
        or indexes.min() < 0
        or indexes.max() >= num_scales
        or np.any(indexes != np.rint(indexes))
    ):
        raise RangeCodingError(f"scale indexes must be integers in [0, {num_scales})")
    return indexes.astype(np.int32)


def check_y_shapes(symbols: np.ndarray, indexes: np.ndarray) -> None:
    """``ValueError`` unless the y symbols and their indexes are one ``[1, h, w, c]`` slice."""
    if symbols.ndim != 4 or symbols.shape[0] != 1 or symbols.shape != np.shape(indexes):
        raise ValueError(
            f"y symbols {symbols.shape} / indexes {np.shape(indexes)}: need [1, h, w, c]"
        )


class ZCoder:
    """Codes the integer symbols ``round(z - m)`` of the hyper-latent ``[1, h, w, C]``."""

    def __init__(self, cdf: np.ndarray, cdf_offset: np.ndarray, precision: int = PRECISION):
        self.channels = len(cdf_offset)
        self.tables = range_coder.Tables.from_tfc_flat(cdf, cdf_offset, precision)
        self.table = BitTable(self.tables)

    def _rows(self, shape) -> np.ndarray:
        return np.broadcast_to(np.arange(self.channels, dtype=np.int32), shape)

    def compress(self, symbols: np.ndarray) -> bytes:
        """``symbols [1, h, w, C]`` (integers) -> one range-coded string."""
        if symbols.ndim != 4 or symbols.shape[0] != 1 or symbols.shape[-1] != self.channels:
            raise ValueError(f"z symbols must be [1, h, w, {self.channels}], got {symbols.shape}")
        symbols = check_symbols(symbols, "z")
        return range_coder.encode(symbols, self._rows(symbols.shape), self.tables)

    def decompress(self, string: bytes, spatial_shape: tuple[int, int]) -> np.ndarray:
        """One string -> symbols ``[1, h, w, C]`` (int32)."""
        shape = (1, *spatial_shape, self.channels)
        return range_coder.decode(string, self._rows(shape), self.tables)

    def table_bits(self, symbols: np.ndarray) -> float:
        """Ideal code length (bits) of ``symbols [..., C]`` under the integer tables."""
        symbols = np.asarray(symbols)
        return float(self.table.code_length(symbols, self._rows(symbols.shape)).sum())


class YCoder:
    """Codes integer symbols ``round(y - mu)`` of a slice ``[1, h, w, c]`` given scale indexes."""

    def __init__(self):
        g = tables.gaussian_tables()
        self.num_scales = len(g["cdf_offset"])
        self.tables = range_coder.Tables.from_tfc_flat(g["cdf"], g["cdf_offset"], g["precision"])
        self.table = BitTable(self.tables)

    def _indexes(self, indexes: np.ndarray) -> np.ndarray:
        return check_scale_indexes(indexes, self.num_scales)

    def compress(self, symbols: np.ndarray, indexes: np.ndarray) -> bytes:
        check_y_shapes(symbols, indexes)
        return range_coder.encode(check_symbols(symbols, "y"), self._indexes(indexes), self.tables)

    def decompress(self, string: bytes, indexes: np.ndarray, what: str = "y") -> np.ndarray:
        """One string + indexes ``[1, h, w, c]`` -> symbols ``[1, h, w, c]`` (int32)."""
        try:
            return range_coder.decode(string, self._indexes(indexes), self.tables)
        except RangeCodingError as e:
            raise RangeCodingError(f"{what}: {e}") from None

    def table_bits(self, symbols: np.ndarray, indexes: np.ndarray) -> float:
        return float(self.table.code_length(symbols, self._indexes(indexes)).sum())


@functools.lru_cache(maxsize=1)
def y_coder() -> YCoder:
    """The y coder (its tables depend on no model parameter): built once per process."""
    return YCoder()

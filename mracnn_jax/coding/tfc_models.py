"""tensorflow-compression's coders for z and y: the reference the portable coder is tested against.

The codec codes with ``coding.coders`` (numba, no TensorFlow); this module keeps the coders of
tensorflow-compression 2.14 that the first ``.mrac`` files were written with, so that the tests
and ``scripts/check_portability.py`` can show that ours writes the same bytes for the same tables
and symbols, and ``coding.tables`` that its tables are tfc's. It is the one module of mracnn-jax
that imports TensorFlow; it hides every GPU from TensorFlow before any TensorFlow op runs, so JAX
keeps the accelerator. Arrays cross the boundary as NumPy.

z (hyper-latent ``[1, h, w, C]``)
    ``ZCoder``: a ``tfc.ContinuousBatchedEntropyModel`` given precomputed tables
    (``stateless=True, cdf=..., cdf_offset=...``). The tables come from the JAX factorized prior,
    not from a TensorFlow copy of it: for channel c with quantisation offset m_c (the model's
    ``z_offsets()``, the median) the coded symbol is ``s = round(z - m_c)`` and

        P(s) = likelihood_c(m_c + s) = CDF_c(m_c + s + 1/2) - CDF_c(m_c + s - 1/2)

    evaluated by the model's own ``z_likelihood``, for s in ``[floor(lo_c - m_c), ceil(hi_c - m_c)]``
    where lo_c, hi_c are the ``TAIL_MASS / 2`` and ``1 - TAIL_MASS / 2`` quantiles of CDF_c
    (``coding.tables.z_support``, the support the stored tables have too);
    ``1 - sum P`` is the escape ("overflow") bin, and ``tfc.pmf_to_quantized_cdf`` quantises the
    whole to ``PRECISION`` bits. The entropy model is handed the integer symbols (as floats, with
    no quantisation offset of its own), so TensorFlow never rounds anything: the symbols and the
    offsets are the JAX model's, and z^ = s + m is computed by the caller exactly as the model does.

y (latent slices ``[1, h, w, M/S]``)
    ``YCoder``: ``tfc.LocationScaleIndexedEntropyModel(tfc.NoisyNormal, num_scales=64,
    scale_fn=exp(linspace(ln 0.11, ln 256, 64)), coding_rank=3, compression=True)``, the model
    of ``mracnn_jax.entropy.gaussian``. The caller gives *integer* scale indexes (rounded in JAX)
    and the integer symbols ``round(y - mu)``; the location is applied by the caller, so again no
    rounding happens in TensorFlow. (tfc itself would *truncate* a float index with ``tf.cast``;
    passing integers makes the choice explicit and identical on both sides.)

Values outside a table's range are escaped by the range coder (Elias gamma code), never clipped.

``table_bits`` gives the exact ideal code length of symbols under the integer tables
(-log2 of each bin's quantised probability, plus the escape code's bits), which the range coder's
output approaches to within a few bytes per string.
"""

from __future__ import annotations

import functools
import os
import threading

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import jax.numpy as jnp
import numpy as np
import tensorflow as tf

try:  # before any TensorFlow op: TensorFlow must not take the GPU from JAX
    tf.config.set_visible_devices([], "GPU")
except (RuntimeError, ValueError):  # already initialised (devices fixed): nothing to hide then
    pass

import tensorflow_compression as tfc

from mracnn_jax.coding.coders import (
    BitTable,
    check_scale_indexes,
    check_symbols,
    check_y_shapes,
)
from mracnn_jax.coding.range_coder import RangeCodingError, Tables  # one error for both coders
from mracnn_jax.coding.tables import PRECISION, TAIL_MASS, z_support
from mracnn_jax.entropy import gaussian

DECODE_TIMEOUT_S = float(os.environ.get("MRACNN_DECODE_TIMEOUT_S", "120"))


# -------------------------------------------------------------------------------------------------
# Table helpers (NumPy).


def split_cdf_rows(cdf: np.ndarray) -> list[np.ndarray]:
    """Splits tfc's flat table ``[-p, 0, c_1, ..., 2^p, -p, 0, ...]`` into rows ``[0 .. 2^p]``."""
    cdf = np.asarray(cdf, np.int64)
    rows, i = [], 0
    while i < len(cdf):
        precision = abs(int(cdf[i]))
        top = 1 << precision
        j = i + 1
        while cdf[j] != top:
            j += 1
        rows.append(cdf[i + 1 : j + 1])
        i = j + 1
        while i < len(cdf) and cdf[i] == top:  # padding, if any
            i += 1
    return rows


def _check_symbols(symbols: np.ndarray, what: str) -> np.ndarray:
    """The integer symbols (checked as the codec's coders check them) as floats for tfc."""
    return check_symbols(symbols, what).astype(np.float32)


def _run_bounded(fn, what: str, timeout_s: float | None = None):
    """Runs ``fn()`` in a worker thread and gives up after ``timeout_s`` seconds.

    tfc's decoder of escaped values loops until it reads a 1 bit; a string that was not written
    with the same tables (a crafted file, or a decoder whose scales differ) could keep it looping.
    The worker cannot be stopped, but the caller gets an error instead of a hang.
    """
    timeout_s = DECODE_TIMEOUT_S if timeout_s is None else timeout_s
    result: dict = {}

    def target():
        try:
            result["value"] = fn()
        except BaseException as e:  # noqa: BLE001 - re-raised in the caller's thread
            result["error"] = e

    worker = threading.Thread(target=target, name=f"mracnn-{what}", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        raise RangeCodingError(
            f"range decoding of {what} did not finish within {timeout_s:.0f} s "
            "(the bitstream does not match this model's tables)"
        )
    if "error" in result:
        e = result["error"]
        if isinstance(e, tf.errors.OpError):
            raise RangeCodingError(f"range decoding of {what} failed: {e.message.splitlines()[0]}")
        raise e
    return result["value"]


# -------------------------------------------------------------------------------------------------
# z: tables from the JAX factorized prior.


def z_tables(likelihood_fn, prior_params: dict, offsets: np.ndarray, precision: int = PRECISION):
    """Range-coding tables for z from the JAX prior.

    Args:
      likelihood_fn: ``z_hat [L, C] -> P(unit bin around z_hat) [L, C]`` (the model's
        ``z_likelihood``), evaluated at ``m_c + s``.
      prior_params: the factorized prior's parameters (``matrix_k``, ``bias_k``, ``factor_k``).
      offsets: per-channel quantisation offsets ``[C]`` (the model's ``z_offsets()``).

    Returns:
      ``(cdf, cdf_offset)`` in tfc's layout: the flat concatenation of per-channel rows
      ``[-precision, 0, ..., 2^precision]`` (negative precision: escapes enabled) and the first
      symbol of each row.
    """
    offsets = np.asarray(offsets, np.float32)
    minima, lengths = z_support(prior_params, offsets)
    width = int(lengths.max())
    grid = np.arange(width, dtype=np.float32)[:, None] + minima[None, :].astype(np.float32)
    pmf = np.asarray(likelihood_fn(jnp.asarray(grid + offsets[None, :])), np.float64)
    rows = []
    for c in range(len(offsets)):
        p = pmf[: lengths[c], c]
        overflow = max(1.0 - p.sum(), 0.0)
        q = tf.constant(np.concatenate([p, [overflow]]), tf.float32)
        row = tfc.pmf_to_quantized_cdf(q, precision=precision).numpy()
        rows.append(np.concatenate([[-precision], row]).astype(np.int32))
    return np.concatenate(rows).astype(np.int32), minima.astype(np.int32)


class ZCoder:
    """Codes the integer symbols ``round(z - m)`` of the hyper-latent ``[1, h, w, C]``."""

    def __init__(self, cdf: np.ndarray, cdf_offset: np.ndarray, precision: int = PRECISION):
        self.channels = len(cdf_offset)
        self.table = BitTable(Tables.from_tfc_flat(cdf, cdf_offset, precision))
        self.model = tfc.ContinuousBatchedEntropyModel(
            prior_shape=(self.channels,),
            coding_rank=3,
            compression=True,
            stateless=True,
            cdf=tf.constant(cdf, tf.int32),
            cdf_offset=tf.constant(cdf_offset, tf.int32),
            offset_heuristic=False,  # no offset in TF: it is handed integer symbols
            tail_mass=TAIL_MASS,
        )

    @classmethod
    def from_prior(cls, likelihood_fn, prior_params, offsets) -> ZCoder:
        return cls(*z_tables(likelihood_fn, prior_params, offsets))

    def compress(self, symbols: np.ndarray) -> bytes:
        """``symbols [1, h, w, C]`` (integers) -> one range-coded string."""
        if symbols.ndim != 4 or symbols.shape[0] != 1 or symbols.shape[-1] != self.channels:
            raise ValueError(f"z symbols must be [1, h, w, {self.channels}], got {symbols.shape}")
        strings = self.model.compress(tf.constant(_check_symbols(symbols, "z")))
        return bytes(strings.numpy()[0])

    def decompress(self, string: bytes, spatial_shape: tuple[int, int]) -> np.ndarray:
        """One string -> symbols ``[1, h, w, C]`` (int32)."""

        def run():
            out = self.model.decompress(tf.constant([string]), tf.constant(spatial_shape, tf.int32))
            return out.numpy()

        values = _run_bounded(run, "z")
        return np.rint(values).astype(np.int32)

    def table_bits(self, symbols: np.ndarray) -> float:
        """Ideal code length (bits) of ``symbols [..., C]`` under the integer tables."""
        symbols = np.asarray(symbols)
        rows = np.broadcast_to(np.arange(self.channels), symbols.shape)
        return float(self.table.code_length(symbols, rows).sum())


# -------------------------------------------------------------------------------------------------
# y: the indexed Gaussian model.


def scale_fn(indexes):
    """Scale of table entry i: exp(ln 0.11 + i (ln 256 - ln 0.11) / 63)."""
    lo, hi = np.log(gaussian.SCALE_BOUND), np.log(gaussian.SCALE_MAX)
    step = (hi - lo) / (gaussian.NUM_SCALES - 1)
    return tf.math.exp(lo + step * tf.cast(indexes, tf.float32))


class YCoder:
    """Codes integer symbols ``round(y - mu)`` of a slice ``[1, h, w, c]`` given scale indexes."""

    def __init__(self, precision: int = PRECISION):
        self.num_scales = gaussian.NUM_SCALES
        self.model = tfc.LocationScaleIndexedEntropyModel(
            tfc.NoisyNormal,
            num_scales=self.num_scales,
            scale_fn=scale_fn,
            coding_rank=3,
            compression=True,
            stateless=True,
            tail_mass=TAIL_MASS,
            range_coder_precision=precision,
        )
        self.table = BitTable(
            Tables.from_tfc_flat(self.model.cdf.numpy(), self.model.cdf_offset.numpy(), precision)
        )

    def _indexes(self, indexes: np.ndarray) -> np.ndarray:
        return check_scale_indexes(indexes, self.num_scales)

    def compress(self, symbols: np.ndarray, indexes: np.ndarray) -> bytes:
        check_y_shapes(symbols, indexes)
        strings = self.model.compress(
            tf.constant(_check_symbols(symbols, "y")), tf.constant(self._indexes(indexes))
        )
        return bytes(strings.numpy()[0])

    def decompress(self, string: bytes, indexes: np.ndarray, what: str = "y") -> np.ndarray:
        """One string + indexes ``[1, h, w, c]`` -> symbols ``[1, h, w, c]`` (int32)."""
        idx = tf.constant(self._indexes(indexes))

        def run():
            return self.model.decompress(tf.constant([string]), idx).numpy()

        return np.rint(_run_bounded(run, what)).astype(np.int32)

    def table_bits(self, symbols: np.ndarray, indexes: np.ndarray) -> float:
        return float(self.table.code_length(symbols, self._indexes(indexes)).sum())


@functools.lru_cache(maxsize=1)
def y_coder() -> YCoder:
    """The y coder (its tables depend on no model parameter): built once per process."""
    return YCoder()

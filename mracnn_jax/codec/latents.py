"""One latent and its strings: the entropy-coding half of the codec, on the whole image's latent.

Encoder (the decoder's steps marked D, in the same order, with the same jitted pieces):

    s_z = round(h_a(y) - m)                                 m: the z medians of the model file
  D z^ = s_z + m;  (means, scales) = h_s(z^)
    for each slice i of y (M / S channels each):
  D   (mu_i, f_i, support_i) = slice_i(means, scales, y^_0 .. y^_{i-1})
  D   k_i = clip(round(f_i), 0, 63), agreed on through the slice's agreement block
      s_i = round(y_i - mu_i);  string_i = agreement block + range code of s_i with tables k_i
  D   y~_i = s_i + mu_i;  y^_i = refine_i(support_i, y~_i)                   (LRP)

Shapes: y, y^ ``[1, h, w, M]`` (h, w: the padded image's size / 16), s_z ``[1, h/4, w/4, Z]``.

Portability: the range coder's inputs are integers that float noise cannot change. The z tables
and offsets are stored in the model file, the y tables are a package asset, and the scale indexes
are agreed on by ``coding.scale_agreement`` (the decoder's sigma may differ from the encoder's by
1.11e-4 relative). mu and the LRP only move the reconstruction by float noise.

Guard: the file stores SHA-256[:16] of the integer symbols (s_z, s_0..s_{S-1}) and of the scale
indexes (k_0..k_{S-1}), int32 little-endian in C order (``Latents.digests``). The decoder checks
both before synthesis (``check_digests``): a decoder whose entropy parameters differ beyond the
tolerance, or a damaged file, fails with ``LatentMismatchError`` instead of returning a wrong
image. Nothing float is digested.

Strings: every string of a file is non-empty (a y string starts with its agreement block, at least
a byte; an empty z string would be read as every z symbol at its table's lowest value, which the
encoder refuses to write), so the decoder refuses an empty string before any network runs.
Symbols are checked before they are cast to int32 (``coders.check_symbols``): a latent that is
not finite (NaN, from damaged parameters) or beyond ``|s| < 2^24`` is a ``CodecError``.
"""

from __future__ import annotations

import dataclasses
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from mracnn_jax.codec.errors import CodecError, LatentMismatchError
from mracnn_jax.coding import container, scale_agreement
from mracnn_jax.coding.coders import check_symbols
from mracnn_jax.coding.range_coder import RangeCodingError

HYPER_STRIDE = 4  # z is h_a's output: y's size / 4


class Clock:
    """Wall-clock seconds per kind of work: coder ``setup`` (tables, the range coder's start-up),
    ``network`` (JAX, including compilation on a new shape), ``entropy`` (range coding)."""

    def __init__(self):
        self.seconds = {"setup": 0.0, "network": 0.0, "entropy": 0.0}

    def _timed(self, kind: str, fn, args, block: bool = False):
        t = time.perf_counter()
        out = fn(*args)
        if block:
            out = jax.block_until_ready(out)
        self.seconds[kind] += time.perf_counter() - t
        return out

    def setup(self, fn, *args):
        return self._timed("setup", fn, args)

    def network(self, fn, *args):
        return self._timed("network", fn, args, block=True)

    def entropy(self, fn, *args):
        return self._timed("entropy", fn, args)


@dataclasses.dataclass
class Latents:
    """One coded latent: its strings and the quantities both sides derive from them."""

    z_string: bytes
    y_strings: list
    z_int: np.ndarray  # int32 [1, h/4, w/4, Z]
    z_hat: np.ndarray  # float32, s_z + m
    syms: list  # int32 [1, h, w, M/S] per slice
    tildes: list  # float32 per slice, s + mu
    indexes: list  # int32 per slice, the agreed scale indexes
    y_hat: Any  # [1, h, w, M] (JAX array), after the LRP: what g_s sees
    agreement_bytes: int = 0  # of the scale-index agreement blocks in the y strings

    def digests(self) -> tuple[bytes, bytes]:
        """(symbol digest, index digest): the integers of module docstring's guard."""

        def ints(a):
            return np.ascontiguousarray(a, "<i4").tobytes()

        symbols = [ints(self.z_int)] + [ints(s) for s in self.syms]
        return container.digest(symbols), container.digest([ints(k) for k in self.indexes])

    def arrays(self) -> dict:
        """The whole-latent arrays a result reports (``z_symbols`` ... ``scale_indexes``)."""
        return {
            "z_symbols": self.z_int,
            "y_symbols": np.concatenate(self.syms, axis=-1),
            "z_hat": self.z_hat,
            "y_tilde": np.concatenate(self.tildes, axis=-1),
            "y_hat": np.asarray(self.y_hat),
            "scale_indexes": np.concatenate(self.indexes, axis=-1),
        }

    def table_bits(self, zc, yc) -> dict:
        """The ideal code length of the symbols under the coding tables, per stream."""
        z_table = zc.table_bits(self.z_int)
        y_table = [yc.table_bits(s, k) for s, k in zip(self.syms, self.indexes)]
        return {"z_table": z_table, "y_table": y_table, "table": z_table + sum(y_table)}


def _not_coded(e: Exception) -> CodecError:
    return CodecError(
        f"cannot code this image: {e}; the model computes non-finite or far out-of-range "
        "latents (use an intact model file)"
    )


def encode(model, y, zc, yc, clock: Clock) -> Latents:
    """Range-codes the latent ``y [1, h, w, M]`` (the encoder of the module docstring). Raises
    ``CodecError`` (one line) where a symbol is not finite or out of the coder's range."""
    try:
        return _encode(model, y, zc, yc, clock)
    except (RangeCodingError, scale_agreement.AgreementError) as e:
        raise _not_coded(e) from None


def _encode(model, y, zc, yc, clock: Clock) -> Latents:
    z_int = check_symbols(np.asarray(clock.network(model.hyper_analysis, y)), "z")
    z_hat = z_int.astype(np.float32) + model.offsets
    z_string = clock.entropy(zc.compress, z_int)
    if not z_string:
        raise CodecError(
            "cannot code this image: its z string came out empty (every z symbol at its table's "
            "lowest value), which decoders refuse; the model is degenerate (use an intact model "
            "file)"
        )
    means, scales = clock.network(model.hyper_synthesis, z_hat)

    decoded, strings, syms, tildes, indexes = [], [], [], [], []
    agreement = 0
    for i, y_i in enumerate(np.split(np.asarray(y), model.num_slices, axis=-1)):
        mu, f, support = clock.network(model.slice_parameters, i, means, scales, decoded)
        mu = np.asarray(mu)
        s = np.round(y_i - mu)  # float32, the model's round(y - mu)
        s_int = check_symbols(s, f"y slice {i}")  # NaN and huge values fail before the cast
        idx, block = clock.entropy(scale_agreement.encode, np.asarray(f))
        strings.append(block + clock.entropy(yc.compress, s_int, idx))
        agreement += len(block)
        y_tilde, y_hat_i = clock.network(model.refine, i, support, mu, s)
        decoded.append(y_hat_i)
        syms.append(s_int)
        tildes.append(np.asarray(y_tilde))
        indexes.append(idx)
    y_hat = jnp.concatenate(decoded, axis=-1)
    return Latents(z_string, strings, z_int, z_hat, syms, tildes, indexes, y_hat, agreement)


def decode(model, z_string, y_strings, latent_shape, zc, yc, clock: Clock) -> Latents:
    """The decoder: strings -> symbols and latents; ``latent_shape`` is y's ``(h, w)``. Raises
    ``LatentMismatchError`` (one line) where a string is empty or does not decode, before any
    network runs for an empty one."""
    h, w = latent_shape
    if not z_string:
        raise LatentMismatchError(
            "the file's z string is empty (an encoder writes at least one byte): the file is "
            "damaged or was not written by mracnn-jax"
        )
    for i, string in enumerate(y_strings):
        if not string:
            raise LatentMismatchError(
                f"the file's y slice {i} string is empty (an encoder writes at least its "
                "scale-index block): the file is damaged or was not written by mracnn-jax"
            )
    try:
        z_int = clock.entropy(zc.decompress, z_string, (h // HYPER_STRIDE, w // HYPER_STRIDE))
    except RangeCodingError as e:
        raise LatentMismatchError(f"{e}; the file does not match this model") from None
    z_hat = z_int.astype(np.float32) + model.offsets
    means, scales = clock.network(model.hyper_synthesis, z_hat)
    decoded, syms, tildes, indexes = [], [], [], []
    agreement = 0
    for i, string in enumerate(y_strings):
        mu, f, support = clock.network(model.slice_parameters, i, means, scales, decoded)
        mu, f = np.asarray(mu), np.asarray(f)
        if not np.isfinite(f).all():
            raise LatentMismatchError(
                f"the decoder's scale indexes of y slice {i} are not finite (NaN or infinity): "
                "the model's entropy parameters are broken (use an intact model file)"
            )
        try:
            idx, used = clock.entropy(scale_agreement.decode, f, string)
            s_int = clock.entropy(yc.decompress, string[used:], idx, f"y slice {i}")
        except (RangeCodingError, scale_agreement.AgreementError) as e:
            raise LatentMismatchError(f"{e} (y slice {i})") from None
        agreement += used
        y_tilde, y_hat_i = clock.network(model.refine, i, support, mu, s_int.astype(np.float32))
        decoded.append(y_hat_i)
        syms.append(s_int)
        tildes.append(np.asarray(y_tilde))
        indexes.append(idx)
    y_hat = jnp.concatenate(decoded, axis=-1)
    return Latents(z_string, list(y_strings), z_int, z_hat, syms, tildes, indexes, y_hat, agreement)


def check_digests(bs: container.Bitstream, latents: Latents) -> None:
    """Raises ``LatentMismatchError`` unless the decoded integers are the encoder's."""
    symbol_digest, index_digest = latents.digests()
    if index_digest != bs.index_digest:
        raise LatentMismatchError(
            "the decoder's scale indexes differ from the encoder's (digest mismatch): its entropy "
            "parameters differ by more than the format's tolerance, or the file is damaged"
        )
    if symbol_digest != bs.symbol_digest:
        raise LatentMismatchError(
            "decoded latent symbols differ from the encoder's (digest mismatch): the file does "
            "not match this model's coding tables"
        )

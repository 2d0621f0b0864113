"""GF(2) for the scale agreement: the pseudo-random column of an element, and Gauss–Jordan
elimination on bit-packed rows.

h(i), the m-bit column of element i, is ``splitmix64((i << 8) | w)`` for its 64-bit words
w = 0, 1, ...: splitmix64's output function of ``x + 0x9E3779B97F4A7C15`` (Vigna), wrapping
uint64 arithmetic only, so every machine generates the same bits. Rows are packed with column j
at bit ``j % 64`` of word ``j // 64`` (least significant first). The kernels are numba's where it
is installed (``coding.jit``), plain Python with the same results where not.
"""

from __future__ import annotations

import numpy as np

from mracnn_jax.coding.jit import njit

_U64 = np.uint64
_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MUL1 = np.uint64(0xBF58476D1CE4E5B9)
_MUL2 = np.uint64(0x94D049BB133111EB)


def splitmix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's output function of ``x + golden`` (uint64 in, uint64 out, wrapping)."""
    z = x + _GOLDEN
    z = (z ^ (z >> _U64(30))) * _MUL1
    z = (z ^ (z >> _U64(27))) * _MUL2
    return z ^ (z >> _U64(31))


@njit(cache=True, nogil=True, inline="always")
def _mix(x):
    z = x + _GOLDEN
    z = (z ^ (z >> np.uint64(30))) * _MUL1
    z = (z ^ (z >> np.uint64(27))) * _MUL2
    return z ^ (z >> np.uint64(31))


@njit(cache=True, nogil=True)
def xor_hashes(index, words):
    """XOR over ``index`` (int64 [n]) of h(i): uint64 [words]."""
    acc = np.zeros(words, np.uint64)
    for t in range(index.shape[0]):
        base = np.uint64(index[t]) << np.uint64(8)
        for w in range(words):
            acc[w] ^= _mix(base | np.uint64(w))
    return acc


@njit(cache=True, nogil=True)
def hash_rows(index, words):
    """h(i) for ``index`` (int64 [n]): uint64 [n, words]."""
    out = np.empty((index.shape[0], words), np.uint64)
    for t in range(index.shape[0]):
        base = np.uint64(index[t]) << np.uint64(8)
        for w in range(words):
            out[t, w] = _mix(base | np.uint64(w))
    return out


@njit(cache=True, nogil=True)
def eliminate(mat, ncols, max_rank):
    """Gauss–Jordan over GF(2), in place, on the bit-packed rows ``mat`` (uint64 [m, words],
    column j at bit j % 64 of word j // 64), pivoting on columns 0, 1, ... in order until
    ``max_rank`` pivots. Returns (rank, the pivot columns); pivot row i holds column pivots[i]."""
    m, nw = mat.shape
    pivots = np.empty(m, np.int64)
    rank = 0
    for c in range(ncols):
        if rank >= max_rank:
            break
        w = c >> 6
        bit = np.uint64(1) << np.uint64(c & 63)
        p = -1
        for i in range(rank, m):
            if (mat[i, w] & bit) != 0:
                p = i
                break
        if p < 0:
            continue
        if p != rank:
            for x in range(nw):
                tmp = mat[p, x]
                mat[p, x] = mat[rank, x]
                mat[rank, x] = tmp
        for i in range(m):
            if i != rank and (mat[i, w] & bit) != 0:
                for x in range(nw):
                    mat[i, x] ^= mat[rank, x]
        pivots[rank] = c
        rank += 1
    return rank, pivots[:rank].copy()


def to_bits(words: np.ndarray, m: int) -> np.ndarray:
    """uint64 ``[..., W]`` -> bool ``[..., m]`` (bit j of word j // 64, LSB first)."""
    shifts = np.arange(64, dtype=_U64)
    bits = (words[..., :, None] >> shifts) & _U64(1)
    return bits.reshape(*words.shape[:-1], 64 * words.shape[-1])[..., :m].astype(bool)


def pack_rows(bits: np.ndarray) -> np.ndarray:
    """bool [m, c] -> uint64 [m, ceil(c / 64)], column j at bit j % 64 of word j // 64."""
    m, c = bits.shape
    nw = max(1, -(-c // 64))
    padded = np.zeros((m, nw * 64), bool)
    padded[:, :c] = bits
    return np.packbits(padded, axis=1, bitorder="little").view("<u8").astype(_U64)


def unpack_rows(mat: np.ndarray, c: int) -> np.ndarray:
    """``pack_rows``' inverse: uint64 [m, W] -> bool [m, c]."""
    bits = np.unpackbits(mat.astype("<u8").view(np.uint8), axis=1, bitorder="little")
    return bits[:, :c].astype(bool)

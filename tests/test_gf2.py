"""mracnn_jax.coding.gf2: the scale agreement's hash (splitmix64) and GF(2) elimination."""

from __future__ import annotations

import numpy as np

from mracnn_jax.coding import gf2


def test_hash_is_splitmix64():
    # splitmix64 seeded with 0 (Vigna's reference) gives these first outputs for states 1, 2, 3
    # times the golden gamma; the function here is the output step of state x + gamma.
    golden = 0x9E3779B97F4A7C15
    states = np.array([0, golden, (2 * golden) % 2**64], np.uint64)
    out = gf2.splitmix64(states)
    assert [int(v) for v in out] == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F]


def test_compiled_hashes_equal_the_reference():
    index = np.array([0, 1, 7, 123_456, 4_194_303, 2**40], np.int64)
    words = 3
    keys = (index.astype(np.uint64)[:, None] << np.uint64(8)) | np.arange(words, dtype=np.uint64)
    with np.errstate(over="ignore"):
        ref = gf2.splitmix64(keys)
    assert np.array_equal(gf2.hash_rows(index, words), ref)
    assert np.array_equal(gf2.xor_hashes(index, words), np.bitwise_xor.reduce(ref, axis=0))


def test_eliminate_gives_the_reduced_form():
    rng = np.random.default_rng(5)
    a = rng.integers(0, 2, size=(40, 90)).astype(bool)
    mat = gf2.pack_rows(a)
    rank, piv = gf2.eliminate(mat, 90, 30)
    reduced = gf2.unpack_rows(mat, 90)
    assert rank == 30 and list(piv) == sorted(piv)
    assert np.array_equal(reduced[:, piv], np.eye(40, 30, dtype=bool))  # pivots: unit columns
    # Row operations only: the reduced rows span the same space (same rank over GF(2)).
    both = gf2.pack_rows(np.concatenate([a, reduced]))
    assert gf2.eliminate(both, 90, 80)[0] == gf2.eliminate(gf2.pack_rows(a), 90, 80)[0]

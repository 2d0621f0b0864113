"""Scale-index agreement (mracnn_jax.coding.scale_agreement): the decoder recovers the encoder's
indexes from its own noisy f and the syndrome block, or fails loudly."""

from __future__ import annotations

import numpy as np
import pytest

from mracnn_jax.coding import scale_agreement as sa


def test_hash_is_splitmix64():
    # splitmix64 seeded with 0 (Vigna's reference) gives these first outputs for states 1, 2, 3
    # times the golden gamma; the function here is the output step of state x + gamma.
    golden = 0x9E3779B97F4A7C15
    states = np.array([0, golden, (2 * golden) % 2**64], np.uint64)
    out = sa._splitmix64(states)
    assert [int(v) for v in out] == [0xE220A8397B1DCDAF, 0x6E789E6AA1B965F4, 0x06C45D188009454F]


@pytest.mark.parametrize("shape", [(1, 3, 5, 2), (1, 32, 48, 32), (1, 40, 40, 48)])
def test_noise_within_tolerance_gives_the_encoders_indexes(shape):
    rng = np.random.default_rng(sum(shape))
    f = rng.uniform(-4.0, 68.0, size=shape).astype(np.float32)
    k, block = sa.encode(f)
    assert np.array_equal(k, np.clip(np.round(f), 0, 63))
    for trial in range(3):
        noise = rng.uniform(-0.95, 0.95, size=shape) * sa.EPSILON
        f_dec = (f.astype(np.float64) + noise).astype(np.float32)
        k_dec, used = sa.decode(f_dec, block + b"\x00\xff tail")
        assert used == len(block)
        assert np.array_equal(k_dec, k)
    if f.size > 10_000:  # the noise really moved indexes: plain rounding would be wrong
        assert (np.clip(np.round(f_dec), 0, 63) != k).sum() > 0


def test_several_groups_and_the_cost():
    rng = np.random.default_rng(7)
    shape = (1, 64, 64, 40)  # 163,840 elements: three syndrome groups
    f = rng.uniform(0.0, 63.0, size=shape)
    k, block = sa.encode(f)
    lo, hi = sa.candidates(f.reshape(-1))
    ambiguous = int((lo != hi).sum())
    groups = -(-f.size // sa.GROUP)
    assert groups == 3
    # About one bit per ambiguous element, plus the margin and a gamma-coded count per group.
    overhead = groups * (sa.MARGIN + 2 * int(np.log2(ambiguous)) + 1)
    assert ambiguous <= 8 * len(block) <= ambiguous + overhead + 8
    f_dec = f + rng.uniform(-1, 1, size=shape) * 0.9 * sa.EPSILON
    assert np.array_equal(sa.decode(f_dec, block)[0], k)


def test_exact_f_decodes_and_clipped_ends_are_not_ambiguous():
    f = np.array([-0.5, -0.4999, 0.4995, 62.5004, 63.5, 70.0, 31.5], np.float32)
    lo, hi = sa.candidates(f)
    assert list(lo != hi) == [False, False, True, True, False, False, True]
    k, block = sa.encode(f)
    assert np.array_equal(sa.decode(f, block)[0], k)


def test_noise_beyond_tolerance_fails_loudly_or_is_caught_by_the_digest():
    rng = np.random.default_rng(3)
    f = rng.uniform(0.0, 63.0, size=(1, 32, 48, 32))
    k, block = sa.encode(f)
    f_dec = f + rng.uniform(-1, 1, size=f.shape) * 20 * sa.EPSILON
    try:
        k_dec, _ = sa.decode(f_dec, block)
    except sa.AgreementError as e:
        assert "tolerance" in str(e)
    else:  # an undetected disagreement is left to the file's index digest
        assert not np.array_equal(k_dec, k)


def test_truncated_or_garbage_block():
    f = np.random.default_rng(1).uniform(0.0, 63.0, size=(1, 16, 16, 32))
    _, block = sa.encode(f)
    with pytest.raises(sa.AgreementError, match="truncated"):
        sa.decode(f, block[: len(block) // 2])
    with pytest.raises(sa.AgreementError):
        sa.decode(f, b"\x00" * 8)  # a length code of more than 32 zero bits


@pytest.mark.parametrize("count", [1, 2])
def test_one_or_two_outliers_beyond_epsilon_are_found(count):
    """An element the decoder is sure of but which moved by up to OUTLIER_EPSILON across a
    boundary (noise compounding along the slice chain) is found with the spare syndrome rows."""
    rng = np.random.default_rng(11 + count)
    f = rng.uniform(0.0, 63.0, size=(1, 32, 48, 32))
    flat = f.reshape(-1)
    far = np.flatnonzero(np.abs(flat - np.floor(flat) - 0.5) > 0.1)[:count]
    flat[far] = np.floor(flat[far]) + 0.5 + 2.5e-3  # just above a boundary
    k, block = sa.encode(f)
    f_dec = f + rng.uniform(-1, 1, size=f.shape) * 0.9 * sa.EPSILON
    f_dec.reshape(-1)[far] -= 5e-3  # now 2.5e-3 below it: sure, and wrong
    assert (sa.rounded(f_dec).reshape(-1)[far] != k.reshape(-1)[far]).all()
    assert np.array_equal(sa.decode(f_dec, block)[0], k)

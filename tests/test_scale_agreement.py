"""Scale-index agreement (mracnn_jax.coding.scale_agreement): the decoder recovers the encoder's
indexes from its own noisy f and the syndrome block, or fails loudly."""

from __future__ import annotations

import numpy as np
import pytest

from mracnn_jax.coding import scale_agreement as sa


def _ambiguous(f) -> int:
    lo, hi = sa.candidates(np.ravel(f))
    return int((lo != hi).sum())


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


def test_worst_case_noise_within_tolerance():
    """Noise that moves every element it can across its boundary (each ambiguous element within
    half the tolerance is mirrored across it): the decoder's rounding is wrong for all of them."""
    rng = np.random.default_rng(21)
    f = rng.uniform(0.0, 63.0, size=(1, 32, 48, 32))
    k, block = sa.encode(f)
    t, b = sa._boundary(f.reshape(-1))
    mirror = t < 0.45 * sa.EPSILON
    f_dec = f.reshape(-1).copy()
    f_dec[mirror] = 2 * (b[mirror] + 0.5) - f_dec[mirror]
    wrong = sa.rounded(f_dec) != k.reshape(-1)
    assert wrong.sum() > 30 and (wrong == mirror).all()
    assert np.array_equal(sa.decode(f_dec.reshape(f.shape), block)[0], k)


def test_float_noise_and_exact_f():
    rng = np.random.default_rng(8)
    f = rng.uniform(-1.0, 64.0, size=(1, 24, 24, 32))
    k, block = sa.encode(f)
    assert np.array_equal(sa.decode(f, block)[0], k)
    tiny = f * (1 + rng.uniform(-1e-6, 1e-6, size=f.shape))
    assert np.array_equal(sa.decode(tiny, block)[0], k)


def test_exact_f_decodes_and_clipped_ends_are_not_ambiguous():
    f = np.array([-0.5, -0.4999, 0.4996, 62.5004, 63.5, 70.0, 31.5], np.float32)
    lo, hi = sa.candidates(f)
    assert list(lo != hi) == [False, False, True, True, False, False, True]
    k, block = sa.encode(f)
    assert np.array_equal(sa.decode(f, block)[0], k)


def test_cost_is_one_bit_per_ambiguous_element_plus_a_few():
    """One group: the ambiguous count, MARGIN to SPARE_MAX spare rows (what brings the block to
    BUDGET of the estimated rate), a short length code and the bits up to a byte boundary (which
    are rows too)."""
    rng = np.random.default_rng(7)
    cases = [  # few bits (most sigmas at the bottom of the table): MARGIN; many: SPARE_MAX
        (rng.uniform(-40.0, 12.0, size=(1, 16, 32, 32)), sa.MARGIN),
        (rng.uniform(0.0, 63.0, size=(1, 64, 64, 40)), sa.SPARE_MAX),
    ]
    for f, spare in cases:
        rate = float(sa._table_bits()[sa.rounded(f).reshape(-1)].sum())
        u = _ambiguous(f)
        assert sa._spare(rate, u) == spare
        k, block = sa.encode(f)
        assert u + spare <= 8 * len(block) <= u + spare + 2 * int(np.log2(u + 16)) + 8
        f_dec = f + rng.uniform(-1, 1, size=f.shape) * 0.9 * sa.EPSILON
        assert np.array_equal(sa.decode(f_dec, block)[0], k)


def test_spare_rows_follow_the_budget():
    assert sa._spare(0.0, 0) == sa.MARGIN
    assert sa._spare(1e9, 10) == sa.SPARE_MAX
    u, bits = 70, 30_000.0  # a Kodak slice at the lowest rate: its ambiguous count ~ the budget
    assert sa._spare(bits, u) == max(sa.MARGIN, int(sa.BUDGET * bits) - u - 8)


def test_table_bits_estimate_the_rate():
    bits = sa._table_bits()
    assert bits[0] < 1e-3 and abs(bits[-1] - np.log2(256 * np.sqrt(2 * np.pi * np.e))) < 0.01
    assert (np.diff(bits) > 0).all()


def test_several_groups():
    """Many ambiguous elements (f at boundaries): the slice is cut into groups of about
    GROUP_AMBIGUOUS each, and decodes under noise within the tolerance."""
    rng = np.random.default_rng(13)
    shape = (1, 16, 16, 40)  # 10,240 elements
    f = rng.integers(0, 63, size=shape) + 0.5 + rng.uniform(-1, 1, size=shape) * 0.5 * sa.EPSILON
    f.reshape(-1)[::3] = rng.uniform(0.0, 63.0, size=f.size)[::3]  # some unambiguous ones
    u = _ambiguous(f)
    k, block = sa.encode(f)
    lo, hi = sa.candidates(f.reshape(-1))
    bounds, needs = sa._plan(lo != hi, sa._table_bits()[k.reshape(-1)])
    assert len(bounds) >= u // sa.GROUP_AMBIGUOUS >= 20
    assert max(needs) <= sa.MAX_GROUP_ROWS
    assert u < 8 * len(block) < u + len(bounds) * (sa.SPARE_MAX + 24) + 16
    for trial in range(2):
        f_dec = f + rng.uniform(-0.9, 0.9, size=shape) * sa.EPSILON
        k_dec, used = sa.decode(f_dec, block + b"\x12")
        assert used == len(block) and np.array_equal(k_dec, k)


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
    with pytest.raises(sa.AgreementError, match="length code"):
        sa.decode(f, b"\x00" * 8)  # a length code of more than 32 zero bits
    with pytest.raises(sa.AgreementError, match="groups"):
        sa.decode(f[..., :1, :1, :1], b"\xa0\x00")  # w = 0, then 3 groups of 1 element


@pytest.mark.parametrize("count", [1, 2])
def test_one_or_two_outliers_beyond_epsilon_are_found(count):
    """An element the decoder is sure of but which moved by up to OUTLIER_T across a boundary
    (noise compounding along the slice chain) is found with the rows kept as checks."""
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


def test_rows_beyond_the_nearest_elements_are_used_for_near_outliers():
    """Elements that cross their boundary and land a little beyond the tolerance on the decoder's
    side: the decoder solves for the m - c elements nearest a boundary, not only for those within
    EPSILON, and finds them there."""
    rng = np.random.default_rng(4)
    f = rng.uniform(0.0, 63.0, size=(1, 32, 48, 32))
    flat = f.reshape(-1)
    t, b = sa._boundary(flat)
    out = np.flatnonzero((t > 0.2) & (t < 0.3))[:6]
    side = rng.choice([-1.0, 1.0], size=len(out))
    flat[out] = b[out] + 0.5 + side * 0.55 * sa.EPSILON  # ambiguous for the encoder
    k, block = sa.encode(f)
    f_dec = f + rng.uniform(-1, 1, size=f.shape) * 0.9 * sa.EPSILON
    f_dec.reshape(-1)[out] = b[out] + 0.5 - side * 1.15 * sa.EPSILON  # across, moved 1.7 EPSILON
    t_dec, _ = sa._boundary(f_dec.reshape(-1))
    assert (sa.rounded(f_dec).reshape(-1)[out] != k.reshape(-1)[out]).all()
    assert (t_dec[out] > sa.EPSILON).all()  # the decoder's rounding looks sure
    assert (t_dec < t_dec[out].max()).sum() < 8 * len(block) - sa.CHECKS  # among the m - c nearest
    assert np.array_equal(sa.decode(f_dec, block)[0], k)


def test_more_disagreements_than_rows_fail_loudly_or_are_caught():
    """The failure mode: far more elements move than the syndrome can locate."""
    rng = np.random.default_rng(9)
    f = rng.uniform(0.0, 63.0, size=(1, 32, 48, 32))
    k, block = sa.encode(f)
    flat = f.reshape(-1).copy()
    t, b = sa._boundary(flat)
    near = np.flatnonzero((t > 1.5 * sa.EPSILON) & (t < 3e-3))[:60]  # 60 sure elements flip
    flat[near] = 2 * (b[near] + 0.5) - flat[near]
    try:
        k_dec, _ = sa.decode(flat.reshape(f.shape), block)
    except sa.AgreementError as e:
        assert "tolerance" in str(e)
    else:
        assert not np.array_equal(k_dec, k)  # the index digest refuses the file

"""mracnn_jax.coding.range_coder: byte-for-byte parity with tensorflow-compression 2.14 and round trips.

The parity tests (``tf`` marker) need tensorflow-compression and skip without it (.venv-new); the
round-trip, validation and corrupt-string tests need only numpy and numba and run in both envs.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from mracnn_jax.coding import range_coder as rc

TFC_REASON = "tensorflow_compression is not importable here: no byte comparison with tfc"


@pytest.fixture(scope="module")
def tfc_env():
    pytest.importorskip("tensorflow_compression", reason=TFC_REASON)
    import tensorflow as tf
    import tensorflow_compression as tfc
    from tensorflow_compression.python.ops import gen_ops

    from mracnn_jax.coding import tfc_models  # hides the GPUs from TensorFlow (before any op)

    return tf, tfc, gen_ops, tfc_models


# -------------------------------------------------------------------------------------------------
# Random tables and symbols.


def random_pmf(rng, length: int) -> np.ndarray:
    """A pmf over ``length`` symbols plus the escape bin's mass, last (float32)."""
    kind = rng.integers(3)
    if kind == 0:
        p = rng.dirichlet(np.full(length, rng.choice([0.2, 1.0, 5.0])))
    elif kind == 1:  # a discretised bell, possibly very peaked
        x = np.arange(length) - rng.uniform(0, length)
        p = np.exp(-0.5 * (x / rng.uniform(0.2, length / 2 + 0.5)) ** 2)
    else:
        p = rng.random(length) ** 4
    p = p / p.sum() * (1 - rng.choice([0.0, 1e-6, 2.0**-8, 0.05, 0.3]))
    return np.append(p, max(1.0 - p.sum(), 0.0)).astype(np.float32)


def numpy_cdf(pmf: np.ndarray, precision: int) -> np.ndarray:
    """A simple quantiser (not tfc's): every bin at least 1, the sum fixed on the largest bin."""
    top = 1 << precision
    freq = np.maximum(np.rint(pmf.astype(np.float64) * top).astype(np.int64), 1)
    while freq.sum() != top:
        k = int(np.argmax(freq))
        freq[k] = max(freq[k] - (freq.sum() - top), 1)
        if freq.sum() < top:
            freq[k] += top - freq.sum()
    return np.concatenate([[0], np.cumsum(freq)])


def random_symbols(rng, tables: rc.Tables, rows: np.ndarray, far_bits: int) -> np.ndarray:
    """Symbols drawn from each element's row, about 10% out of range (near and far, both signs)."""
    v = np.empty(rows.shape, np.int64)
    for r in np.unique(rows):
        sel = rows == r
        freq = np.diff(tables.cdf[r, : tables.sizes[r]]).astype(np.float64)
        v[sel] = rng.choice(len(freq), size=int(sel.sum()), p=freq / freq.sum())
    m = (tables.sizes[rows] - 2).astype(np.int64)
    u = rng.random(rows.shape)
    near = np.where(
        rng.random(rows.shape) < 0.5,
        -rng.integers(1, 4, rows.shape),
        m + rng.integers(0, 4, rows.shape),
    )
    far = rng.integers(1, 2**far_bits, rows.shape) >> rng.integers(0, far_bits, rows.shape)
    far = np.where(rng.random(rows.shape) < 0.5, -far, m + far)
    v = np.where(u < 0.05, near, np.where(u < 0.1, far, v))
    v = np.where(tables.escapes[rows], v, np.clip(v, 0, m))  # rows without escapes: in range
    return v + tables.offsets[rows]


def straddling_symbols(rng, tables: rc.Tables, row: int, n: int):
    """Symbols of one row that keep the encoder's interval across 2^32 for many steps in a row
    (tfc's delayed word with pending 0x00/0xFF bytes, ``delay >> 16`` > 0), chosen greedily on a
    Python run of the encoder's state (``_put.py_func``). Returns (symbols, most pending bytes)."""
    put, mask = rc._put.py_func, 0xFFFFFFFF
    cdf = tables.cdf[row, : tables.sizes[row]].astype(np.int64)
    p, m = int(tables.precisions[row]), int(tables.sizes[row]) - 2
    buf = np.zeros(2 * n + 8, np.uint8)
    pos, base, sm1, delay, most, out = 0, 0, mask, 0, 0, []
    for _ in range(n):
        size = sm1 + 1
        a, b = (size * cdf[:m]) >> p, ((size * cdf[1 : m + 1]) >> p) - 1
        keep = np.flatnonzero((base + a <= mask) & (base + b > mask))
        v = int(keep[0]) if delay and len(keep) and rng.random() < 0.9 else int(rng.integers(m))
        pos, base, sm1, delay = put(buf, pos, base, sm1, delay, cdf[v], cdf[v + 1], p)
        most = max(most, delay >> 16)
        out.append(v)
    return np.array(out) + tables.offsets[row], most


def carry_tables() -> rc.Tables:
    """Rows of many small, unequal bins (a step shrinks the interval by 2^-11 or more)."""
    freq = np.random.default_rng(8).integers(1, 32, 4000)
    p16 = np.concatenate([[0], np.cumsum(freq), [1 << 16]])  # the last, big bin escapes
    p12 = np.concatenate([[0], np.cumsum(freq[:400] % 3 + 1), [1 << 12]])
    return rc.Tables.from_tfc_flat(np.concatenate([[-16], p16, [-12], p12, [16], p16]), [-7, 0, 3])


def round_trip(symbols, rows, tables) -> bytes:
    data = rc.encode(symbols, rows, tables)
    np.testing.assert_array_equal(rc.decode(data, rows, tables), symbols)
    return data


# -------------------------------------------------------------------------------------------------
# Parity with tensorflow-compression.


def tfc_quantised_table(rng, tfc, num_rows, max_len, precision, pad=False, plain=()):
    parts = []
    for k in range(num_rows):
        row = tfc.pmf_to_quantized_cdf(
            random_pmf(rng, int(rng.integers(1, max_len + 1))), precision=precision
        ).numpy()
        parts.append(np.concatenate([[precision if k in plain else -precision], row]))
        if pad and rng.random() < 0.3:
            parts.append(np.full(rng.integers(1, 4), 1 << precision))
    return np.concatenate(parts).astype(np.int32)


@pytest.mark.tf
def test_matches_tfc_batched_model(tfc_env):
    """The z path: ContinuousBatchedEntropyModel(prior_shape=(C,), coding_rank=3, cdf=...)."""
    tf, tfc, _, _ = tfc_env
    rng = np.random.default_rng(1)
    cases = 0
    for _ in range(90):
        channels = int(rng.integers(1, 13))
        precision = 12 if rng.random() < 0.7 else int(rng.integers(8, 17))
        flat = tfc_quantised_table(rng, tfc, channels, 60, precision)
        offsets = rng.integers(-20, 6, channels).astype(np.int32)
        tables = rc.Tables.from_tfc_flat(flat, offsets, precision)
        model = tfc.ContinuousBatchedEntropyModel(
            prior_shape=(channels,),
            coding_rank=3,
            compression=True,
            stateless=True,
            cdf=tf.constant(flat),
            cdf_offset=tf.constant(offsets),
            offset_heuristic=False,
            tail_mass=2**-8,
        )
        batch, h, w = 64, int(rng.integers(1, 6)), int(rng.integers(1, 6))
        rows = np.broadcast_to(np.arange(channels), (batch, h, w, channels))
        symbols = random_symbols(rng, tables, rows, far_bits=23)  # float32-exact
        strings = model.compress(tf.constant(symbols.astype(np.float32))).numpy()
        for b in range(batch):
            assert round_trip(symbols[b], rows[b], tables) == strings[b]
        cases += batch
    assert cases >= 5000


@pytest.mark.tf
def test_matches_tfc_index_kernels(tfc_env):
    """The y path's ops (entropy_encode_index on a flat table, offsets gathered by index), with
    random tables: padding between rows, rows without escapes, a single-bin (all-escape) row."""
    _, tfc, gen_ops, _ = tfc_env
    rng = np.random.default_rng(2)
    cases = 0
    for i in range(90):
        num_rows = int(rng.integers(1, 20))
        precision = 12 if rng.random() < 0.7 else int(rng.integers(8, 17))
        plain = set(rng.choice(num_rows, size=int(rng.integers(0, 3)))) if i % 3 == 0 else ()
        flat = tfc_quantised_table(rng, tfc, num_rows, 80, precision, pad=True, plain=plain)
        offsets = rng.integers(-40, 10, num_rows + (i % 5 == 0)).astype(np.int32)
        if i % 5 == 0:
            flat = np.concatenate([flat, [-precision, 0, 1 << precision]]).astype(np.int32)
        tables = rc.Tables.from_tfc_flat(flat, offsets, precision)
        batch, shape = 64, tuple(int(n) for n in rng.integers(1, 6, 3))
        rows = rng.integers(0, tables.num_rows, (batch, *shape))
        symbols = random_symbols(rng, tables, rows, far_bits=29)
        handle = gen_ops.create_range_encoder([batch], flat)
        values = (symbols - offsets[rows]).astype(np.int32)
        handle = gen_ops.entropy_encode_index(handle, rows.astype(np.int32), values)
        strings = gen_ops.entropy_encode_finalize(handle).numpy()
        for b in range(batch):
            assert round_trip(symbols[b], rows[b], tables) == strings[b]
        cases += batch
    assert cases >= 5000


@pytest.mark.tf
def test_matches_tfc_y_model(tfc_env):
    """The real y model (tfc_models.YCoder's tables), random scale indexes, Gaussian symbols."""
    tf, _, _, tfc_models = tfc_env
    yc = tfc_models.y_coder()
    tables = rc.Tables.from_tfc_flat(yc.model.cdf.numpy(), yc.model.cdf_offset.numpy(), 12)
    assert tables.num_rows == yc.num_scales
    scales = tfc_models.scale_fn(np.arange(yc.num_scales)).numpy()
    rng = np.random.default_rng(3)
    for shape in [(256, 3, 4, 5), (8, 16, 12, 24)]:
        idx = rng.integers(0, yc.num_scales, shape)
        symbols = np.rint(rng.normal(size=shape) * scales[idx]).astype(np.int64)
        wild = rng.random(shape) < 0.05
        symbols = np.where(wild, rng.integers(-(2**23), 2**23, shape), symbols)
        strings = yc.model.compress(
            tf.constant(symbols.astype(np.float32)), tf.constant(idx.astype(np.int32))
        ).numpy()
        for b in range(shape[0]):
            assert round_trip(symbols[b], idx[b], tables) == strings[b]
    one = rc.encode(symbols[:1], idx[:1], tables)
    np.testing.assert_array_equal(yc.decompress(one, idx[:1]), symbols[:1])  # tfc decodes ours


@pytest.mark.tf
def test_matches_tfc_long_carries(tfc_env):
    """Long runs of the straddling state (pending bytes), rare with random symbols."""
    _, _, gen_ops, _ = tfc_env
    rng = np.random.default_rng(6)
    tables = carry_tables()
    flat = tables.to_tfc_flat()
    most = 0
    for row in range(tables.num_rows):
        runs = [straddling_symbols(rng, tables, row, 300) for _ in range(12)]
        most = max([most] + [r[1] for r in runs])
        symbols = np.stack([r[0] for r in runs])
        rows = np.full(symbols.shape, row)
        handle = gen_ops.create_range_encoder([len(runs)], flat)
        values = (symbols - tables.offsets[rows]).astype(np.int32)
        handle = gen_ops.entropy_encode_index(handle, rows.astype(np.int32), values)
        strings = gen_ops.entropy_encode_finalize(handle).numpy()
        for b in range(len(runs)):
            assert round_trip(symbols[b], rows[b], tables) == strings[b]
    assert most >= 6


# -------------------------------------------------------------------------------------------------
# Without TensorFlow.


def numpy_tables(rng, num_rows, max_len, precision=12, escapes=True):
    rows = [
        numpy_cdf(random_pmf(rng, int(rng.integers(1, max_len + 1))), precision)
        for _ in range(num_rows)
    ]
    return rc.Tables.from_rows(rows, rng.integers(-50, 10, num_rows), precision, escapes)


def test_round_trip_numpy_tables():
    rng = np.random.default_rng(4)
    for i in range(300):
        precision = int(rng.integers(8, 17))
        tables = numpy_tables(rng, int(rng.integers(1, 30)), 100, precision, escapes=i % 4 > 0)
        again = rc.Tables.from_tfc_flat(tables.to_tfc_flat(), tables.offsets, precision)
        np.testing.assert_array_equal(again.cdf, tables.cdf)
        shape = tuple(int(n) for n in rng.integers(0 if i % 50 == 0 else 1, 8, 3))
        rows = rng.integers(0, tables.num_rows, shape)
        round_trip(random_symbols(rng, tables, rows, far_bits=29), rows, tables)


def test_round_trip_long_carries():
    rng = np.random.default_rng(7)
    tables = carry_tables()
    for row in range(tables.num_rows):
        symbols, most = straddling_symbols(rng, tables, row, 2000)
        assert most >= 6
        round_trip(symbols, np.full(symbols.shape, row), tables)


def test_escape_only_row_and_limits():
    tables = rc.Tables.from_rows([[0, 4096], [0, 1, 4096]], [0, -3], 12)
    values = np.array([0, 1, -1, 5, -(2**30) + 1, 2**30 - 2, 7, -7])
    for r in (0, 1):
        rows = np.full(values.shape, r)
        round_trip(values + tables.offsets[r], rows, tables)
    with pytest.raises(rc.RangeCodingError, match="2\\^30"):
        rc.encode(np.array([2**30]), np.array([0]), tables)
    with pytest.raises(rc.RangeCodingError, match="int32"):
        rc.encode(np.array([2**62]), np.array([0]), tables)
    with pytest.raises(rc.RangeCodingError, match="row index"):
        rc.encode(np.array([0]), np.array([2]), tables)
    with pytest.raises(rc.RangeCodingError, match="row index"):
        rc.decode(b"", np.array([-1]), tables)
    assert rc.encode(np.zeros(0, int), np.zeros(0, int), tables) == b""
    assert rc.decode(b"", np.zeros((0, 3), int), tables).shape == (0, 3)


def test_rows_without_escape_reject_out_of_range():
    tables = rc.Tables.from_rows([[0, 100, 4000, 4096]], [-1], 12, escapes=False)
    round_trip(np.array([-1, 0, 1, 1, -1]), np.zeros(5, int), tables)
    for bad in (-2, 2):
        with pytest.raises(rc.RangeCodingError, match="no escape"):
            rc.encode(np.array([bad]), np.array([0]), tables)


def test_zero_probability_symbol_raises():
    tables = rc.Tables.from_rows([[0, 100, 100, 4096]], [0], 12)
    with pytest.raises(rc.RangeCodingError, match="zero probability"):
        rc.encode(np.array([1]), np.array([0]), tables)


def test_table_validation():
    with pytest.raises(ValueError):
        rc.Tables.from_tfc_flat([-12, 0, 5, 4095], [0], 12)  # never reaches 2^12
    with pytest.raises(ValueError):
        rc.Tables.from_tfc_flat([-12, 1, 4096], [0])  # does not start with 0
    with pytest.raises(ValueError):
        rc.Tables.from_tfc_flat([-12, 0, 9, 5, 4096], [0])  # not monotonic
    with pytest.raises(ValueError):
        rc.Tables.from_tfc_flat([-12, 0, 4096], [0, 1])  # one row, two offsets
    with pytest.raises(ValueError):
        rc.Tables.from_tfc_flat([-10, 0, 1024], [0], 12)  # not the stated precision
    t = rc.Tables.from_tfc_flat([-12, 0, 7, 4096, 4096, 4096, 3, 0, 8], [0, 5])  # padding
    assert t.sizes.tolist() == [3, 2] and t.escapes.tolist() == [True, False]
    with pytest.raises(TypeError):
        rc.encode(np.array([0.5]), np.array([0]), t)


def test_corrupt_strings_fail_fast():
    """Random, truncated and bit-flipped strings: each decode returns (garbage) or raises
    RangeCodingError within a second, never hangs or crashes."""
    rng = np.random.default_rng(5)
    tables = numpy_tables(rng, 16, 400)
    peaked = rc.Tables.from_rows([[0, 1, 4096], [0, 4095, 4096]], [0, 0], 12)
    rows = rng.integers(0, 16, (8, 8, 8))
    good = round_trip(random_symbols(rng, tables, rows, far_bits=29), rows, tables)
    inputs = [(rng.bytes(int(rng.integers(0, 300))), tables) for _ in range(300)]
    inputs += [(good[: int(rng.integers(0, len(good)))], tables) for _ in range(50)]
    for _ in range(50):
        flipped = bytearray(good)
        flipped[int(rng.integers(len(good)))] ^= 1 << int(rng.integers(8))
        inputs.append((bytes(flipped), tables))
    inputs += [(bytes([fill]) * 64, t) for fill in (0, 255) for t in (tables, peaked)]
    raised = 0
    for data, t in inputs:
        r = rows if t is tables else rng.integers(0, 2, rows.shape)
        start = time.perf_counter()
        try:
            out = rc.decode(data, r, t)
            assert out.shape == r.shape
        except rc.RangeCodingError as e:
            assert "\n" not in str(e)
            raised += 1
        assert time.perf_counter() - start < 1.0
    assert raised > 0
    with pytest.raises(rc.RangeCodingError, match="final state"):
        rc.decode(good + b"\x01", rows, tables)  # bytes left over


def test_imports_no_tensorflow():
    code = (
        "import sys, numpy as np; from mracnn_jax.coding import range_coder as rc; "
        "t = rc.Tables.from_rows([[0, 9, 4096]], [0], 12); "
        "assert rc.decode(rc.encode(np.arange(-3, 4), np.zeros(7, int), t), np.zeros(7, int), t)"
        ".tolist() == list(range(-3, 4)); assert 'tensorflow' not in sys.modules"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


# -------------------------------------------------------------------------------------------------
# Without numba: the same kernels as plain Python (coding.jit) write the same bytes.


def kernel_outputs() -> list:
    """Strings and symbols of the range coder and the scale agreement on seeded inputs: escapes
    near and far, long carries, several precisions, and a noisy agreement decode."""
    from mracnn_jax.coding import scale_agreement as sa

    rng, out = np.random.default_rng(11), []
    for i in range(40):
        precision = int(rng.integers(8, 17))
        tables = numpy_tables(rng, int(rng.integers(1, 30)), 100, precision, escapes=i % 4 > 0)
        rows = rng.integers(0, tables.num_rows, (3, 50))
        symbols = random_symbols(rng, tables, rows, far_bits=29)
        data = rc.encode(symbols, rows, tables)
        out += [data, rc.decode(data, rows, tables)]
    tables = carry_tables()
    symbols, _ = straddling_symbols(rng, tables, 0, 2000)
    rows = np.zeros(symbols.shape, int)
    data = rc.encode(symbols, rows, tables)
    out += [data, rc.decode(data, rows, tables)]
    f = rng.uniform(-4.0, 68.0, size=(1, 16, 24, 32)).astype(np.float32)
    k, block = sa.encode(f)
    noise = rng.uniform(-0.95, 0.95, size=f.shape) * sa.EPSILON
    out += [k, block, sa.decode((f + noise).astype(np.float32), block)[0]]
    return out


def test_plain_python_kernels_write_the_same_bytes():
    from mracnn_jax.coding import jit

    assert jit.COMPILED, "numba is a dependency: the kernels should be compiled here"
    code = (
        "import pickle, sys, warnings; sys.path.insert(0, sys.argv[1]); "
        "from mracnn_jax.coding import jit; assert not jit.COMPILED; "
        "warnings.simplefilter('error', RuntimeWarning); "
        "warnings.filterwarnings('ignore', 'numba is not available'); "
        "import test_range_coder as t; sys.stdout.buffer.write(pickle.dumps(t.kernel_outputs()))"
    )
    env = dict(os.environ, MRACNN_NO_NUMBA="1")
    res = subprocess.run(
        [sys.executable, "-c", code, str(Path(__file__).parent)],
        env=env,
        capture_output=True,
        check=True,
    )
    plain, compiled = pickle.loads(res.stdout), kernel_outputs()
    assert len(plain) == len(compiled) == 85
    for a, b in zip(plain, compiled):
        assert type(a) is type(b)
        if isinstance(a, bytes):
            assert a == b
        else:
            np.testing.assert_array_equal(a, b)

"""mracnn_jax.coding.tables and the z coding tables stored in model files.

The ``tf`` tests compare with tensorflow-compression 2.14 and skip without it (.venv-new): the
numpy ``pmf_to_quantized_cdf`` against tfc's kernel, the z tables against ``tfc_models.z_tables``
(the tables every decoder used before they were stored), the Gaussian asset against
``tfc_models.YCoder``. The model-file tests need only JAX and run in both environments.
"""

from __future__ import annotations

import json
import math
import os
import pathlib
import platform
import shutil
import subprocess
import sys
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from mracnn_jax import model_file, zoo
from mracnn_jax.coding import tables

REPO = pathlib.Path(__file__).resolve().parents[1]
BUNDLED = [e.path for e in zoo.bundled()]
TFC_REASON = "tensorflow_compression is not importable here: no comparison with tfc"
TABLE_KEYS = ("z_offsets", "z_cdf", "z_cdf_offset", "precision", "tail_mass")


@pytest.fixture(scope="module")
def tfc_env():
    pytest.importorskip("tensorflow_compression", reason=TFC_REASON)
    import tensorflow as tf
    import tensorflow_compression as tfc

    from mracnn_jax.coding import tfc_models  # hides the GPUs from TensorFlow (before any op)

    return tf, tfc, tfc_models


def assert_tables_equal(a: dict, b: dict) -> None:
    for k in TABLE_KEYS:
        assert np.asarray(a[k]).dtype == np.asarray(b[k]).dtype, k
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)


# -------------------------------------------------------------------------------------------------
# pmf_to_quantized_cdf.


def random_pmf(rng) -> tuple[np.ndarray, int]:
    """A float32 pmf of one of several kinds, and a precision with room for all its bins."""
    n = int(rng.choice([2, 3, 5, 16, 17, 33, 64, 129, 300]))
    kind = rng.integers(8)
    if kind == 0:
        p = rng.dirichlet(np.ones(n))
    elif kind == 1:  # most bins tiny
        p = rng.dirichlet(np.full(n, 0.05))
    elif kind == 2:  # exact zeros
        p = rng.dirichlet(np.ones(n)) * (rng.random(n) > 0.3)
    elif kind == 3:  # many ties, zeros and subnormals among them
        p = rng.choice(np.array([0.0, 1e-40, 1e-9, 1e-4, 0.01, 0.02, 0.05]), n)
    elif kind == 4:  # symmetric: pairs of equal bins
        h = rng.dirichlet(np.ones(n // 2 + 1))
        p = np.concatenate([h, h[::-1]])
    elif kind == 5:  # a discretised bell, tails underflowing to subnormal and zero float32
        x = np.arange(n) - (n - 1) / 2 * rng.choice([1.0, rng.uniform(0.5, 1.5)])
        p = np.exp(-0.5 * (x / rng.uniform(0.3, n / 3 + 0.5)) ** 2)
    elif kind == 6:  # subnormal float32 masses beside normal ones
        p = rng.dirichlet(np.ones(n))
        p[rng.random(n) < 0.3] = rng.uniform(1e-45, 1e-38)
    else:  # all equal
        p = np.full(n, rng.choice([0.0, 1.0 / n, 0.3 / n]))
    p = np.asarray(p, np.float64)
    if p.sum() > 0:
        p = p / p.sum()
    if rng.random() < 0.6:  # with an escape bin, as the coders use it
        p = p * (1 - rng.choice([0.0, 1e-6, 2.0**-8, 0.05]))
        p = np.append(p, max(1.0 - p.sum(), 0.0))
    else:  # off by a few percent: many steps of the penalty or gain queue
        p = p * rng.uniform(0.97, 1.03)
    precision = int(rng.choice([p_ for p_ in (4, 8, 12, 12, 16) if 2 * len(p) <= 1 << p_]))
    return p.astype(np.float32), precision


@pytest.mark.tf
def test_pmf_to_quantized_cdf_equals_tfc(tfc_env):
    tf, tfc, _ = tfc_env
    rng = np.random.default_rng(20241204)
    count, kinds = 0, set()
    for _ in range(2400):
        pmf, precision = random_pmf(rng)
        ours = tables.pmf_to_quantized_cdf(pmf, precision)
        theirs = tfc.pmf_to_quantized_cdf(tf.constant(pmf), precision=precision).numpy()
        assert ours.dtype == np.int32 and ours.shape == (len(pmf) + 1,)
        np.testing.assert_array_equal(ours, theirs, err_msg=f"pmf {pmf.tolist()} @ {precision}")
        count += 1
        steps = np.maximum(np.rint(pmf * np.float64(2**precision)), 1).sum() != 2**precision
        kinds.add((len(pmf) > 16, bool(steps)))
    assert count == 2400 and len(kinds) == 4  # short and long rows, with and without steps
    # A batch, like tfc's op: rows independently.
    batch = np.stack([random_pmf(rng)[0][:2] for _ in range(6)]).reshape(2, 3, 2)
    np.testing.assert_array_equal(
        tables.pmf_to_quantized_cdf(batch, 8),
        tfc.pmf_to_quantized_cdf(tf.constant(batch), precision=8).numpy(),
    )


def _introsort_killer(n: int) -> np.ndarray:
    """Keys that drive libstdc++'s introsort into its heapsort fallback (McIlroy's adversary,
    run against ``tables._std_sort``), with ties among the keys it never had to order."""
    val, state = [n] * n, {"solid": 0, "candidate": 0}

    class Key:
        def __init__(self, i):
            self.i = i

        def __lt__(self, other):
            x, y = self.i, other.i
            if val[x] == n and val[y] == n:
                z = x if x == state["candidate"] else y
                val[z], state["solid"] = state["solid"], state["solid"] + 1
            if val[x] == n:
                state["candidate"] = x
            elif val[y] == n:
                state["candidate"] = y
            return val[x] < val[y]

    tables._std_sort([[Key(i), i] for i in range(n)])
    return np.array(val, np.float64)


@pytest.mark.tf
@pytest.mark.parametrize("n, precision", [(600, 12), (1000, 14), (3000, 15)])
def test_pmf_to_quantized_cdf_equals_tfc_on_introsort_killers(tfc_env, n, precision):
    """Every bin rounds to 10, so the penalty (sum > 2^P) or gain (sum < 2^P) of a bin is
    proportional to its mass: the masses order the queue as the adversary's keys."""
    tf, tfc, _ = tfc_env
    sign = 1 if 10 * n > 1 << precision else -1  # penalties ascending, gains descending
    pmf = (10 + sign * 0.9 * (_introsort_killer(n) / (n + 1) - 0.5)) / 2**precision
    pmf = pmf.astype(np.float32)
    np.testing.assert_array_equal(
        tables.pmf_to_quantized_cdf(pmf, precision),
        tfc.pmf_to_quantized_cdf(tf.constant(pmf), precision=precision).numpy(),
    )


def test_pmf_to_quantized_cdf_basics_and_errors():
    cdf = tables.pmf_to_quantized_cdf([0.5, 0.25, 0.25], 4)
    assert cdf.dtype == np.int32 and cdf.tolist() == [0, 8, 12, 16]
    assert tables.pmf_to_quantized_cdf([0.0, 0.0], 1).tolist() == [0, 1, 2]
    for bad, precision in (([0.5, np.nan], 8), ([0.5, -0.1], 8), ([1.0], 8), ([0.5, 0.5], 17)):
        with pytest.raises(ValueError):
            tables.pmf_to_quantized_cdf(bad, precision)
    with pytest.raises(ValueError, match="more bins"):
        tables.pmf_to_quantized_cdf(np.full(5, 0.3), 2)


@pytest.mark.skipif(
    platform.libc_ver()[0] != "glibc"
    or tuple(map(int, platform.libc_ver()[1].split(".")[:2])) < (2, 28),
    reason="compares with glibc >= 2.28's log2, which tfc's kernel calls",
)
def test_log2_is_glibcs():
    ks = range(1, (1 << 16) + 2)  # every argument of precision <= 16
    assert [k for k in ks if tables._log2(k) != math.log2(k)] == []


# -------------------------------------------------------------------------------------------------
# Gaussian (y) tables.


@pytest.mark.tf
def test_gaussian_asset_equals_tfc(tfc_env):
    tf, _, tfc_models = tfc_env
    from tensorflow_compression.python.ops import gen_ops

    g = tables.gaussian_tables()
    original, pmfs = gen_ops.pmf_to_quantized_cdf, []

    def capture(pmf, precision, name=None):  # the pmfs tfc quantises while building its tables
        pmfs.append((pmf.numpy(), precision))
        return original(pmf, precision=precision, name=name)

    gen_ops.pmf_to_quantized_cdf = capture
    try:
        coder = tfc_models.YCoder()
    finally:
        gen_ops.pmf_to_quantized_cdf = original
    cdf, cdf_offset = coder.model.cdf.numpy(), coder.model.cdf_offset.numpy()
    assert g["cdf"].dtype == g["cdf_offset"].dtype == np.int32 and g["scales"].dtype == np.float32
    np.testing.assert_array_equal(g["cdf"], cdf)
    np.testing.assert_array_equal(g["cdf_offset"], cdf_offset)
    assert (g["precision"], g["tail_mass"]) == (tfc_models.PRECISION, tfc_models.TAIL_MASS)
    np.testing.assert_array_equal(g["scales"], tfc_models.scale_fn(tf.range(64)).numpy())
    np.testing.assert_allclose(g["scales"], gaussian_scales(), rtol=1e-6)
    # ... and the numpy quantiser makes every row from tfc's own pmfs, ties of the symmetric
    # pmfs included.
    rows = tfc_models.split_cdf_rows(cdf)
    assert len(pmfs) == len(rows) == 64
    for (pmf, precision), row in zip(pmfs, rows):
        np.testing.assert_array_equal(tables.pmf_to_quantized_cdf(pmf, precision), row)


def gaussian_scales():
    from mracnn_jax.entropy import gaussian

    return gaussian.scale_table()


def test_gaussian_tables_without_tensorflow():
    code = (
        "import sys; from mracnn_jax.coding import tables; g = tables.gaussian_tables(); "
        "assert 'tensorflow' not in sys.modules and 'jax' not in sys.modules; "
        "print(len(g['cdf']), len(g['cdf_offset']), g['precision'])"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["13078", "64", "12"]
    rows = _rows(tables.gaussian_tables()["cdf"])
    assert len(rows) == 64 and all(r[0] == 0 and r[-1] == 4096 for r in rows)


def _rows(cdf):
    """tfc's flat table -> its rows ``[0, ..., 2^precision]``."""
    return [r[1:] for r in np.split(cdf, np.flatnonzero(cdf < 0)[1:])]


# -------------------------------------------------------------------------------------------------
# z tables.


def _old_codec_tables(tfc_models, model_config, params):
    """The z offsets and tables as the codec computed them at every load before they were
    stored: the model's jitted ``z_offsets`` and ``z_likelihood``, and ``tfc_models.z_tables``."""
    from mracnn_jax.models.registry import build_model

    module = build_model(model_config)
    params = jax.tree_util.tree_map(jnp.asarray, params)
    offsets = jax.jit(lambda p: module.apply({"params": p}, method=lambda m: m.z_offsets()))
    likelihood = jax.jit(
        lambda p, z: module.apply({"params": p}, z, method=lambda m, z: m.z_likelihood(z))
    )
    off = np.asarray(offsets(params), np.float32)
    cdf, cdf_offset = tfc_models.z_tables(
        lambda z: likelihood(params, z), params["entropy_bottleneck"], off
    )
    return {"z_offsets": off, "z_cdf": cdf, "z_cdf_offset": cdf_offset,
            "precision": tfc_models.PRECISION, "tail_mass": tfc_models.TAIL_MASS}  # fmt: skip


def _perturbed_prior(prior, seed):
    """A prior further from its initialisation (random factors, matrices and biases)."""
    rng = np.random.default_rng(seed)
    return {
        k: np.asarray(v, np.float32) + rng.normal(0, 0.7, np.shape(v)).astype(np.float32)
        for k, v in prior.items()
    }


@pytest.mark.tf
def test_z_tables_equal_tfc_models(tfc_env, copy_of_small_model):
    """Random small model (seed 0), a perturbed copy of its prior, and the bundled q2 model."""
    _, _, tfc_models = tfc_env
    cfg, params, _ = model_file.load_model(copy_of_small_model)
    perturbed = dict(params, entropy_bottleneck=_perturbed_prior(params["entropy_bottleneck"], 1))
    q2 = zoo.by_quality(2).path
    cfg2, params2, _ = model_file.load_model(q2)
    for c, p in ((cfg, params), (cfg, perturbed), (cfg2, params2)):
        ours = tables.z_coding_tables(p["entropy_bottleneck"])
        assert_tables_equal(ours, _old_codec_tables(tfc_models, c, p))
        assert ours["z_cdf"].dtype == ours["z_cdf_offset"].dtype == np.int32
        assert ours["z_offsets"].dtype == np.float32
        assert len(_rows(ours["z_cdf"])) == len(ours["z_offsets"]) == p["entropy_bottleneck"][
            "matrix_0"].shape[0]  # fmt: skip
    # The export stored the tables of its parameters, as computed here.
    assert_tables_equal(
        model_file.load_coding_tables(copy_of_small_model),
        tables.z_coding_tables(params["entropy_bottleneck"]),
    )


# -------------------------------------------------------------------------------------------------
# The model file.


def _tiny_params(channels=5, seed=0):
    from mracnn_jax.entropy.factorized import FactorizedPrior

    prior = FactorizedPrior(channels).init(jax.random.PRNGKey(seed), jnp.zeros((1, channels)))
    rng = np.random.default_rng(seed)
    return {
        "entropy_bottleneck": _perturbed_prior(jax.device_get(prior["params"]), seed),
        "g_a": {"conv_0": {"kernel": rng.standard_normal((3, 3, 3, 4)).astype(np.float32)}},
    }


@pytest.mark.parametrize("dtype", ["float32", "float16"])
def test_model_file_stores_z_tables(tmp_path, dtype):
    params = _tiny_params()
    path = tmp_path / f"m-{dtype}.mracnn"
    digest = model_file.save_model(path, {"name": "t"}, params, metadata={"a": 1}, dtype=dtype)
    _, loaded, _ = model_file.load_model(path)
    stored = model_file.load_coding_tables(path)
    # From the parameters as stored (float16-rounded for float16 storage), exactly.
    assert_tables_equal(stored, tables.z_coding_tables(loaded["entropy_bottleneck"]))
    assert stored["precision"] == 12 and stored["tail_mass"] == 2.0**-8
    assert digest == model_file.params_digest(loaded)  # tables are not parameters
    header = model_file.read_header(path)
    assert header["coding"]["params_digest"] == digest
    assert header["coding"]["arrays"]["z_cdf"] == {"shape": [len(stored["z_cdf"])], "dtype": "<i4"}
    with zipfile.ZipFile(path) as zf:
        names = zf.namelist()
    assert names[0] == "header.json" and names[-3:] == [
        "coding/z_offsets.npy", "coding/z_cdf.npy", "coding/z_cdf_offset.npy"]  # fmt: skip


def test_old_model_file_loads_without_tables_and_gets_them_added(tmp_path):
    params = _tiny_params(seed=3)
    path = tmp_path / "old.mracnn"
    digest = model_file.save_model(
        path, {"name": "t", "k": [1, 2]}, params, metadata={"step": 5}, coding_tables=False
    )
    assert "coding" not in model_file.read_header(path)
    assert model_file.load_coding_tables(path) is None
    before, before_header = model_file.entry_bytes(path), model_file.read_header(path)
    cfg, loaded, meta = model_file.load_model(path)

    added = model_file.add_coding_tables(path)
    assert_tables_equal(added, tables.z_coding_tables(loaded["entropy_bottleneck"]))
    assert_tables_equal(model_file.load_coding_tables(path), added)
    after = model_file.entry_bytes(path)
    params_entries = [n for n in before if n.startswith("params/")]
    assert all(after[n] == before[n] for n in params_entries)  # byte for byte
    assert list(after)[: len(before)] == list(before)  # same order, tables after
    header = model_file.read_header(path)
    assert {k: v for k, v in header.items() if k != "coding"} == before_header
    cfg2, loaded2, meta2 = model_file.load_model(path)
    assert cfg2.to_dict() == cfg.to_dict() and meta2 == meta == {"step": 5}
    assert model_file.params_digest(loaded2) == digest == header["params_digest"]
    # Idempotent: a file with tables is left alone.
    data = path.read_bytes()
    assert_tables_equal(model_file.add_coding_tables(path), added)
    assert path.read_bytes() == data


def test_model_file_without_prior_has_no_tables(tmp_path):
    path = tmp_path / "x.mracnn"
    model_file.save_model(path, {"name": "x"}, {"g_a": {"w": np.ones((2, 3), np.float32)}})
    assert "coding" not in model_file.read_header(path)
    assert model_file.load_coding_tables(path) is None
    assert model_file.add_coding_tables(path) is None
    bad_prior = _tiny_params()
    bad_prior["entropy_bottleneck"]["bias_1"] = np.zeros((5, 2, 1), np.float32)  # wrong shape
    assert tables.prior_params_of(bad_prior) is None
    diverged = _tiny_params()
    diverged["entropy_bottleneck"]["bias_0"][:] = np.nan
    with pytest.warns(UserWarning, match="without z coding tables"):
        model_file.save_model(tmp_path / "nan.mracnn", {"name": "x"}, diverged)
    assert model_file.load_coding_tables(tmp_path / "nan.mracnn") is None


def test_corrupt_tables_are_refused(tmp_path):
    good = tmp_path / "good.mracnn"
    model_file.save_model(good, {"name": "t"}, _tiny_params())

    def rewrite(name, edit_header=None, edit_array=None):
        out = tmp_path / name
        with zipfile.ZipFile(good) as src, zipfile.ZipFile(out, "w") as dst:
            for info in src.infolist():
                raw = src.read(info)
                if info.filename == "header.json" and edit_header:
                    h = json.loads(raw)
                    edit_header(h)
                    raw = json.dumps(h).encode()
                if info.filename == "coding/z_cdf.npy" and edit_array:
                    import io

                    buf = io.BytesIO()
                    np.save(buf, edit_array(np.load(io.BytesIO(raw))))
                    raw = buf.getvalue()
                dst.writestr(info.filename, raw)
        return out

    def other_digest(h):
        h["coding"]["params_digest"] = "0" * 64

    def swap_bins(a):
        a = a.copy()
        a[2], a[3] = a[3], a[2] + 1
        return a

    def shorter(h):
        h["coding"]["arrays"]["z_cdf"]["shape"] = [3]

    for name, kwargs, match in (
        ("digest.mracnn", {"edit_header": other_digest}, "other parameters"),
        ("bins.mracnn", {"edit_array": swap_bins}, "malformed"),
        ("shape.mracnn", {"edit_header": shorter}, "malformed"),
    ):
        with pytest.raises(model_file.ModelFileError, match=match):
            model_file.load_coding_tables(rewrite(name, **kwargs))
        model_file.load_model(tmp_path / name)  # the parameters are still fine


@pytest.mark.slow
def test_bundled_models_store_their_tables(tmp_path):
    """Each bundled model has tables, equal to a fresh computation with the JAX that stored them
    (in a process without the tests' XLA flags), and adding tables again changes nothing."""
    assert len(BUNDLED) == 6  # three colour models, three grayscale ones
    computed_by = set()
    for path in BUNDLED:
        t = model_file.load_coding_tables(path)
        assert t is not None, f"{path.name} has no coding tables"
        computed_by.add(model_file.read_header(path)["coding"]["computed_by"]["jax"])
        copy = tmp_path / path.name
        shutil.copyfile(path, copy)
        assert_tables_equal(model_file.add_coding_tables(copy), t)
        assert copy.read_bytes() == path.read_bytes()
    if computed_by != {jax.__version__}:
        pytest.skip(f"tables computed with jax {computed_by}, this is jax {jax.__version__}")
    code = (
        "import sys, numpy as np; from mracnn_jax import model_file as mf\n"
        "for p in sys.argv[1:]:\n"
        "    s, f = mf.load_coding_tables(p), mf.compute_coding_tables(mf.load_model(p)[1])\n"
        "    print(all(np.array_equal(s[k], f[k]) for k in s))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    done = subprocess.run(
        [sys.executable, "-c", code, *map(str, BUNDLED)], capture_output=True, text=True,
        cwd=REPO, env=env, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.split() == ["True"] * len(BUNDLED)

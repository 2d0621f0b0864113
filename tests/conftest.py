"""Shared fixtures: the repository root, a small, jit-friendly model, and the command line's
stand-ins."""

from __future__ import annotations

import ast
import os
import pathlib
import shutil

import numpy as np
import pytest

from mracnn_jax.configs import preset_path

REPO = pathlib.Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

# Tests run tiny shapes, where XLA's compile time dominates: its LLVM backend at optimisation
# level 0 compiles the model's gradient about 5x faster (measured on ELAM: 11.4 s -> 2.5 s).
# Set before JAX initialises its backend; subprocesses inherit it.
os.environ["XLA_FLAGS"] = (
    os.environ.get("XLA_FLAGS", "") + " --xla_backend_optimization_level=0"
).strip()

# PyTorch (the twin's and the reference's tests, bench_gpu_compare's smoke run) on one thread: the
# two halves of `make test` share 2 cores, and on a loaded machine OpenMP's pool of 2 stalls at each
# of the twin's small operations (the small preset's training step: 16 s a backward pass with 2
# threads, 0.4 s with 1). Set before torch is imported; subprocesses inherit it.
os.environ["OMP_NUM_THREADS"] = "1"

# The `mracnn` command keeps a persistent compilation cache in the user's cache folder by
# default: never in tests (theirs, where a test wants one, is in a temporary folder).
os.environ["MRACNN_JAX_CACHE_DIR"] = "off"


@pytest.fixture(scope="session")
def repo_root() -> pathlib.Path:
    return REPO


@pytest.fixture(scope="session")
def bundled_quality_lambdas() -> dict[int, float]:
    """mracnn_jax/configs/bundled.py's QUALITY_LAMBDAS, read without running the config (no JAX)."""
    tree = ast.parse(preset_path("bundled").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and node.targets[0].id == "QUALITY_LAMBDAS":
            return ast.literal_eval(node.value)
    raise AssertionError("mracnn_jax/configs/bundled.py has no QUALITY_LAMBDAS")


@pytest.fixture(scope="session")
def kodak_dir() -> pathlib.Path:
    path = SHARED / "data" / "kodak"
    if not path.is_dir():
        pytest.skip(f"Kodak images not found at {path}")
    return path


@pytest.fixture(scope="session")
def small_model_export(tmp_path_factory) -> pathlib.Path:
    """``mracnn export --config small --seed 0``, run once per test session (about
    30 s); test modules take copies (``copy_of_small_model``) so that none can alter another's."""
    from mracnn_jax import cli

    out = tmp_path_factory.mktemp("small_export") / "small.mracnn"
    args = ["export", "--config", "small", "--seed", "0", str(out)]
    assert cli.main(args) == 0
    return out


@pytest.fixture(scope="module")
def copy_of_small_model(small_model_export, tmp_path_factory) -> pathlib.Path:
    out = tmp_path_factory.mktemp("export") / "small.mracnn"
    shutil.copyfile(small_model_export, out)
    return out


@pytest.fixture(scope="session")
def subprocess_xla_cache(tmp_path_factory) -> pathlib.Path:
    """One persistent compilation cache for the scripts and commands that tests run as
    subprocesses (``JAX_COMPILATION_CACHE_DIR``): what one compiled, the next loads.
    bench_train_step's and bench_gpu_compare's smoke runs, ``mracnn train`` and the tests that train
    share one step (the small preset's, at its own batch and crop), the cross-stack decoder the
    encoder's codec pieces. This stack's processes only; in-process tests keep the cache off,
    except where they ask for it (``shared_xla_cache``)."""
    return tmp_path_factory.mktemp("xla_cache")


@pytest.fixture
def shared_xla_cache(subprocess_xla_cache):
    """``subprocess_xla_cache`` turned on in this process for one test (off again afterwards):
    an in-process test that compiles what a script compiled before loads it."""
    from mracnn_jax.compilation_cache import enable_compilation_cache

    enable_compilation_cache(subprocess_xla_cache)
    yield subprocess_xla_cache
    enable_compilation_cache(None)


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """A JAX persistent compilation cache for the requesting module (off again afterwards)."""
    from mracnn_jax import codec

    path = tmp_path_factory.mktemp("jax_cache")
    codec.enable_compilation_cache(path)
    yield path
    codec.enable_compilation_cache(None)


@pytest.fixture(scope="module")
def exported(cache_dir, copy_of_small_model):
    """``mracnn export --config small --seed 0`` (once per session), loaded by the
    codec tests with their module's compilation cache on."""
    return copy_of_small_model


def _make_latents_informative(params):
    """A random model's latents are almost all zero (y far below the quantisation step, sigma at
    the scale table's floor), which would leave the y coder untested. Returns a copy with g_a's
    last convolution x30 and every cc_scale transform's last bias +3."""
    import jax
    import numpy as np

    params = jax.tree_util.tree_map(np.array, params)
    convs = [k for k in params["g_a"] if k.startswith("conv_")]
    last = max(convs, key=lambda k: int(k.split("_")[1]))
    params["g_a"][last]["kernel"] *= 30.0
    for name, sub in params["entropy"].items():
        if name.startswith("cc_scale_"):
            last = max(sub, key=lambda k: int(k.split("_")[1]))
            sub[last]["bias"] += 3.0
    return params


@pytest.fixture(scope="session")
def make_latents_informative():
    """The function ``params -> params`` above, for the codec, tiling and evaluation tests."""
    return _make_latents_informative


@pytest.fixture(scope="module")
def rich_model_path(exported, tmp_path_factory) -> pathlib.Path:
    """The small export with informative latents (``_make_latents_informative``), saved as a
    model file of the requesting module."""
    from mracnn_jax import codec

    base = codec.LoadedModel.load(exported)
    rich = codec.LoadedModel(base.config, _make_latents_informative(base.params), {"test": "rich"})
    path = tmp_path_factory.mktemp("models") / "rich.mracnn"
    rich.save(path)
    return path


@pytest.fixture(scope="module")
def rich_model(rich_model_path):
    """``rich_model_path`` loaded (a ``codec.LoadedModel``), once per requesting module."""
    from mracnn_jax import codec

    return codec.LoadedModel.load(rich_model_path)


# The command line's tests (test_cli_*.py).


@pytest.fixture
def umask():
    """``umask(m)`` sets the process umask for the test; the old one is put back after it."""
    old = os.umask(0o022)
    os.umask(old)
    yield os.umask
    os.umask(old)


@pytest.fixture
def fake_codec(monkeypatch):
    """The stand-in codec of cli_stand_in.py in place of the real one, for one test."""
    import cli_stand_in  # a sibling helper module; imports the codec's modules (JAX) when used

    return cli_stand_in.install(monkeypatch)


@pytest.fixture
def picture(tmp_path) -> pathlib.Path:
    """A 6×10 RGB noise image, ``kodim23.png`` in the test's folder."""
    from PIL import Image

    pixels = np.random.default_rng(0).integers(0, 256, (6, 10, 3), dtype=np.uint8)
    path = tmp_path / "kodim23.png"
    Image.fromarray(pixels).save(path)
    return path

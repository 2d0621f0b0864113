"""The built wheel, installed into a fresh virtual environment outside the checkout, is the whole
tool: ``mracnn models``, ``compress``/``decompress`` with a bundled model, and a 2-step
``mracnn train --config small`` on generated images, all from a folder outside the checkout.

Offline: the wheel is built without build isolation (this environment's setuptools) from a copy
of the package's sources in a temporary folder (so that no build/ or egg-info appears in the
checkout); the fresh venv gets the wheel with ``pip install --no-deps --no-index``, and its
dependencies from this environment's site-packages through a ``.pth`` line (a path line, so the
editable install's finder there is not run: the checkout is not importable in the fresh venv).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def _run(cmd, cwd: Path, env: dict, timeout: float = 900) -> subprocess.CompletedProcess:
    proc = subprocess.run(
        [str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, f"{cmd}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr[-4000:]}"
    return proc


@pytest.fixture(scope="module")
def fresh_venv(tmp_path_factory) -> Path:
    """A venv outside the checkout with the built wheel installed (the module docstring)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    src.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        if (REPO / name).exists():
            shutil.copy(REPO / name, src / name)
    shutil.copytree(
        REPO / "mracnn_jax", src / "mracnn_jax", ignore=shutil.ignore_patterns("__pycache__")
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    dist = tmp / "dist"
    _run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "--no-index",
         "-q", "-w", dist, src],
        cwd=tmp, env=env,
    )  # fmt: skip
    (wheel,) = dist.glob("mracnn_jax-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    for needed in (
        "mracnn_jax/configs/small.py",
        "mracnn_jax/configs/mracnn.py",
        "mracnn_jax/assets/models/mracnn-bundled-q2.mracnn",
        "mracnn_jax/assets/models/mracnn-bundled-gray-q2.mracnn",
        "mracnn_jax/assets/gaussian_tables.npz",
    ):
        assert needed in names, f"{needed} is not in {wheel.name}"
    venv = tmp / "venv"
    _run([sys.executable, "-m", "venv", venv], cwd=tmp, env=env)
    python = venv / "bin" / "python"
    purelib = _run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], tmp, env
    ).stdout.strip()
    deps = sysconfig.get_paths()["purelib"]  # this environment's packages, not the checkout
    Path(purelib, "_mracnn_test_deps.pth").write_text(deps + "\n")
    _run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", wheel], tmp, env)
    return venv


@pytest.fixture(scope="module")
def outside(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("elsewhere")


def _env() -> dict:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["MRACNN_JAX_CACHE_DIR"] = "off"
    return env


def test_the_package_is_imported_from_the_fresh_venv(fresh_venv, outside):
    code = (
        "import mracnn_jax, mracnn_jax.configs as c; print(mracnn_jax.__file__); "
        "print(c.preset_path('small')); print(mracnn_jax.__version__)"
    )
    out = _run([fresh_venv / "bin" / "python", "-c", code], outside, _env()).stdout.split()
    for path in out[:2]:
        assert Path(path).resolve().is_relative_to(fresh_venv.resolve()), out
        assert not Path(path).resolve().is_relative_to(REPO), out


def test_models_lists_the_bundled_models(fresh_venv, outside):
    out = _run([fresh_venv / "bin" / "mracnn", "models"], outside, _env()).stdout
    assert "mracnn-bundled-q2.mracnn" in out and str(fresh_venv.resolve()) in out, out


def test_compress_and_decompress_with_a_bundled_model(fresh_venv, outside):
    rng = np.random.default_rng(0)
    image = np.clip(rng.normal(128, 40, (64, 96, 3)), 0, 255).astype(np.uint8)
    Image.fromarray(image).save(outside / "gen.png")
    mracnn = fresh_venv / "bin" / "mracnn"
    out = _run([mracnn, "compress", "gen.png", "gen.mrac", "--quality", "1"], outside, _env())
    assert "gen.mrac:" in out.stdout and (outside / "gen.mrac").stat().st_size > 100
    _run([mracnn, "decompress", "gen.mrac", "back.png"], outside, _env())
    back = np.asarray(Image.open(outside / "back.png"))
    assert back.shape == image.shape
    mse = np.mean((back.astype(float) - image) ** 2)
    assert 10 * np.log10(255**2 / mse) > 12  # a reconstruction, not noise
    # evaluate: real files and a summary, from the installed package alone
    (outside / "data").mkdir()
    Image.fromarray(image).save(outside / "data" / "gen.png")
    models = "lib/python*/site-packages/mracnn_jax/assets/models"
    q1 = next(fresh_venv.glob(f"{models}/mracnn-bundled-q1.mracnn"))  # colour, for a colour image
    args = ["evaluate", "--model", str(q1), "--data", "data", "--out", "ev", "--anchors", "jpeg"]
    _run([mracnn, *args, "--no-progress"], outside, _env())
    summary = (outside / "ev" / "summary.md").read_text()
    assert "mracnn-bundled" in summary and "JPEG" in summary.upper(), summary


def test_train_two_steps_of_the_small_preset_on_generated_images(
    fresh_venv, outside, subprocess_xla_cache
):
    """The preset's own recipe, so its step is the one the benchmarks' smoke runs compiled: the
    command loads it from their cache (the installed package's paths are not in the cache key)."""
    photos = outside / "photos"
    photos.mkdir()
    rng = np.random.default_rng(1)
    for k in range(4):
        Image.fromarray(rng.integers(0, 256, (72, 80, 3), dtype=np.uint8)).save(
            photos / f"p{k}.png"
        )
    wd = outside / "wd"
    proc = _run(
        [fresh_venv / "bin" / "mracnn", "train", "--config", "small", "--workdir", "wd",
         "--data", "photos", "--val-data", "none", "--config.train.num_steps=2",
         "--config.train.checkpoint_every=2", "--config.train.log_every=1"],
        outside, dict(_env(), MRACNN_JAX_CACHE_DIR=str(subprocess_xla_cache)),
    )  # fmt: skip
    assert "wd: trained to step 2 (config small)" in proc.stdout, proc.stdout
    assert "compiling the training step" in proc.stderr
    assert (wd / "model.mracnn").is_file() and (wd / "checkpoints" / "2").is_dir()
    assert list((wd / "tb").glob("events.out.tfevents.*"))

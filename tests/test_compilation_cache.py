"""The persistent compilation cache (``mracnn_jax.compilation_cache``) and its use in training."""

from __future__ import annotations

import pytest
from tiny_training import TinyCodec, tiny_config  # a sibling helper module

from mracnn_jax import compilation_cache
from mracnn_jax.training.train_lib import train_and_evaluate


@pytest.fixture
def no_cache_after():
    yield
    compilation_cache.enable_compilation_cache(None)


def test_cache_dir_rule(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.delenv(compilation_cache.CACHE_ENV, raising=False)
    assert compilation_cache.compilation_cache_dir() == str(tmp_path / "mracnn-jax" / "xla")
    assert compilation_cache.compilation_cache_dir("chosen") == "chosen"
    assert compilation_cache.compilation_cache_dir("chosen", no_cache=True) is None
    monkeypatch.setenv(compilation_cache.CACHE_ENV, "OFF")
    assert compilation_cache.compilation_cache_dir() is None
    monkeypatch.setenv(compilation_cache.CACHE_ENV, str(tmp_path / "env"))
    assert compilation_cache.compilation_cache_dir() == str(tmp_path / "env")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv(compilation_cache.CACHE_ENV, "~/xla")  # as a service's environment says
    assert compilation_cache.compilation_cache_dir() == str(tmp_path / "home" / "xla")


def test_a_folder_that_cannot_be_written_is_refused(monkeypatch, tmp_path, no_cache_after):
    """An existing folder without write permission (os.access: root may write anywhere, so the
    permission is what os.access answers) is an OSError naming it, not a warning per function."""
    real_access = compilation_cache.os.access
    monkeypatch.setattr(
        compilation_cache.os,
        "access",
        lambda p, mode: False if str(p) == str(tmp_path) else real_access(p, mode),
    )
    with pytest.raises(PermissionError, match="not writable") as e:
        compilation_cache.enable_compilation_cache(tmp_path)
    assert e.value.filename == str(tmp_path)


def test_training_writes_the_cache_by_default(monkeypatch, tmp_path, no_cache_after):
    """A 2-step run with ``MRACNN_JAX_CACHE_DIR`` set leaves compiled entries there; with
    ``off`` (as in every other test) it writes none."""
    cache = tmp_path / "xla"
    monkeypatch.setenv(compilation_cache.CACHE_ENV, str(cache))
    train_and_evaluate(tiny_config(tmp_path, num_steps=2), str(tmp_path / "wd"), model=TinyCodec())
    entries = [p for p in cache.rglob("*") if p.is_file()]
    assert entries, "no compilation cache entries were written"

    compilation_cache.enable_compilation_cache(None)
    monkeypatch.setenv(compilation_cache.CACHE_ENV, "off")
    off_cache = tmp_path / "unused"
    monkeypatch.setenv("XDG_CACHE_HOME", str(off_cache))
    train_and_evaluate(tiny_config(tmp_path, num_steps=2), str(tmp_path / "wd2"), model=TinyCodec())
    assert not off_cache.exists()

"""JAX's persistent compilation cache: where it lives and how it is turned on.

Compiled functions (the codec's network pieces, the training step) are written under one folder,
so a later process skips XLA compilation of what it has compiled before. The folder is, in order:
an explicit choice; ``$MRACNN_JAX_CACHE_DIR`` (``off``: no cache); ``default_cache_dir()``.
"""

from __future__ import annotations

import errno
import os

CACHE_ENV = "MRACNN_JAX_CACHE_DIR"
CACHE_OFF = "off"


def default_cache_dir() -> str:
    """``$XDG_CACHE_HOME/mracnn-jax/xla``, or ``~/.cache/mracnn-jax/xla`` where
    ``XDG_CACHE_HOME`` is unset, empty or not absolute (the XDG base directory rule)."""
    base = os.environ.get("XDG_CACHE_HOME", "")
    if not os.path.isabs(base):
        base = os.path.join(os.path.expanduser("~"), ".cache")
    return os.path.join(base, "mracnn-jax", "xla")


def compilation_cache_dir(cache_dir: str | None = None, no_cache: bool = False) -> str | None:
    """The cache folder, None for none: none with ``no_cache``; else ``cache_dir``; else
    ``$MRACNN_JAX_CACHE_DIR``, none where it is ``off``; else ``default_cache_dir()``."""
    if no_cache:
        return None
    if cache_dir:
        return cache_dir
    env = os.environ.get(CACHE_ENV, "").strip()
    if env.lower() == CACHE_OFF:
        return None
    return os.path.expanduser(env) if env else default_cache_dir()


def enable_compilation_cache(path: str | os.PathLike | None) -> None:
    """Persists compiled JAX functions under ``path`` (created), every compilation however short;
    ``None`` turns the persistent cache off again. Raises OSError where the folder cannot be made
    or written to (JAX would otherwise warn once for every function it compiles).
    (JAX is imported here, not above: the CLI reads the folder rule before anything heavy.)"""
    import jax

    if path is not None:
        os.makedirs(path, exist_ok=True)
        path = os.fspath(path)
        if not os.access(path, os.W_OK | os.X_OK):
            raise PermissionError(errno.EACCES, "not writable", path)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0 if path else 1.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    try:  # JAX fixes the cache at its first compilation; start over with the new directory
        from jax._src import compilation_cache

        compilation_cache.reset_cache()
    except (ImportError, AttributeError):  # pragma: no cover - other JAX versions
        pass

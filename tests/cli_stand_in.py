"""A stand-in codec for tests of the ``mracnn`` command line, and the checks those tests share.

The stand-in's "bitstream" is ``FAKE``, the height and width (2 bytes each, big-endian) and the
image's RGB bytes; "decompress" gives the pixels back. With it, tests of what the command line does
with files, names and messages run fast and without JAX. ``install`` puts it in place of the real
codec, container and model loader for one test (the ``fake_codec`` fixture in conftest.py).
"""

from __future__ import annotations

import os
import stat
import types

import numpy as np

import mracnn_jax
import mracnn_jax.codec.tiles  # imported now: a first import in a test would undo the stand-in
import mracnn_jax.coding
from mracnn_jax import cli_coding

MAGIC = b"FAKE"


def fake_compress(image, model, **options):
    h, w = image.shape[:2]
    data = MAGIC + h.to_bytes(2, "big") + w.to_bytes(2, "big") + image.tobytes()
    return types.SimpleNamespace(data=data, tiling=None, refinement=None)


def fake_unpack(data):
    if not data.startswith(MAGIC):
        raise ValueError("not an .mrac file")
    h, w = int.from_bytes(data[4:6], "big"), int.from_bytes(data[6:8], "big")
    image = np.frombuffer(data[8:], np.uint8).reshape(h, w, 3)
    return types.SimpleNamespace(height=h, width=w, colour_mode="RGB", bits=8, image=image)


def install(monkeypatch) -> types.SimpleNamespace:
    """Puts the stand-in in place for one test and returns it. Its ``cache_calls`` records the
    folders the command line turned the compilation cache on in (``None`` for off): the cache is
    off here, as in every test, unless a test says otherwise."""
    cache_calls = []

    def enable_compilation_cache(path):
        if path is not None:
            os.makedirs(path, exist_ok=True)  # as the real one does
        cache_calls.append(None if path is None else os.fspath(path))

    codec = types.SimpleNamespace(
        compress_with_info=fake_compress,
        decompress_with_info=lambda bs, model, **kw: types.SimpleNamespace(
            image=bs.image, tiling=None
        ),
        enable_compilation_cache=enable_compilation_cache,
        cache_calls=cache_calls,
    )
    monkeypatch.setattr(mracnn_jax, "codec", codec, raising=False)
    monkeypatch.setattr(mracnn_jax.coding, "container", types.SimpleNamespace(unpack=fake_unpack))
    monkeypatch.setattr(
        cli_coding, "_load_model", lambda path, expect=None: types.SimpleNamespace(name="m")
    )
    monkeypatch.setenv("MRACNN_JAX_CACHE_DIR", "off")
    return codec


def error_line(capsys, prog: str = "mracnn") -> str:
    """The one line a failed command wrote on stderr; checks that it is one line, with no
    traceback, and that it starts as ``PROG: error: ``."""
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith(f"{prog}: error: "), lines[0]
    return lines[0]


def file_mode(path) -> int:
    """A file's permission bits."""
    return stat.S_IMODE(os.stat(path).st_mode)

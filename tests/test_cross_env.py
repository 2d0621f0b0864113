"""The portability matrix between two software stacks (scripts/cross_env.py).

Files written here decode in the other environment and the reverse, for every bundled colour model
(on the portrait sample images in turn), one tiled image and, where grayscale models are bundled,
one grayscale image; the decoded images agree with the encoder's prediction to >= 60 dB PSNR.
``make test`` runs this in ``.venv`` (jax 0.4.34, numpy 1.26) with
``MRACNN_OTHER_PYTHON=.venv-new/bin/python`` (the newest jax, numpy 2). The two stacks encode side
by side, then decode side by side. Each stack keeps its own persistent compilation cache: its
decoder loads what its own encoder compiled, never anything the other stack compiled.
"""

from __future__ import annotations

import json
import os
import pathlib
import subprocess
import sys

import pytest
from load_script import load_script  # a sibling helper module
from other_stack import needs_other_stack, other_python  # a sibling helper module

from mracnn_jax import zoo

REPO = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "cross_env.py"
O_LEVEL = "--xla_backend_optimization_level"

pytestmark = [pytest.mark.slow, needs_other_stack]


def _start(python: str, cache: pathlib.Path, *args: str) -> subprocess.Popen:
    """The script in ``python``'s stack, with that stack's compilation cache: the decoding
    process loads the codec pieces its stack's encoding process compiled. XLA optimises as it
    does for users, not at the tests' level 0 (tests/conftest.py), at which the two stacks' side
    by side encoding of real images took 84 s instead of 59."""
    flags = [f for f in os.environ.get("XLA_FLAGS", "").split() if not f.startswith(O_LEVEL)]
    env = dict(
        os.environ,
        TF_CPP_MIN_LOG_LEVEL="3",
        JAX_PLATFORMS="cpu",
        JAX_COMPILATION_CACHE_DIR=str(cache),
        XLA_FLAGS=" ".join(flags),
    )
    return subprocess.Popen(
        [python, str(SCRIPT), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        cwd=REPO, env=env,
    )  # fmt: skip


def _finish(*procs: subprocess.Popen) -> list[str]:
    outs = []
    for proc in procs:
        out, err = proc.communicate(timeout=1200)
        assert proc.returncode == 0, out[-2000:] + err[-3000:]
        outs.append(out)
    return outs


def test_files_decode_in_the_other_stack(tmp_path, subprocess_xla_cache):
    here, there = tmp_path / "here", tmp_path / "there"
    other = other_python()
    caches = {sys.executable: subprocess_xla_cache, other: tmp_path / "cache-other"}
    # the two stacks side by side: both encode, then each decodes the other's files
    _finish(
        *(
            _start(py, caches[py], "encode", str(out))
            for py, out in ((sys.executable, here), (other, there))
        )
    )
    _finish(
        _start(other, caches[other], "decode", str(here), str(tmp_path / "here-decoded-there")),
        _start(sys.executable, caches[sys.executable], "decode", str(there), str(tmp_path / "there-decoded-here")),
    )  # fmt: skip
    cross_env = _script_module()
    # one file per colour model + 1 tiled file (+ 1 grayscale), all decoded at >= 60 dB
    expected = len(zoo.for_channels(3)) + 1 + (zoo.default(channels=1).channels == 1)
    for enc, dec in ((here, "here-decoded-there"), (there, "there-decoded-here")):
        dec = tmp_path / dec
        written, read = (
            json.loads(p.read_text())
            for p in (enc / "stack-encode.json", dec / "stack-decode.json")
        )
        assert written["numpy"] != read["numpy"], (written, read)  # two stacks, not one twice
        rows = cross_env.compare(enc, dec)
        assert len(rows) == expected, rows
        assert all("error" not in r and r["psnr_db"] >= 60 for r in rows), rows


def _script_module():
    """scripts/cross_env.py's functions, in this process (its ``compare`` reads PNG files)."""
    return load_script(SCRIPT)

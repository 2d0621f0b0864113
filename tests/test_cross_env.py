"""The portability matrix between two software stacks (scripts/cross_env.py).

Files written here decode in the other environment and the reverse, for every bundled colour model
(each on another sample image), one tiled image and, where grayscale models are bundled, one
grayscale image; the decoded images agree with the encoder's prediction to
>= 60 dB PSNR. ``make test`` runs this in ``.venv`` (jax 0.4.34, numpy 1.26) with
``MRACNN_OTHER_PYTHON=.venv-new/bin/python`` (the newest jax, numpy 2).
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import pytest

from mracnn_jax import zoo

REPO = pathlib.Path(__file__).resolve().parents[1]
OTHER = os.environ.get("MRACNN_OTHER_PYTHON", "")
SCRIPT = REPO / "scripts" / "cross_env.py"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(
        not OTHER, reason="MRACNN_OTHER_PYTHON names no second environment (make test sets it)"
    ),
]


def _run(python: str, *args: str) -> str:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", JAX_PLATFORMS="cpu")
    done = subprocess.run(
        [python, str(SCRIPT), *args], capture_output=True, text=True, cwd=REPO, env=env,
        timeout=1200, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    return done.stdout


def test_files_decode_in_the_other_stack(tmp_path):
    here, there = tmp_path / "here", tmp_path / "there"
    other = str(REPO / OTHER) if not os.path.isabs(OTHER) else OTHER
    _run(sys.executable, "encode", str(here))
    _run(other, "encode", str(there))
    _run(other, "decode", str(here), str(tmp_path / "here-decoded-there"))
    _run(sys.executable, "decode", str(there), str(tmp_path / "there-decoded-here"))
    for enc, dec in ((here, "here-decoded-there"), (there, "there-decoded-here")):
        report = _run(sys.executable, "compare", str(enc), str(tmp_path / dec))
        # one file per colour model + 1 tiled file (+ 1 grayscale), all decoded at >= 60 dB
        expected = len(zoo.for_channels(3)) + 1 + (zoo.default(channels=1).channels == 1)
        assert f"{expected} decoded at >= 60 dB, 0 not" in report, report

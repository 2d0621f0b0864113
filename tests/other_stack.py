"""Running a line of Python in the second environment, for the tests that compare the two stacks.

``make test`` names it in ``MRACNN_OTHER_PYTHON`` (``.venv-new``'s python while the tests run in
``.venv``, so the two sides differ in jax, numpy and Python). The code runs with ``tests/`` as its
working directory, so it can import a test module's helpers; it prints its answer last.
"""

from __future__ import annotations

import os
import pathlib
import subprocess

import pytest

OTHER = os.environ.get("MRACNN_OTHER_PYTHON", "")
REPO = pathlib.Path(__file__).resolve().parents[1]

needs_other_stack = pytest.mark.skipif(
    not OTHER, reason="MRACNN_OTHER_PYTHON names no second environment (make test sets it)"
)


def other_python() -> str:
    """The other environment's python as a path (a relative ``MRACNN_OTHER_PYTHON`` is taken
    from the repository's root)."""
    return str(REPO / OTHER)  # (an absolute OTHER stays itself)


def run_in_other_stack(code: str, timeout: float = 600) -> str:
    """stdout of ``code`` run by the other environment's python (CPU only; fails the test with
    its stderr when it exits non-zero)."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(
        [other_python(), "-c", code], check=False, capture_output=True, text=True, timeout=timeout,
        cwd=REPO / "tests", env=env,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout

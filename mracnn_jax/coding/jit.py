"""The coding kernels compiled with numba where it is installed, run as plain Python where not.

The range coder's and the scale agreement's kernels are written in the subset of Python that
numba compiles, on integers only: int64 arithmetic whose values stay below 2^63 (the range coder:
32-bit state, products of a 33-bit size and a 16-bit cdf value) and uint64 arithmetic that wraps
on purpose (the agreement's hash). Uncompiled, the same source computes the same integers, so
the bytes written and the symbols read do not depend on which ran; ``tests/test_range_coder.py``
checks this against the compiled kernels, and against tensorflow-compression where it is
installed. Plain Python is about 150 times slower: about a second to code a Kodak image, where
numba takes milliseconds.

numba is a dependency of the package; the plain path is for machines where it cannot be
installed (e.g. an accelerator image that lacks it, whose wheels would not fit the transfer) or
when ``MRACNN_NO_NUMBA=1`` asks for it. Uncompiled, numpy warns when a uint64 scalar product wraps;
the outer kernels (those not marked ``inline="always"``) therefore run under
``np.errstate(over="ignore")``.
"""

from __future__ import annotations

import functools
import os
import warnings

import numpy as np

try:
    if os.environ.get("MRACNN_NO_NUMBA", "") not in ("", "0"):
        raise ImportError("MRACNN_NO_NUMBA is set")
    import numba
except ImportError as e:
    numba = None
    _why = str(e)

#: True where the kernels are compiled by numba.
COMPILED = numba is not None
_warned = False


def njit(**options):
    """``numba.njit(**options)``, or the function itself (wrapped as the docstring says)."""
    if COMPILED:
        return numba.njit(**options)

    def plain(fn):
        fn.py_func = fn  # as numba's dispatchers have it
        if options.get("inline") == "always":
            return fn

        @functools.wraps(fn)
        def run(*args):
            _warn_once()
            with np.errstate(over="ignore"):
                return fn(*args)

        run.py_func = fn
        return run

    return plain


def _warn_once() -> None:
    global _warned
    if not _warned:
        _warned = True
        warnings.warn(
            f"numba is not available ({_why}): entropy coding runs as plain Python, about a "
            "second per megapixel instead of milliseconds (pip install numba)",
            RuntimeWarning,
            stacklevel=3,
        )

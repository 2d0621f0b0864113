"""``mracnn evaluate`` in a checkout: ``python evaluate.py ...`` (mracnn_jax.evaluation.command)."""

import sys

from mracnn_jax.evaluation import command
from mracnn_jax.evaluation.command import build_parser, main

__doc__ = command.__doc__  # the command's own documentation, one home
__all__ = ["build_parser", "main"]

if __name__ == "__main__":
    sys.exit(main())

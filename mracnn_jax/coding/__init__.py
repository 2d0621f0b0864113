"""Entropy coding: integer symbols <-> bytes, the same on every machine; no TensorFlow.

* ``container``: the ``.mrac`` byte format (pure Python).
* ``range_coder``: the range coder (numba), byte for byte tensorflow-compression 2.14's.
* ``jit``: numba's compiler for the coding kernels, or plain Python (same bytes) without numba.
* ``tables``: the integer coding tables (z: computed once per model file and stored in it; y: a
  package asset).
* ``coders``: the z and y coders of the codec on top of the two.
* ``scale_agreement``: the y scale indexes that encoder and decoder agree on despite float noise
  (``gf2``: its pseudo-random columns and GF(2) elimination).
* ``perturbation``: a decoder with noisy entropy parameters, for the portability tests.
* ``tiling``: tile geometry of tiled files.
* ``tfc_models``: tensorflow-compression's coders, the reference the tests compare with (imports
  TensorFlow; loaded lazily, on first attribute access, and only where TensorFlow is installed).
"""

from __future__ import annotations

import importlib

from mracnn_jax.coding.container import Bitstream, ContainerError, pack, unpack

__all__ = ["Bitstream", "ContainerError", "pack", "tfc_models", "unpack"]


def __getattr__(name):
    if name == "tfc_models":
        return importlib.import_module("mracnn_jax.coding.tfc_models")
    raise AttributeError(f"module 'mracnn_jax.coding' has no attribute {name!r}")

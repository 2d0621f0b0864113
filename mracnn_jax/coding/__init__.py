"""Entropy coding: the only package that imports TensorFlow (tensorflow-compression).

* ``container``: the ``.mrac`` byte format (pure Python, no TensorFlow).
* ``tfc_models``: range-coding tables and coders for z and y, built from a JAX model's
  parameters. Importing it imports TensorFlow (with GPUs hidden from it); it is loaded lazily,
  on first attribute access, so ``import mracnn_jax.coding`` stays cheap.
"""

from __future__ import annotations

import importlib

from mracnn_jax.coding.container import Bitstream, ContainerError, pack, unpack

__all__ = ["Bitstream", "ContainerError", "pack", "tfc_models", "unpack"]


def __getattr__(name):
    if name == "tfc_models":
        return importlib.import_module("mracnn_jax.coding.tfc_models")
    raise AttributeError(f"module 'mracnn_jax.coding' has no attribute {name!r}")

"""Mixed precision: the dtype a network computes in, separate from the dtype of its parameters.

Every layer in ``mracnn_jax/layers`` computes in the dtype of its input: it casts its float32
parameters to ``x.dtype`` where it reads them (Flax's ``dtype`` as opposed to ``param_dtype``).
So a network runs in bfloat16 when its input is cast to bfloat16, while its parameters, their
gradients and the optimizer state stay float32 (the cast is differentiated like any other op).
``compute`` is that cast at a network's boundary; softmax and the entropy model stay float32.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp

#: The values of ``config.model.compute_dtype``.
COMPUTE_DTYPES: tuple[str, ...] = ("float32", "bfloat16")


def as_dtype(name: str) -> jnp.dtype:
    """The JAX dtype named by ``config.model.compute_dtype``."""
    if name not in COMPUTE_DTYPES:
        raise ValueError(f"model.compute_dtype = {name!r}; expected one of {COMPUTE_DTYPES}")
    return jnp.dtype(name)


def _is_float_array(a: Any) -> bool:
    return hasattr(a, "dtype") and jnp.issubdtype(a.dtype, jnp.floating)


def _cast_floats(tree: Any, dtype) -> Any:
    return jax.tree_util.tree_map(
        lambda a: a.astype(dtype) if _is_float_array(a) else a,
        tree,
    )


def compute(dtype: str, fn: Callable, *args: Any) -> Any:
    """``fn(*args)`` with its float inputs cast to ``dtype`` and its float outputs cast back to
    float32 (for float32, exactly ``fn(*args)``)."""
    if dtype == "float32":
        return fn(*args)
    return _cast_floats(fn(*_cast_floats(args, as_dtype(dtype))), jnp.float32)

"""Parameters and configs as the model file stores them: pytrees <-> flat ``{path: array}``, the
parameter digest, and the model config <-> JSON.

``params_digest`` is SHA-256 over the parameters in sorted path order, each contributing its path,
dtype, shape and little-endian C-order bytes.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import ml_collections
import numpy as np


def flatten_params(params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """``{'a/b/kernel': array}`` from a nested mapping of arrays (Flax params, FrozenDict, ...).

    Keys must be non-empty strings without '/'. Arrays are fetched to host NumPy.
    """
    flat: dict[str, np.ndarray] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, Mapping) or (hasattr(node, "items") and not hasattr(node, "shape")):
            if not node and prefix:
                raise ValueError(f"empty sub-tree at {prefix!r}: cannot be stored")
            for k, v in node.items():
                k = str(k)
                if not k or "/" in k:
                    raise ValueError(f"parameter key {k!r} (under {prefix!r}) is empty or has '/'")
                walk(v, f"{prefix}/{k}" if prefix else k)
        else:
            if not prefix:
                raise ValueError("params must be a mapping of arrays, not a bare array")
            flat[prefix] = np.asarray(node)

    walk(params, "")
    if not flat:
        raise ValueError("params is empty")
    return flat


def unflatten_params(flat: Mapping[str, np.ndarray]) -> dict[str, Any]:
    """Nested plain dicts from ``flatten_params`` output."""
    out: dict[str, Any] = {}
    for path, value in flat.items():
        node = out
        *parents, leaf = path.split("/")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    return out


def canonical(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    return np.ascontiguousarray(
        a, dtype=a.dtype.newbyteorder("<") if a.dtype.byteorder == ">" else a.dtype
    )


def params_digest(params: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the parameters: sorted paths, dtype, shape and little-endian bytes."""
    flat = dict(params) if _is_flat(params) else flatten_params(params)
    h = hashlib.sha256()
    for path in sorted(flat):
        a = canonical(flat[path])
        h.update(path.encode())
        h.update(b"\0")
        h.update(a.dtype.str.encode())
        h.update(json.dumps(list(a.shape)).encode())
        h.update(b"\0")
        h.update(a.tobytes(order="C"))
    return h.hexdigest()


def _is_flat(params: Mapping[str, Any]) -> bool:
    """True for ``{'a/b': array}`` (no nested mappings); flattening it again changes nothing."""
    return all(
        isinstance(k, str) and not isinstance(v, Mapping) and hasattr(v, "shape")
        for k, v in params.items()
    )


def config_to_json(model_config: Any) -> dict[str, Any]:
    if isinstance(model_config, (ml_collections.ConfigDict, ml_collections.FrozenConfigDict)):
        d = model_config.to_dict()
    elif isinstance(model_config, Mapping):
        d = dict(model_config)
    else:
        raise TypeError(f"model_config must be a ConfigDict or dict, got {type(model_config)}")

    def plain(v: Any) -> Any:
        if isinstance(v, Mapping):
            return {str(k): plain(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [plain(x) for x in v]
        if isinstance(v, np.generic):
            return v.item()
        if v is None or isinstance(v, (bool, int, float, str)):
            return v
        raise TypeError(f"model config value {v!r} ({type(v).__name__}) is not JSON-serialisable")

    return plain(d)


def json_to_config(d: Mapping[str, Any]) -> ml_collections.ConfigDict:
    """JSON lists become tuples (Flax module fields must be hashable)."""

    def tup(v: Any) -> Any:
        if isinstance(v, Mapping):
            return {k: tup(x) for k, x in v.items()}
        if isinstance(v, list):
            return tuple(tup(x) for x in v)
        return v

    return ml_collections.ConfigDict(tup(dict(d)))

"""Writing and reading a model file: ``save_model``, ``load_model`` and ``add_coding_tables``."""

from __future__ import annotations

import json
import os
import warnings
import zipfile
from collections.abc import Mapping
from typing import Any

import ml_collections
import numpy as np

from mracnn_jax.model_file.archive import (
    CODING_PREFIX,
    FORMAT,
    FORMAT_VERSION,
    HEADER_NAME,
    PARAMS_PREFIX,
    STORAGE_DTYPES,
    ModelFileError,
    check_header,
    library_versions,
    open_archive,
    reading,
    write_atomically,
)
from mracnn_jax.model_file.coding_tables import (
    coding_header,
    compute_coding_tables,
    load_coding_tables,
    write_coding_arrays,
)
from mracnn_jax.model_file.params import (
    canonical,
    config_to_json,
    flatten_params,
    json_to_config,
    params_digest,
    unflatten_params,
)


def save_model(
    path: str | os.PathLike,
    model_config: Any,
    params: Mapping[str, Any],
    *,
    metadata: Mapping[str, Any] | None = None,
    dtype: str = "float32",
    coding_tables: bool = True,
) -> str:
    """Writes the model file atomically (a temporary file renamed into place).

    Args:
      path: destination file.
      model_config: ``config.model`` (ConfigDict or dict; JSON-serialisable values).
      params: the 'params' pytree (nested mapping of arrays).
      metadata: optional JSON-serialisable dict (step, λ, metrics, ...). A ``model_config``
        whose ``compute_dtype`` is not float32 (a run trained in bfloat16) is stored with
        float32, the precision a model file runs in, and the metadata's
        ``trained_compute_dtype`` keeps the other.
      dtype: storage dtype of floating parameters, 'float32' (exact) or 'float16'.
      coding_tables: also store the z coding tables, computed (with JAX) from the parameters as
        ``load_model`` will return them, when they include a factorized prior
        (``entropy_bottleneck``); parameters without one, or whose prior gives no valid
        probabilities (a warning then), get none.

    Returns:
      The digest stored in the header (of the parameters as ``load_model`` will return them).
    """
    if dtype not in STORAGE_DTYPES:
        raise ValueError(f"dtype must be one of {STORAGE_DTYPES}, got {dtype!r}")
    flat = flatten_params(params)
    stored: dict[str, np.ndarray] = {}
    for k, a in flat.items():
        if np.issubdtype(a.dtype, np.floating) or a.dtype.name == "bfloat16":
            a = np.asarray(a, dtype=np.float32).astype(dtype)
        elif not (np.issubdtype(a.dtype, np.integer) or a.dtype == np.bool_):
            raise TypeError(f"parameter {k!r} has unsupported dtype {a.dtype}")
        stored[k] = canonical(a)
    loaded_view = {k: _as_loaded(a) for k, a in stored.items()}
    digest = params_digest(loaded_view)
    tables = None
    if coding_tables:
        try:
            tables = compute_coding_tables(unflatten_params(loaded_view))
        except ValueError as e:  # e.g. a diverged prior (non-finite pmf): still save the params
            warnings.warn(f"model file {os.fspath(path)!r} written without z coding tables: {e}")
    config = config_to_json(model_config)
    metadata = dict(metadata or {})
    if config.get("compute_dtype", "float32") != "float32":
        metadata.setdefault("trained_compute_dtype", config["compute_dtype"])
        config["compute_dtype"] = "float32"
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_config": config,
        "storage_dtype": dtype,
        "params_digest": digest,
        "params": {
            k: {"shape": list(a.shape), "dtype": a.dtype.str} for k, a in sorted(stored.items())
        },
        "metadata": json.loads(json.dumps(metadata, default=_json_default)),
        "created_by": library_versions(),
    }
    if tables is not None:
        header["coding"] = coding_header(tables, digest)

    def write(zf: zipfile.ZipFile) -> None:
        zf.writestr(HEADER_NAME, json.dumps(header, indent=1, sort_keys=True))
        for k in sorted(stored):
            with zf.open(PARAMS_PREFIX + k + ".npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, stored[k], allow_pickle=False)
        if tables is not None:
            write_coding_arrays(zf, tables)

    write_atomically(path, write)
    return digest


def _json_default(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    if hasattr(v, "to_dict"):
        return v.to_dict()
    if isinstance(v, tuple):
        return list(v)
    return str(v)


def _as_loaded(a: np.ndarray) -> np.ndarray:
    return a.astype(np.float32) if a.dtype == np.float16 else a


def load_model(
    path: str | os.PathLike,
) -> tuple[ml_collections.ConfigDict, dict[str, Any], dict[str, Any]]:
    """Reads a model file.

    Returns:
      ``(model_config, params, metadata)``: the model config as a ConfigDict (JSON lists become
      tuples), the parameters as nested dicts of NumPy arrays (float16 storage is returned as
      float32), and the metadata dict.

    Raises:
      FileNotFoundError: no such file.
      ModelFileError: not a model file, a newer format, or corrupt (bad CRC, bad array, digest
        mismatch, missing or extra parameters).
    """
    spath = os.fspath(path)
    with open_archive(spath) as zf:
        header = check_header(zf, spath)
        names = {n for n in zf.namelist() if n.startswith(PARAMS_PREFIX) and n.endswith(".npy")}
        expected = {PARAMS_PREFIX + k + ".npy" for k in header["params"]}
        if names != expected:
            missing, extra = sorted(expected - names), sorted(names - expected)
            raise ModelFileError(
                f"{spath!r}: parameter entries do not match the header (missing "
                f"{missing[:3]}, unexpected {extra[:3]})"
            )
        flat: dict[str, np.ndarray] = {}
        for k, spec in header["params"].items():
            with (
                reading(spath, f"parameter {k!r}", also=(ValueError,)),  # ValueError: not a .npy
                zf.open(PARAMS_PREFIX + k + ".npy") as f,
            ):
                a = np.lib.format.read_array(f, allow_pickle=False)
            if list(a.shape) != list(spec["shape"]) or a.dtype.str != spec["dtype"]:
                raise ModelFileError(
                    f"{spath!r}: parameter {k!r} has shape {a.shape} / dtype "
                    f"{a.dtype.str}, header says {spec}"
                )
            flat[k] = _as_loaded(a)
    digest = params_digest(flat)
    if digest != header["params_digest"]:
        raise ModelFileError(
            f"{spath!r}: parameter digest mismatch (file corrupt or edited): "
            f"{digest} != {header['params_digest']}"
        )
    return (
        json_to_config(header["model_config"]),
        unflatten_params(flat),
        dict(header.get("metadata") or {}),
    )


def add_coding_tables(
    path: str | os.PathLike, tables: Mapping[str, Any] | None = None, *, replace: bool = False
) -> dict[str, Any] | None:
    """Adds the z coding tables to an existing model file, in place (atomically).

    The header gains its ``"coding"`` key; every parameter entry is rewritten byte for byte as it
    was (same name, time stamp and data) and the tables follow them. The parameters, config,
    metadata and digest do not change. ``tables`` default to ``compute_coding_tables`` of the
    parameters as ``load_model`` returns them (with this process's JAX); tables handed in must
    be that too (the header records this process's library versions as ``computed_by``).

    Returns:
      The tables now in the file: the stored ones, untouched, if it already has tables and
      ``replace`` is false; None (file untouched) if the parameters have no factorized prior.
    """
    spath = os.fspath(path)
    if not replace:
        existing = load_coding_tables(spath)
        if existing is not None:
            return existing
    _, params, _ = load_model(spath)  # also checks the digest
    tables = compute_coding_tables(params) if tables is None else tables
    if tables is None:
        return None
    with open_archive(spath) as zf:
        header = check_header(zf, spath)
        header_info = zf.getinfo(HEADER_NAME)
        with reading(spath, "an entry"):
            entries = [
                (info, zf.read(info))
                for info in zf.infolist()
                if info.filename != HEADER_NAME and not info.filename.startswith(CODING_PREFIX)
            ]
    header["coding"] = coding_header(tables, header["params_digest"])

    def copy_info(info: zipfile.ZipInfo) -> zipfile.ZipInfo:
        new = zipfile.ZipInfo(info.filename, date_time=info.date_time)
        new.compress_type, new.external_attr = info.compress_type, info.external_attr
        return new

    def write(zf: zipfile.ZipFile) -> None:
        zf.writestr(copy_info(header_info), json.dumps(header, indent=1, sort_keys=True))
        for info, data in entries:
            with zf.open(copy_info(info), "w", force_zip64=True) as f:
                f.write(data)
        write_coding_arrays(zf, tables)

    write_atomically(spath, write)
    return load_coding_tables(spath)

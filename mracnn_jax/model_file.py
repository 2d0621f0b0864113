"""The portable model file: one zip holding a model's config and parameters.

Layout (``zipfile``, entries stored uncompressed, each with its CRC-32):

* ``header.json`` (first entry): ``{"format": "mracnn-jax-model", "format_version": 1,
  "model_config": {...}, "storage_dtype": "float32" | "float16", "params_digest": "<sha256>",
  "params": {"<path>": {"shape": [...], "dtype": "<f4"}}, "metadata": {...}, "created_by":
  {library versions}}``;
* ``params/<path>.npy`` for every parameter, a NumPy .npy array (no pickle), where ``<path>``
  is the '/'-joined key path of the parameter in the ``params`` pytree, e.g.
  ``g_a/conv_0/kernel``;
* optionally (after the parameters), the z range-coding tables of the factorized prior
  (``mracnn_jax.coding.tables.z_coding_tables``): ``coding/z_offsets.npy`` (float32 ``[C]``, the
  quantisation offsets), ``coding/z_cdf.npy`` (int32, tfc's flat cdf rows) and
  ``coding/z_cdf_offset.npy`` (int32 ``[C]``), described in the header under ``"coding"``:
  ``{"precision", "tail_mass", "params_digest", "arrays": {name: {"shape", "dtype"}},
  "computed_by": {library versions, backend}}``. They are computed once, when the file is written,
  from the parameters as ``load_model`` returns them, so every decoder uses the same integers
  whatever its floating point. Files without them (written before they existed) are still
  format version 1 and load as before; ``load_coding_tables`` returns None for them, and
  ``add_coding_tables`` adds them, leaving every other entry byte for byte as it was.

Nothing in it depends on the library versions that wrote it (no pickle, no orbax, no Flax
serialisation): any reader with a zip and a .npy parser can load it.

``params_digest`` is SHA-256 over the parameters in sorted path order, each contributing its path,
dtype, shape and little-endian C-order bytes. The header stores the digest of the parameters as
``load_model`` returns them (float32; for float16 storage, after the round trip), and
``load_model`` checks it, so ``params_digest(load_model(f)[1]) == header['params_digest']``.
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import tempfile
import warnings
import zipfile
from collections.abc import Mapping
from typing import Any

import ml_collections
import numpy as np

from mracnn_jax.coding import tables as z_tables  # NumPy at import; JAX only when computing

FORMAT = "mracnn-jax-model"
FORMAT_VERSION = 1
HEADER_NAME = "header.json"
PARAMS_PREFIX = "params/"
CODING_PREFIX = "coding/"
CODING_ARRAYS = {"z_offsets": "<f4", "z_cdf": "<i4", "z_cdf_offset": "<i4"}  # name: dtype
STORAGE_DTYPES = ("float32", "float16")

__all__ = [
    "ModelFileError",
    "add_coding_tables",
    "compute_coding_tables",
    "entry_bytes",
    "flatten_params",
    "load_coding_tables",
    "load_model",
    "params_digest",
    "read_header",
    "save_model",
    "unflatten_params",
]


class ModelFileError(ValueError):
    """The file is not a readable MRACNN model file (the message says why)."""


# -------------------------------------------------------------------------------------------------
# Pytrees ↔ flat {path: array}.


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


def _canonical(a: np.ndarray) -> np.ndarray:
    a = np.asarray(a)
    return np.ascontiguousarray(
        a, dtype=a.dtype.newbyteorder("<") if a.dtype.byteorder == ">" else a.dtype
    )


def params_digest(params: Mapping[str, Any]) -> str:
    """SHA-256 (hex) of the parameters: sorted paths, dtype, shape and little-endian bytes."""
    flat = dict(params) if _is_flat(params) else flatten_params(params)
    h = hashlib.sha256()
    for path in sorted(flat):
        a = _canonical(flat[path])
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


# -------------------------------------------------------------------------------------------------
# Config ↔ JSON.


def _config_to_json(model_config: Any) -> dict[str, Any]:
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


def _json_to_config(d: Mapping[str, Any]) -> ml_collections.ConfigDict:
    """JSON lists become tuples (Flax module fields must be hashable)."""

    def tup(v: Any) -> Any:
        if isinstance(v, Mapping):
            return {k: tup(x) for k, x in v.items()}
        if isinstance(v, list):
            return tuple(tup(x) for x in v)
        return v

    return ml_collections.ConfigDict(tup(dict(d)))


# -------------------------------------------------------------------------------------------------
# Save / load.


def _library_versions(names=("mracnn-jax", "jax", "flax", "numpy")) -> dict[str, str]:
    import importlib.metadata as md

    out = {}
    for name in names:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


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
      metadata: optional JSON-serialisable dict (step, λ, metrics, ...).
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
        stored[k] = _canonical(a)
    loaded_view = {k: _as_loaded(a) for k, a in stored.items()}
    digest = params_digest(loaded_view)
    tables = None
    if coding_tables:
        try:
            tables = compute_coding_tables(unflatten_params(loaded_view))
        except ValueError as e:  # e.g. a diverged prior (non-finite pmf): still save the params
            warnings.warn(f"model file {os.fspath(path)!r} written without z coding tables: {e}")
    header = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model_config": _config_to_json(model_config),
        "storage_dtype": dtype,
        "params_digest": digest,
        "params": {
            k: {"shape": list(a.shape), "dtype": a.dtype.str} for k, a in sorted(stored.items())
        },
        "metadata": json.loads(json.dumps(dict(metadata or {}), default=_json_default)),
        "created_by": _library_versions(),
    }
    if tables is not None:
        header["coding"] = _coding_header(tables, digest)

    def write(zf: zipfile.ZipFile) -> None:
        zf.writestr(HEADER_NAME, json.dumps(header, indent=1, sort_keys=True))
        for k in sorted(stored):
            with zf.open(PARAMS_PREFIX + k + ".npy", "w", force_zip64=True) as f:
                np.lib.format.write_array(f, stored[k], allow_pickle=False)
        if tables is not None:
            _write_coding_arrays(zf, tables)

    _write_atomically(path, write)
    return digest


def _write_atomically(path: str | os.PathLike, write) -> None:
    """``write(zipfile)`` into a temporary file beside ``path``, then renamed onto it."""
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    os.makedirs(directory, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".mracnn", dir=directory)
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED) as zf:
            write(zf)
        if os.path.exists(path):  # a rewritten file keeps its permissions
            os.chmod(tmp, os.stat(path).st_mode & 0o7777)
        else:  # not mkstemp's 0600: what open() would give
            umask = os.umask(0)
            os.umask(umask)
            os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


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


def _open(path: str | os.PathLike) -> zipfile.ZipFile:
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"model file {path!r} does not exist")
    if not zipfile.is_zipfile(path):
        raise ModelFileError(
            f"{path!r} is not an MRACNN model file (not a zip archive); export one with "
            "`python train.py --export_only --workdir=WORKDIR`"
        )
    try:
        return zipfile.ZipFile(path, "r")
    except (zipfile.BadZipFile, OSError) as e:
        raise ModelFileError(f"{path!r}: unreadable zip archive ({e})") from e


def _read_header(zf: zipfile.ZipFile, path: str) -> dict[str, Any]:
    try:
        raw = zf.read(HEADER_NAME)
    except KeyError:
        raise ModelFileError(
            f"{path!r} is a zip file but not an MRACNN model file (no {HEADER_NAME})"
        ) from None
    except (zipfile.BadZipFile, OSError, EOFError) as e:
        raise ModelFileError(f"{path!r}: corrupt header ({e})") from e
    try:
        header = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelFileError(f"{path!r}: header is not valid JSON ({e})") from e
    if not isinstance(header, dict) or header.get("format") != FORMAT:
        raise ModelFileError(
            f"{path!r} is not an MRACNN model file (format {header.get('format') if isinstance(header, dict) else None!r})"
        )
    version = header.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise ModelFileError(
            f"{path!r} has model-file format version {version!r}; this library reads up to "
            f"{FORMAT_VERSION}: upgrade mracnn-jax"
        )
    for key in ("model_config", "params", "params_digest"):
        if key not in header:
            raise ModelFileError(f"{path!r}: header lacks {key!r}")
    return header


def entry_bytes(path: str | os.PathLike) -> dict[str, bytes]:
    """Each zip entry's local header and data exactly as stored (``add_coding_tables`` must leave
    every parameter entry of a file byte for byte as it was)."""
    out = {}
    with open(path, "rb") as f, zipfile.ZipFile(path) as zf:
        for info in zf.infolist():
            f.seek(info.header_offset)
            local = f.read(30)
            name_len, extra_len = struct.unpack("<HH", local[26:30])
            out[info.filename] = local + f.read(name_len + extra_len + info.compress_size)
    return out


def read_header(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON header (config, parameter shapes, digest, metadata) without loading arrays."""
    with _open(path) as zf:
        return _read_header(zf, os.fspath(path))


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
    with _open(spath) as zf:
        header = _read_header(zf, spath)
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
            try:
                with zf.open(PARAMS_PREFIX + k + ".npy") as f:
                    a = np.lib.format.read_array(f, allow_pickle=False)
            except (zipfile.BadZipFile, ValueError, OSError, EOFError) as e:
                raise ModelFileError(f"{spath!r}: parameter {k!r} is corrupt ({e})") from e
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
        _json_to_config(header["model_config"]),
        unflatten_params(flat),
        dict(header.get("metadata") or {}),
    )


# -------------------------------------------------------------------------------------------------
# z coding tables.


def compute_coding_tables(params: Mapping[str, Any]) -> dict[str, Any] | None:
    """``coding.tables.z_coding_tables`` of the parameters' factorized prior (with JAX), or None
    when they have no well-formed ``entropy_bottleneck``."""
    prior = z_tables.prior_params_of(params)
    return None if prior is None else z_tables.z_coding_tables(prior)


def _coding_header(tables: Mapping[str, Any], digest: str) -> dict[str, Any]:
    versions = _library_versions(("mracnn-jax", "jax", "jaxlib", "numpy"))
    try:
        import jax

        versions["backend"] = jax.default_backend()
    except ImportError:  # tables handed in by a caller without JAX
        pass
    return {
        "precision": int(tables["precision"]),
        "tail_mass": float(tables["tail_mass"]),
        "params_digest": digest,
        "arrays": {
            name: {"shape": list(np.shape(tables[name])), "dtype": dtype}
            for name, dtype in CODING_ARRAYS.items()
        },
        "computed_by": versions,
    }


def _write_coding_arrays(zf: zipfile.ZipFile, tables: Mapping[str, Any]) -> None:
    for name, dtype in CODING_ARRAYS.items():
        with zf.open(CODING_PREFIX + name + ".npy", "w", force_zip64=True) as f:
            a = np.ascontiguousarray(tables[name], dtype=dtype)
            np.lib.format.write_array(f, a, allow_pickle=False)


def _check_tables(t: dict[str, Any], where: str) -> None:
    """The tables are what a range coder can use: C rows ``[-precision, 0, ..., 2^precision]``,
    strictly increasing (every bin at least 1), one per offset."""
    c, p = len(t["z_offsets"]), t["precision"]
    cdf = t["z_cdf"].astype(np.int64)
    starts = np.flatnonzero(cdf < 0)
    ends = np.append(starts[1:], len(cdf)) - 1
    step = np.ones(max(len(cdf) - 1, 0), bool)  # diffs inside a row, after its 0
    step[starts[starts < len(step)]] = False
    step[starts[1:] - 1] = False
    ok = (
        1 <= p <= 16
        and c > 0
        and t["z_cdf_offset"].shape == (c,)
        and bool(np.all(np.isfinite(t["z_offsets"])))
        and len(starts) == c
        and starts[0] == 0
        and bool(np.all(cdf[starts] == -p))
        and bool(np.all(ends - starts >= 3))
        and bool(np.all(cdf[starts + 1] == 0))
        and bool(np.all(cdf[ends] == 1 << p))
        and bool(np.all(np.diff(cdf)[step] > 0))
    )
    if not ok:
        raise ModelFileError(f"{where}: the z coding tables are malformed")


def load_coding_tables(path: str | os.PathLike) -> dict[str, Any] | None:
    """The stored z coding tables, or None for a model file without them.

    Returns:
      ``{"z_offsets": float32 [C], "z_cdf": int32 flat, "z_cdf_offset": int32 [C],
      "precision": int, "tail_mass": float}``, as ``coding.tables.z_coding_tables`` gives them.

    Raises:
      ModelFileError: the tables are corrupt, malformed, or belong to other parameters.
    """
    spath = os.fspath(path)
    with _open(spath) as zf:
        header = _read_header(zf, spath)
        coding = header.get("coding")
        if coding is None:
            return None
        try:
            specs = coding["arrays"]
            out: dict[str, Any] = {"precision": int(coding["precision"])}
            out["tail_mass"] = float(coding["tail_mass"])
            if coding["params_digest"] != header["params_digest"]:
                raise ModelFileError(f"{spath!r}: the z coding tables belong to other parameters")
            for name, dtype in CODING_ARRAYS.items():
                with zf.open(CODING_PREFIX + name + ".npy") as f:
                    a = np.lib.format.read_array(f, allow_pickle=False)
                if a.dtype.str != dtype or a.ndim != 1 or list(a.shape) != specs[name]["shape"]:
                    raise ModelFileError(f"{spath!r}: z coding array {name!r} is malformed")
                out[name] = a
        except (KeyError, TypeError, ValueError, zipfile.BadZipFile, OSError, EOFError) as e:
            if isinstance(e, ModelFileError):
                raise
            raise ModelFileError(f"{spath!r}: z coding tables are corrupt ({e!r})") from e
    _check_tables(out, repr(spath))
    return out


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
    with _open(spath) as zf:
        header = _read_header(zf, spath)
        header_info = zf.getinfo(HEADER_NAME)
        entries = [
            (info, zf.read(info))
            for info in zf.infolist()
            if info.filename != HEADER_NAME and not info.filename.startswith(CODING_PREFIX)
        ]
    header["coding"] = _coding_header(tables, header["params_digest"])

    def copy_info(info: zipfile.ZipInfo) -> zipfile.ZipInfo:
        new = zipfile.ZipInfo(info.filename, date_time=info.date_time)
        new.compress_type, new.external_attr = info.compress_type, info.external_attr
        return new

    def write(zf: zipfile.ZipFile) -> None:
        zf.writestr(copy_info(header_info), json.dumps(header, indent=1, sort_keys=True))
        for info, data in entries:
            with zf.open(copy_info(info), "w", force_zip64=True) as f:
                f.write(data)
        _write_coding_arrays(zf, tables)

    _write_atomically(spath, write)
    return load_coding_tables(spath)

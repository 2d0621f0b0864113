"""The model file as a zip archive: its constants, opening and checking it, reading its header,
writing it atomically, and each entry's stored bytes. The layout is in ``model_file``'s docstring.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import lzma
import os
import re
import struct
import zipfile
import zlib
from collections.abc import Iterator
from typing import Any

from mracnn_jax import fileio

FORMAT = "mracnn-jax-model"
FORMAT_VERSION = 1
HEADER_NAME = "header.json"
PARAMS_PREFIX = "params/"
CODING_PREFIX = "coding/"
CODING_ARRAYS = {"z_offsets": "<f4", "z_cdf": "<i4", "z_cdf_offset": "<i4"}  # name: dtype
STORAGE_DTYPES = ("float32", "float16")
#: What reading a damaged zip raises besides BadZipFile: a flipped byte in its directory can ask
#: for an unknown format version or compression (NotImplementedError), encryption (RuntimeError),
#: or make the data undecompressable (zlib.error, lzma.LZMAError, EOFError, OSError).
ZIP_READ_ERRORS = (
    zipfile.BadZipFile,
    OSError,
    EOFError,
    NotImplementedError,
    RuntimeError,
    zlib.error,
    lzma.LZMAError,
    struct.error,
    UnicodeDecodeError,
)
DAMAGED_HINT = "the file is damaged: copy or export it again"


class ModelFileError(ValueError):
    """The file is not a readable MRACNN model file (the message says why)."""


def library_versions(names=("mracnn-jax", "jax", "flax", "numpy")) -> dict[str, str]:
    md = importlib.metadata
    out = {}
    for name in names:
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            pass
    return out


def write_atomically(path: str | os.PathLike, write) -> None:
    """``write(zipfile)`` into a new stored (uncompressed) zip archive at ``path``, atomically and
    with the permissions ``open()`` would give (``fileio.write_atomic``); creates the folder."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)

    def write_zip(f) -> None:
        with zipfile.ZipFile(f, "w", compression=zipfile.ZIP_STORED) as zf:
            write(zf)

    fileio.write_atomic(path, write_zip, prefix=".tmp-", suffix=".mracnn")


def open_archive(path: str | os.PathLike) -> zipfile.ZipFile:
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
    except ZIP_READ_ERRORS as e:
        raise ModelFileError(
            f"{path!r}: unreadable zip archive ({_one_line(e)}); {DAMAGED_HINT}"
        ) from e


@contextlib.contextmanager
def reading(path: str, what: str, also: tuple[type[Exception], ...] = ()) -> Iterator[None]:
    """Turns the errors of reading a damaged zip entry (``ZIP_READ_ERRORS``, and ``also``) into a
    one-line ModelFileError naming the file and ``what`` was being read."""
    try:
        yield
    except ModelFileError:
        raise
    except ZIP_READ_ERRORS + also as e:
        raise ModelFileError(f"{path!r}: {what} is corrupt ({_one_line(e)}); {DAMAGED_HINT}") from e


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


def check_header(zf: zipfile.ZipFile, path: str) -> dict[str, Any]:
    try:
        with reading(path, "the header"):
            raw = zf.read(HEADER_NAME)
    except KeyError:
        raise ModelFileError(
            f"{path!r} is a zip file but not an MRACNN model file (no {HEADER_NAME})"
        ) from None
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
            raise ModelFileError(f"{path!r}: header lacks {key!r}; {DAMAGED_HINT}")
    problem = header_problem(header)
    if problem:
        raise ModelFileError(f"{path!r}: malformed header: {problem}; {DAMAGED_HINT}")
    return header


def header_problem(header: dict[str, Any]) -> str | None:
    """What in a header (with every required key) does not have the type the format gives it
    (``model_file``'s docstring), or None: the checks that keep every reader of a header from
    failing on a wrong type."""
    config, params = header["model_config"], header["params"]
    if not isinstance(config, dict):
        return f"model_config is a {type(config).__name__}, not an object"
    if "name" in config and not isinstance(config["name"], str):
        return f"model_config name {config['name']!r} is not a string"
    channels = config.get("channels", 3)
    if not _is_int(channels) or channels not in (1, 3):
        return f"model_config channels {channels!r} is not 1 or 3"
    if not isinstance(params, dict) or not params:
        return "params is not an object of parameter shapes and dtypes"
    for k, spec in params.items():
        if not k or not isinstance(spec, dict):
            return f"parameter {k!r} has no shape and dtype object"
        shape, dtype = spec.get("shape"), spec.get("dtype")
        if not isinstance(shape, list) or not all(_is_int(n) and n >= 0 for n in shape):
            return f"parameter {k!r} has shape {shape!r}, not a list of sizes"
        if not isinstance(dtype, str):
            return f"parameter {k!r} has dtype {dtype!r}, not a string"
    digest = header["params_digest"]
    if not isinstance(digest, str) or not re.fullmatch(r"[0-9a-f]{64}", digest):
        return f"params_digest {digest!r} is not a SHA-256 hex digest"
    if header.get("storage_dtype", "float32") not in STORAGE_DTYPES:
        return f"storage_dtype {header['storage_dtype']!r} is not one of {STORAGE_DTYPES}"
    for key in ("metadata", "coding", "created_by"):
        if header.get(key) is not None and not isinstance(header[key], dict):
            return f"{key} is a {type(header[key]).__name__}, not an object"
    metadata = header.get("metadata") or {}
    lmbda, quality = metadata.get("lmbda"), metadata.get("quality")
    if lmbda is not None and not _is_number(lmbda):
        return f"metadata lmbda {lmbda!r} is not a number"
    if quality is not None and not _is_int(quality):
        return f"metadata quality {quality!r} is not a whole number"
    return None


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


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
    with open_archive(path) as zf:
        return check_header(zf, os.fspath(path))

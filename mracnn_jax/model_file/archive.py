"""The model file as a zip archive: its constants, opening and checking it, reading its header,
writing it atomically, and each entry's stored bytes. The layout is in ``model_file``'s docstring.
"""

from __future__ import annotations

import importlib.metadata
import json
import os
import struct
import tempfile
import zipfile
from typing import Any

FORMAT = "mracnn-jax-model"
FORMAT_VERSION = 1
HEADER_NAME = "header.json"
PARAMS_PREFIX = "params/"
CODING_PREFIX = "coding/"
CODING_ARRAYS = {"z_offsets": "<f4", "z_cdf": "<i4", "z_cdf_offset": "<i4"}  # name: dtype
STORAGE_DTYPES = ("float32", "float16")


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
    except (zipfile.BadZipFile, OSError) as e:
        raise ModelFileError(f"{path!r}: unreadable zip archive ({e})") from e


def check_header(zf: zipfile.ZipFile, path: str) -> dict[str, Any]:
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
    with open_archive(path) as zf:
        return check_header(zf, os.fspath(path))



"""The bundled models: the one module that knows where they live and how to pick one.

``mracnn_jax/assets/models`` holds the trained models shipped with the package
(``mracnn-bundled-q{1,2,3}.mracnn``). ``mracnn compress`` picks one by ``--quality`` (or the
default), ``mracnn decompress`` the one whose parameter digest the ``.mrac`` file names,
``mracnn models`` lists them, and ``evaluate.py``, the demo and the portability scripts use all
of them. They all ask this module, which reads each file's header only (no parameters, no JAX)
and caches it per (path, size, mtime).

A model file is a file named ``*.mracnn`` (``is_model_name``), the name ``mracnn export``,
``mracnn convert`` and ``train.py`` write; other files in a folder are not models. A model's
quality is its metadata ``quality``, else ``q<N>`` / ``quality<N>`` in its file name; the
default is the only model, else the one with metadata ``default: true``, else the middle
quality. ``identity_error`` is the one check that a bitstream was written by a model, used by
``codec.check_identity`` on a loaded model and by the CLI on a model file's header.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from pathlib import Path
from typing import Any

from mracnn_jax import model_file

BUNDLED_DIR = Path(__file__).resolve().parent / "assets" / "models"
SUFFIX = ".mracnn"
#: What to run for a model file when none is at hand (quoted in the no-model message).
EXPORT_HINT = (
    "`mracnn export --config mracnn --seed 0 model.mracnn` or "
    "`python train.py --export_only --workdir W`"
)


class NoModelError(LookupError):
    """No bundled model fits the request; the one-line message says what to pass instead."""


@dataclasses.dataclass(frozen=True)
class Entry:
    """A bundled model, from its file's header."""

    path: Path
    quality: int | None
    lmbda: float | None  # the rate-distortion weight it was trained with (metadata ``lmbda``)
    size: int  # file size in bytes
    params_digest: str  # hex SHA-256 of the parameters
    name: str | None  # the model config's name
    channels: int  # 3, or 1 for a grayscale model (the config's ``channels``)
    metadata: dict[str, Any] = dataclasses.field(compare=False, repr=False)


def is_model_name(path: str | os.PathLike) -> bool:
    """Whether ``path`` is named like a model file (the one suffix rule)."""
    return os.fspath(path).lower().endswith(SUFFIX)


def model_files(directory: str | os.PathLike) -> list[Path]:
    """The model files in ``directory`` (sorted by name; none for a missing folder)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    return sorted(p for p in directory.iterdir() if is_model_name(p) and p.is_file())


def header_channels(header: dict[str, Any]) -> int:
    """The image channels of the model a file header describes: its config's ``channels``, 3
    for files written before the field existed (as ``presets.with_defaults`` fills it in)."""
    return int((header.get("model_config") or {}).get("channels", 3))


@functools.lru_cache(maxsize=64)
def _read(path: str, size: int, mtime_ns: int) -> Entry | None:
    try:
        header = model_file.read_header(path)
    except (ValueError, OSError):
        return None  # not a readable model file: not offered
    metadata = dict(header.get("metadata") or {})
    quality = metadata.get("quality")
    if quality is None:
        match = re.search(r"(?:^|[^a-z])q(?:uality)?[-_]?(\d+)", Path(path).stem.lower())
        quality = int(match.group(1)) if match else None
    lmbda = metadata.get("lmbda")
    return Entry(
        path=Path(path),
        quality=None if quality is None else int(quality),
        lmbda=None if lmbda is None else float(lmbda),
        size=size,
        params_digest=str(header["params_digest"]),
        name=(header.get("model_config") or {}).get("name"),
        channels=header_channels(header),
        metadata=metadata,
    )


def bundled() -> list[Entry]:
    """Every readable model file in ``BUNDLED_DIR``, sorted by file name."""
    out = []
    for p in model_files(BUNDLED_DIR):
        st = p.stat()
        entry = _read(str(p), st.st_size, st.st_mtime_ns)
        if entry is not None:
            out.append(entry)
    return out


def qualities(entries: list[Entry] | None = None) -> list[int]:
    """The bundled qualities, ascending."""
    entries = bundled() if entries is None else entries
    return sorted({e.quality for e in entries if e.quality is not None})


def no_model_message(quality: int | None = None, bitstream: Any = None) -> str:
    """The one message for a request no bundled model fits: nothing is bundled, none has
    ``quality``, none wrote ``bitstream`` (its ``model_name`` and ``params_digest``), or several
    are and none is the default. It says what to pass and which qualities exist."""
    entries = bundled()
    if not entries:
        return (
            f"no --model given and no model is bundled in {BUNDLED_DIR} (no *{SUFFIX} file "
            f"there); pass --model FILE (make one with {EXPORT_HINT})"
        )
    have = ", ".join(map(str, qualities(entries))) or "none"
    if bitstream is not None:
        return (
            f"the file was written by model {bitstream.model_name!r} (params "
            f"{bitstream.params_digest.hex()}), which is not bundled (bundled qualities: {have}): "
            "pass --model FILE"
        )
    if quality is not None:
        return f"no bundled model has quality {quality} (bundled: {have}); pass --model FILE"
    return f"several models are bundled (qualities: {have}): choose one with --quality or --model"


def for_channels(channels: int) -> list[Entry]:
    """The bundled models for images of ``channels`` (1: grayscale, 3: colour): those built for
    them, else, for grayscale, the colour models (they code gray as three equal channels)."""
    entries = bundled()
    own = [e for e in entries if e.channels == channels]
    return own or [e for e in entries if e.channels == 3]


def by_quality(quality: int, channels: int = 3) -> Entry:
    """The bundled model of ``quality`` built for images of ``channels``, else the colour one of
    that quality (it codes gray as three equal channels); NoModelError if none."""
    entries = [e for e in bundled() if e.quality == quality]
    for wanted in (channels, 3):
        for entry in entries:
            if entry.channels == wanted:
                return entry
    raise NoModelError(no_model_message(quality))


def default(channels: int = 3) -> Entry:
    """The model used without --quality for images of ``channels`` (``for_channels``): the only
    one, the one with metadata ``default: true``, else the middle quality (quality 2 of the shipped
    three). NoModelError if none."""
    entries = for_channels(channels)
    if len(entries) == 1:
        return entries[0]
    for entry in entries:
        if entry.metadata.get("default"):
            return entry
    ranked = sorted((e for e in entries if e.quality is not None), key=lambda e: e.quality)
    if not ranked:
        raise NoModelError(no_model_message())
    return ranked[(len(ranked) - 1) // 2]


def _hex(digest: bytes | str) -> str:
    return digest.hex() if isinstance(digest, (bytes, bytearray)) else str(digest).lower()


def by_digest(prefix: bytes | str) -> Entry | None:
    """The bundled model whose parameter digest starts with ``prefix`` (bytes, e.g. a bitstream's
    16-byte ``params_digest``, or hex), else None."""
    prefix = _hex(prefix)
    if not prefix:
        return None
    return next((e for e in bundled() if e.params_digest.startswith(prefix)), None)


def identity_error(
    bs: Any, name: str | None, params_digest: bytes | str, source: str
) -> str | None:
    """None if the bitstream ``bs`` (``model_name``, ``params_digest`` bytes) was written by the
    model called ``name`` with parameter digest ``params_digest`` (bytes or hex, whole or a
    prefix at least as long as the file's); else the one-line reason, naming ``source`` (e.g.
    "the loaded model")."""
    wanted, held = bs.params_digest.hex(), _hex(params_digest)
    if held.startswith(wanted) and name == bs.model_name:
        return None
    return (
        f"{source} ({name!r}, params {held[: len(wanted)]}) is not the model that wrote this "
        f"file: it was written by model {bs.model_name!r} (params {wanted}); pass its model file"
    )

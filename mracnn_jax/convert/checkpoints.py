"""PyTorch checkpoint files and state dicts: reading, normalising, writing; the errors and report.

A state dict is a flat ``{key: array}`` mapping (NumPy arrays or torch tensors). Loading one
accepts a bare state dict or a dict holding it under ``'state_dict'`` (STF's ``.pth.tar``),
strips DataParallel's ``module.`` prefix and reads both entropy-bottleneck spellings
(``_matrix0`` in STF's vendored CompressAI, ``matrices.0`` / ``_matrices.0`` in CompressAI 1.2).
Only ``load_torch_state_dict`` and ``save_torch_state_dict`` need torch, imported when called.

Errors: a state dict that does not fit raises ``ConversionError`` (a ``ValueError``) with a
one-line message naming the first offending key (missing, unexpected, wrong shape or wrong
buffer value, in sorted key order).
"""

from __future__ import annotations

import os
import re
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from PIL import Image, UnidentifiedImageError

TORCH_HINT = (
    "reading or writing PyTorch checkpoints needs torch: pip install -r requirements/torch-cpu.txt "
    "(or torch from https://download.pytorch.org/whl/cpu)"
)


class ConversionError(ValueError):
    """A state dict does not fit the model (the one-line message names the first offending key)."""


@dataclass
class ConversionReport:
    """What an import ignored or noticed (nothing here changes the converted parameters)."""

    ignored: list[str] = field(default_factory=list)  # coding tables and other unused buffers
    notes: list[str] = field(default_factory=list)
    max_median_deviation: float | None = None  # max |quantiles[:, 0, 1] - our median| over channels

    def summary(self) -> str:
        parts = [f"{len(self.ignored)} buffers ignored"]
        if self.max_median_deviation is not None:
            parts.append(
                f"max |quantile median - density median| = {self.max_median_deviation:.3g}"
            )
        return "; ".join(parts + self.notes)


# -------------------------------------------------------------------------------------------------
# Reading state dicts.


def _to_numpy(value: Any, key: str) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor, without importing torch
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            value = value.float()
        return value.numpy()
    if isinstance(value, np.ndarray) or np.isscalar(value):
        return np.asarray(value)
    raise ConversionError(f"state dict entry {key!r} is a {type(value).__name__}, not a tensor")


_EB_NEW_NAMES = re.compile(r"^entropy_bottleneck\.(_?)(matrices|biases|factors)\.(\d+)$")
_EB_SINGULAR = {"matrices": "_matrix", "biases": "_bias", "factors": "_factor"}


def normalize_state_dict(obj: Mapping[str, Any]) -> OrderedDict[str, np.ndarray]:
    """``{key: np.ndarray}`` in STF spelling from a state dict or a checkpoint dict holding one.

    Unwraps ``obj['state_dict']``, strips a ``module.`` prefix and renames CompressAI 1.2's
    ``entropy_bottleneck.matrices.k`` (and ``_matrices.k``, ``biases``, ``factors``) to
    ``entropy_bottleneck._matrix{k}`` etc.
    """
    if not isinstance(obj, Mapping):
        raise ConversionError(f"expected a state dict (a mapping), got {type(obj).__name__}")
    if "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    out: OrderedDict[str, np.ndarray] = OrderedDict()
    for key, value in obj.items():
        key = str(key)
        key = key.removeprefix("module.")
        m = _EB_NEW_NAMES.match(key)
        if m:
            key = f"entropy_bottleneck.{_EB_SINGULAR[m.group(2)]}{m.group(3)}"
        if key in out:
            raise ConversionError(f"key {key!r} appears twice (after normalising names)")
        out[key] = _to_numpy(value, key)
    if not out:
        raise ConversionError("the state dict is empty")
    return out


def _import_torch():
    try:
        import torch
    except ImportError as e:
        raise ImportError(TORCH_HINT) from e
    return torch


def load_torch_state_dict(path: str | os.PathLike) -> OrderedDict[str, np.ndarray]:
    """Reads a ``.pth`` / ``.pth.tar`` file (``torch.load(weights_only=True)``, on the CPU).

    Returns the normalised state dict (``normalize_state_dict``) as NumPy arrays. Needs torch; no
    model code is imported or executed (``weights_only`` refuses arbitrary pickles).
    """
    path = os.fspath(path)
    what = _not_a_checkpoint(path) if os.path.exists(path) else None  # needs no torch
    if what:
        raise ConversionError(f"{path!r} is {what}, not a PyTorch checkpoint: {_EXPECTED}")
    torch = _import_torch()
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such checkpoint: {path!r}")
    try:
        with warnings.catch_warnings():
            # torch's note on a pickle protocol above 2, which changes nothing for a state dict
            warnings.filterwarnings("ignore", "Detected pickle protocol", UserWarning)
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many kinds; keep it one line
        raise ConversionError(
            f"{path!r} is not a PyTorch checkpoint torch can read ({_torch_reason(e)}): {_EXPECTED}"
        ) from e
    return normalize_state_dict(obj)


_EXPECTED = (
    "convert takes a .pth / .pth.tar file written by torch.save holding a state dict of "
    "CompressAI / STF layout (tensors only, bare or under 'state_dict')"
)


def _not_a_checkpoint(path: str) -> str | None:
    """What a file is when it is plainly no checkpoint (empty, a directory, an image), else None."""
    if os.path.isdir(path):
        return "a directory"
    if os.path.getsize(path) == 0:
        return "empty"
    try:
        with Image.open(path) as im:
            return f"a {im.format} image"
    except (UnidentifiedImageError, OSError, ValueError):
        return None


def _torch_reason(e: BaseException) -> str:
    """The part of torch's message that says what was wrong, as one sentence.

    ``weights_only`` failures wrap the reason (``Unsupported operand 80``, ``Unsupported global:
    GLOBAL foo.Net was not an allowed global``) in several sentences about the PyTorch 2.6 default;
    other errors lead with it (``PytorchStreamReader failed reading zip archive: ...``).
    """
    text = str(e).strip() or type(e).__name__
    match = re.search(r"WeightsUnpickler error:\s*(.*)", text, re.DOTALL)
    if match and match.group(1).strip():
        text = match.group(1).strip()
    text = " ".join(re.split(r"\n\s*\n", text, maxsplit=1)[0].split())  # the first paragraph
    text = re.split(r"(?<=[.!?]) (?=[A-Z])", text, maxsplit=1)[0].rstrip(".")
    return text


def save_torch_state_dict(state_dict: Mapping[str, np.ndarray], path: str | os.PathLike) -> None:
    """Writes ``{key: array}`` as a PyTorch state dict file (``torch.save``); needs torch."""
    torch = _import_torch()
    torch.save(
        OrderedDict((k, torch.from_numpy(np.ascontiguousarray(v))) for k, v in state_dict.items()),
        os.fspath(path),
    )

"""Loading ``configs/*.py`` files outside absl flags (the summary, export and benchmark tools)."""

from __future__ import annotations

import importlib.util
import pathlib

import ml_collections


def load_config(path: str) -> ml_collections.ConfigDict:
    """Runs ``get_config()`` of a config file; clear errors for a wrong path or a file without it."""
    file = pathlib.Path(path)
    if not file.is_file():
        raise FileNotFoundError(f"config file {path!r} does not exist (try configs/mracnn.py)")
    if file.suffix != ".py":
        raise ValueError(
            f"config {path!r} is not a Python config file: pass a .py file with get_config(), "
            f"e.g. configs/small.py or configs/mracnn.py"
        )
    spec = importlib.util.spec_from_file_location(f"_mracnn_config_{file.stem}", file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, "get_config"):
        raise ValueError(f"config file {path!r} has no get_config()")
    return module.get_config()

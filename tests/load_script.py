"""Importing a file that no package holds (a script, a benchmark, ``evaluate.py``) as a module, for
the tests that call its functions in this process."""

from __future__ import annotations

import importlib.util
import pathlib
import sys
from types import ModuleType


def load_script(path: pathlib.Path, name: str | None = None) -> ModuleType:
    """The module of the Python file ``path``, registered in ``sys.modules`` as ``name`` (its file
    stem by default) before it runs, which dataclasses defined in it need."""
    name = name or path.stem
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module

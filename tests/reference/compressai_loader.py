"""Import the installed CompressAI's entropy models, GDN and rANS coder without its package root.

``import compressai`` runs the package ``__init__``, which imports ``compressai.datasets`` and
with it torchvision; PyPI's torchvision is a CUDA build that fails to load beside torch's CPU
build, so ``make test`` installs CompressAI without dependencies. Its ``entropy_models``,
``layers`` and compiled ``ans`` modules need only torch: where the plain import fails they are
imported from the installed package under a bare parent module standing in for the top-level
``__init__``. That parent carries what the entropy models ask of the top level: the compiled
``ans`` coder and the default-coder choice ``"ans"``.

Used by tests/test_convert.py (parity of the layers) and benchmarks/bench_torch_wacnn_codec.py
(the PyTorch WACNN codec with CompressAI's rANS coder).
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types


def import_compressai() -> types.SimpleNamespace:
    """``entropy_models``, ``gdn`` (``compressai.layers.gdn``) and ``ans`` of CompressAI.

    Raises ImportError when CompressAI is not installed.
    """
    spec = importlib.util.find_spec("compressai")
    if spec is None or not spec.submodule_search_locations:
        raise ImportError("compressai is not installed")
    try:
        import compressai  # noqa: F401
    except Exception:  # noqa: BLE001  # torchvision (or another optional dependency) does not load
        for name in [m for m in sys.modules if m == "compressai" or m.startswith("compressai.")]:
            del sys.modules[name]
        parent = types.ModuleType("compressai")
        parent.__path__ = list(spec.submodule_search_locations)
        parent.__spec__ = spec
        sys.modules["compressai"] = parent
        parent.ans = importlib.import_module("compressai.ans")
        parent.available_entropy_coders = lambda: ["ans"]
        parent.get_entropy_coder = lambda: "ans"
    return types.SimpleNamespace(
        entropy_models=importlib.import_module("compressai.entropy_models"),
        gdn=importlib.import_module("compressai.layers.gdn"),
        ans=importlib.import_module("compressai.ans"),
    )

"""Independent PyTorch references for the parity tests and benchmarks.

``torch_wacnn`` is the public WACNN written from STF's code (not from ours), ``compressai_loader``
imports CompressAI's layers without its package root. They check ``mracnn_jax.convert`` and the
PyTorch twins in ``mracnn_jax.torch_models`` from outside, so nothing here imports either.
Imported as ``reference.<module>``: pytest puts ``tests/`` on ``sys.path`` (``tests/`` itself
has no ``__init__.py``); the benchmarks import the package by its location
(``load_reference`` in ``benchmarks/bench_torch_wacnn.py``).
"""

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

Modules: ``archive`` (the zip: constants, opening, the header, atomic writes), ``params``
(pytrees <-> flat arrays, the digest, config <-> JSON), ``coding_tables`` (the z tables' entries)
and ``save_load`` (``save_model``, ``load_model``, ``add_coding_tables``).
"""

from mracnn_jax.model_file.archive import (
    CODING_ARRAYS,
    CODING_PREFIX,
    FORMAT,
    FORMAT_VERSION,
    HEADER_NAME,
    PARAMS_PREFIX,
    STORAGE_DTYPES,
    ModelFileError,
    entry_bytes,
    read_header,
)
from mracnn_jax.model_file.coding_tables import compute_coding_tables, load_coding_tables
from mracnn_jax.model_file.params import (
    flatten_params,
    params_digest,
    unflatten_params,
)
from mracnn_jax.model_file.save_load import add_coding_tables, load_model, save_model

__all__ = [
    "CODING_ARRAYS",
    "CODING_PREFIX",
    "FORMAT",
    "FORMAT_VERSION",
    "HEADER_NAME",
    "PARAMS_PREFIX",
    "STORAGE_DTYPES",
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

"""PyTorch checkpoints <-> our Flax parameters: WACNN (STF key names), CompressAI layers, MRACNN.

What it is for: running the public WACNN (``Googolxx/STF``) and other CompressAI-layout weights
with this library, and handing our models (MRACNN included) to PyTorch code, with every
convention difference between the two frameworks handled here and nowhere else.

    sd = load_torch_state_dict("wacnn.pth.tar")      # {key: np.ndarray}; needs torch
    cfg, params, report = from_torch_state_dict(sd, arch="wacnn")
    save_model("wacnn.mracnn", cfg, params)          # or: mracnn convert IN OUT --arch wacnn
    sd2 = to_torch_state_dict(params, cfg)           # back to PyTorch key names

A state dict is a flat ``{key: array}`` mapping (NumPy arrays or torch tensors). Loading one
accepts a bare state dict or a dict holding it under ``'state_dict'`` (STF's ``.pth.tar``),
strips DataParallel's ``module.`` prefix and reads both entropy-bottleneck spellings
(``_matrix0`` in STF's vendored CompressAI, ``matrices.0`` / ``_matrices.0`` in CompressAI 1.2).

The package, one module per concern:

* ``checkpoints``: PyTorch files and state dicts (reading, normalising, writing), the errors;
* ``layouts``: Flax path <-> PyTorch key, and the array layouts of the two frameworks;
* ``buffers``: what PyTorch keeps beside the parameters, and CompressAI's single layers;
* ``state_dicts``: the two directions, and WACNN's config read off a state dict.

Errors: a state dict that does not fit raises ``ConversionError`` (a ``ValueError``) with a
one-line message naming the first offending key (missing, unexpected, wrong shape or wrong
buffer value, in sorted key order).
"""

from __future__ import annotations

import os

from mracnn_jax import model_file
from mracnn_jax.convert.buffers import (
    density_quantiles,
    entropy_bottleneck_from_torch,
    gdn_from_torch,
)
from mracnn_jax.convert.checkpoints import (
    ConversionError,
    ConversionReport,
    load_torch_state_dict,
    normalize_state_dict,
    save_torch_state_dict,
)
from mracnn_jax.convert.layouts import torch_key_map
from mracnn_jax.convert.state_dicts import (
    ARCHS,
    from_torch_state_dict,
    infer_wacnn_config,
    to_torch_state_dict,
)

__all__ = [
    "ARCHS",
    "ConversionError",
    "ConversionReport",
    "convert_checkpoint",
    "density_quantiles",
    "entropy_bottleneck_from_torch",
    "from_torch_state_dict",
    "gdn_from_torch",
    "infer_wacnn_config",
    "load_torch_state_dict",
    "normalize_state_dict",
    "save_torch_state_dict",
    "to_torch_state_dict",
    "torch_key_map",
]


def convert_checkpoint(
    in_path: str | os.PathLike,
    out_path: str | os.PathLike,
    arch: str = "wacnn",
    model_config=None,
    *,
    dtype: str = "float32",
) -> tuple[str, ConversionReport]:
    """Reads a PyTorch checkpoint and writes the portable model file (``model_file.save_model``).

    Returns ``(params digest, report)``. The metadata records the source file and the report.
    """
    sd = load_torch_state_dict(in_path)
    cfg, params, report = from_torch_state_dict(sd, arch, model_config)
    metadata = {
        "source": os.path.abspath(os.fspath(in_path)),
        "converted_from": f"pytorch ({arch})",
        "conversion": report.summary(),
    }
    return model_file.save_model(out_path, cfg, params, metadata=metadata, dtype=dtype), report

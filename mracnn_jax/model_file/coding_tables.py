"""The z range-coding tables a model file may carry: computed once when the file is written, so
every decoder uses the same integers whatever its floating point; read back and checked.

Entries ``coding/z_offsets.npy`` (float32 ``[C]``), ``coding/z_cdf.npy`` (int32, tfc's flat cdf
rows) and ``coding/z_cdf_offset.npy`` (int32 ``[C]``), described in the header under
``"coding"``: ``{"precision", "tail_mass", "params_digest", "arrays": {name: {"shape", "dtype"}},
"computed_by": {library versions, backend}}``.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Mapping
from typing import Any

import numpy as np

from mracnn_jax.coding import tables as z_tables  # NumPy at import; JAX only when computing
from mracnn_jax.model_file.archive import (
    CODING_ARRAYS,
    CODING_PREFIX,
    DAMAGED_HINT,
    ZIP_READ_ERRORS,
    ModelFileError,
    check_header,
    library_versions,
    open_archive,
)


def compute_coding_tables(params: Mapping[str, Any]) -> dict[str, Any] | None:
    """``coding.tables.z_coding_tables`` of the parameters' factorized prior (with JAX), or None
    when they have no well-formed ``entropy_bottleneck``."""
    prior = z_tables.prior_params_of(params)
    return None if prior is None else z_tables.z_coding_tables(prior)


def coding_header(tables: Mapping[str, Any], digest: str) -> dict[str, Any]:
    versions = library_versions(("mracnn-jax", "jax", "jaxlib", "numpy"))
    try:
        import jax

        versions["backend"] = jax.default_backend()
    except ImportError:  # tables handed in by a caller without JAX
        pass
    return {
        "precision": int(tables["precision"]),
        "tail_mass": float(tables["tail_mass"]),
        "params_digest": digest,
        "arrays": {
            name: {"shape": list(np.shape(tables[name])), "dtype": dtype}
            for name, dtype in CODING_ARRAYS.items()
        },
        "computed_by": versions,
    }


def write_coding_arrays(zf: zipfile.ZipFile, tables: Mapping[str, Any]) -> None:
    for name, dtype in CODING_ARRAYS.items():
        with zf.open(CODING_PREFIX + name + ".npy", "w", force_zip64=True) as f:
            a = np.ascontiguousarray(tables[name], dtype=dtype)
            np.lib.format.write_array(f, a, allow_pickle=False)


def check_tables(t: dict[str, Any], where: str) -> None:
    """The tables are what a range coder can use: C rows ``[-precision, 0, ..., 2^precision]``,
    strictly increasing (every bin at least 1), one per offset."""
    c, p = len(t["z_offsets"]), t["precision"]
    cdf = t["z_cdf"].astype(np.int64)
    starts = np.flatnonzero(cdf < 0)
    ends = np.append(starts[1:], len(cdf)) - 1
    step = np.ones(max(len(cdf) - 1, 0), bool)  # diffs inside a row, after its 0
    step[starts[starts < len(step)]] = False
    step[starts[1:] - 1] = False
    ok = (
        1 <= p <= 16
        and c > 0
        and t["z_cdf_offset"].shape == (c,)
        and bool(np.all(np.isfinite(t["z_offsets"])))
        and len(starts) == c
        and starts[0] == 0
        and bool(np.all(cdf[starts] == -p))
        and bool(np.all(ends - starts >= 3))
        and bool(np.all(cdf[starts + 1] == 0))
        and bool(np.all(cdf[ends] == 1 << p))
        and bool(np.all(np.diff(cdf)[step] > 0))
    )
    if not ok:
        raise ModelFileError(f"{where}: the z coding tables are malformed")


def load_coding_tables(path: str | os.PathLike) -> dict[str, Any] | None:
    """The stored z coding tables, or None for a model file without them.

    Returns:
      ``{"z_offsets": float32 [C], "z_cdf": int32 flat, "z_cdf_offset": int32 [C],
      "precision": int, "tail_mass": float}``, as ``coding.tables.z_coding_tables`` gives them.

    Raises:
      ModelFileError: the tables are corrupt, malformed, or belong to other parameters.
    """
    spath = os.fspath(path)
    with open_archive(spath) as zf:
        header = check_header(zf, spath)
        coding = header.get("coding")
        if coding is None:
            return None
        try:
            specs = coding["arrays"]
            out: dict[str, Any] = {"precision": int(coding["precision"])}
            out["tail_mass"] = float(coding["tail_mass"])
            if coding["params_digest"] != header["params_digest"]:
                raise ModelFileError(f"{spath!r}: the z coding tables belong to other parameters")
            for name, dtype in CODING_ARRAYS.items():
                with zf.open(CODING_PREFIX + name + ".npy") as f:
                    a = np.lib.format.read_array(f, allow_pickle=False)
                if a.dtype.str != dtype or a.ndim != 1 or list(a.shape) != specs[name]["shape"]:
                    raise ModelFileError(f"{spath!r}: z coding array {name!r} is malformed")
                out[name] = a
        except (KeyError, TypeError, ValueError, *ZIP_READ_ERRORS) as e:
            if isinstance(e, ModelFileError):
                raise
            raise ModelFileError(
                f"{spath!r}: z coding tables are corrupt ({e!r}); {DAMAGED_HINT}"
            ) from e
    check_tables(out, repr(spath))
    return out

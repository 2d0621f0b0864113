"""Writes ``mracnn_jax/assets/gaussian_tables.npz``, the y range-coding tables, with TensorFlow.

    .venv/bin/python scripts/make_gaussian_tables.py [--check] [OUT]

The tables are those of ``tfc_models.YCoder`` (tensorflow-compression 2.14's
``LocationScaleIndexedEntropyModel(NoisyNormal, num_scales=64, scale_fn, tail_mass=2^-8,
range_coder_precision=12)``), generated once here and read without TensorFlow by
``mracnn_jax.coding.tables.gaussian_tables()``. The file holds ``cdf`` (int32, tfc's flat rows
``[-12, 0, ..., 4096]``), ``cdf_offset`` (int32 [64]), ``precision``, ``tail_mass`` and ``scales``
(float32 [64], ``scale_fn(0..63)`` as TensorFlow evaluates it). ``--check`` compares an existing
file with a fresh build instead of writing (exit 1 on a difference).
"""

from __future__ import annotations

import argparse
import io
import pathlib
import sys

import numpy as np

DEFAULT_OUT = (
    pathlib.Path(__file__).resolve().parents[1] / "mracnn_jax" / "assets" / "gaussian_tables.npz"
)


def build() -> dict[str, np.ndarray]:
    import tensorflow as tf

    from mracnn_jax.coding import tfc_models

    coder = tfc_models.YCoder()
    return {
        "cdf": coder.model.cdf.numpy().astype(np.int32),
        "cdf_offset": coder.model.cdf_offset.numpy().astype(np.int32),
        "precision": np.int32(tfc_models.PRECISION),
        "tail_mass": np.float64(tfc_models.TAIL_MASS),
        "scales": tfc_models.scale_fn(tf.range(coder.num_scales)).numpy().astype(np.float32),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", nargs="?", default=str(DEFAULT_OUT))
    ap.add_argument("--check", action="store_true", help="compare instead of writing")
    args = ap.parse_args(argv)
    fresh = build()
    if args.check:
        with np.load(args.out, allow_pickle=False) as stored:
            same = set(stored.files) == set(fresh) and all(
                stored[k].dtype == fresh[k].dtype and np.array_equal(stored[k], fresh[k])
                for k in fresh
            )
        print(f"{args.out}: {'identical to' if same else 'DIFFERS from'} a fresh build")
        return 0 if same else 1
    buf = io.BytesIO()
    np.savez_compressed(buf, **fresh)  # entries time-stamped 1980: the same bytes every time
    pathlib.Path(args.out).write_bytes(buf.getvalue())
    rows = len(fresh["cdf_offset"])
    print(f"wrote {args.out}: {rows} rows, {fresh['cdf'].size} cdf values, {buf.tell()} bytes")
    return 0


if __name__ == "__main__":
    sys.exit(main())

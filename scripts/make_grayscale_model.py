"""A grayscale model file initialised from a colour one (``mracnn_jax.models.grayscale``).

    .venv/bin/python scripts/make_grayscale_model.py IN.mracnn OUT.mracnn [--output mean|luma]
        [--dtype float32|float16]

Loads the colour model, sums the kernels of the convolutions that read the image over their three
input channels and averages (``--output mean``, the default) or luma-weights (``luma``) the last
synthesis layer's kernel and bias over its three output channels, and writes a model file with
``channels = 1`` and the name ``<name>-gray``; every other parameter is kept. On a gray image g the
new model computes exactly what the colour model computes on (g, g, g), with the chosen average of
its three output channels as the reconstruction: a starting point for fine-tuning on gray crops
(``docs/grayscale.md``), not a trained grayscale model.

The file is written as ``train.py`` exports do (``model_file.save_model``, with the z coding
tables computed from the parameters); the storage dtype is the input's unless ``--dtype``. The z
prior is the colour model's, so the script checks that the tables equal the input file's (when it
has them) and says so. Run it with the stack whose decoders the tables must match (``.venv`` for
the bundled models; see ``scripts/add_coding_tables.py``).
"""

from __future__ import annotations

import argparse
import os
import sys

import numpy as np

from mracnn_jax import model_file
from mracnn_jax.models.grayscale import OUTPUT_WEIGHTS, grayscale_from_colour

#: Metadata of the colour model that still describes the gray one.
KEPT_METADATA = ("quality", "lmbda", "loss_metric", "default")


def convert(src: str, dst: str, output: str = "mean", dtype: str | None = None) -> dict:
    """Writes ``dst`` from ``src``; returns a summary (names, digests, dtype, tables check)."""
    config, params, metadata = model_file.load_model(src)
    header = model_file.read_header(src)
    gray_config, gray_params = grayscale_from_colour(config, params, output)
    dtype = dtype or header.get("storage_dtype", "float32")
    meta = {k: metadata[k] for k in KEPT_METADATA if k in metadata}
    meta["initialised_from"] = {
        "file": os.path.basename(src),
        "name": str(config.name),
        "params_digest": header["params_digest"],
        "method": f"image-input kernels summed over RGB, output layer {output} of RGB",
        "metadata": metadata,
    }
    digest = model_file.save_model(dst, gray_config, gray_params, metadata=meta, dtype=dtype)
    src_tables, dst_tables = model_file.load_coding_tables(src), model_file.load_coding_tables(dst)
    same = None
    if src_tables is not None and dst_tables is not None:
        same = all(np.array_equal(src_tables[k], dst_tables[k]) for k in model_file.CODING_ARRAYS)
    return {
        "in": src,
        "out": dst,
        "name": str(gray_config.name),
        "params_digest": digest,
        "dtype": dtype,
        "coding_tables": dst_tables is not None,
        "tables_equal_input": same,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("input", metavar="IN.mracnn", help="a colour model file")
    ap.add_argument("output", metavar="OUT.mracnn", help="the grayscale model file to write")
    ap.add_argument("--output", dest="weights", choices=tuple(OUTPUT_WEIGHTS), default="mean",
                    help="weights of the colour output channels (default: mean)")  # fmt: skip
    ap.add_argument("--dtype", choices=model_file.STORAGE_DTYPES, default=None,
                    help="storage dtype (default: the input's)")  # fmt: skip
    args = ap.parse_args(argv)
    if os.path.abspath(args.input) == os.path.abspath(args.output):
        print("OUT must differ from IN (the colour model is kept)", file=sys.stderr)
        return 2
    s = convert(args.input, args.output, args.weights, args.dtype)
    print(f"{s['out']}: {s['name']}, {s['dtype']}, params_digest {s['params_digest']}")
    if not s["coding_tables"]:
        print("  WARNING: written without z coding tables", file=sys.stderr)
    elif s["tables_equal_input"] is False:
        print("  WARNING: z coding tables differ from the input's (another JAX stack?)")
    elif s["tables_equal_input"]:
        print("  z coding tables equal the input's")
    return 0


if __name__ == "__main__":
    sys.exit(main())

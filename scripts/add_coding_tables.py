"""Adds the z coding tables (offsets and quantised cdfs) to existing model files, in place.

    .venv/bin/python scripts/add_coding_tables.py MODEL.mracnn... [--replace]

For each file: computes ``mracnn_jax.coding.tables.z_coding_tables`` from the parameters as
``load_model`` returns them and stores them (``model_file.add_coding_tables``): the header gains
its ``"coding"`` key, the tables follow the parameters, and every parameter entry keeps its bytes.
Then checks that the parameters (entry bytes), config, metadata and params digest are unchanged and
that the stored tables read back as computed, and prints the digest and the file's SHA-256 before
and after.

Idempotent: a file that already has tables is left as it is (the script says whether they equal a
fresh computation here), unless ``--replace``. The tables depend on the floating point of the JAX
that computes them: run this with the stack whose decoder the tables must match (for the bundled
models, ``.venv``: jax 0.4.34, the stack of every decoder before the tables were stored), and
without ``XLA_FLAGS`` (the tests' ``--xla_backend_optimization_level=0`` changes the medians).
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys

import numpy as np

from mracnn_jax import model_file


def sha256(path: str) -> str:
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def same_tables(a: dict, b: dict) -> bool:
    return all(
        np.array_equal(a[k], b[k]) and np.asarray(a[k]).dtype == np.asarray(b[k]).dtype
        for k in model_file.CODING_ARRAYS
    ) and (a["precision"], a["tail_mass"]) == (b["precision"], b["tail_mass"])


def process(path: str, replace: bool) -> bool:
    before_sha = sha256(path)
    before_header = model_file.read_header(path)
    before_entries = model_file.entry_bytes(path)
    config, params, metadata = model_file.load_model(path)  # checks the digest
    digest = before_header["params_digest"]
    fresh = model_file.compute_coding_tables(params)
    print(f"{path}\n  params_digest before: {digest}\n  sha256 before:        {before_sha}")
    if fresh is None:
        print("  no factorized prior (entropy_bottleneck): nothing to add")
        return True
    stored = model_file.load_coding_tables(path)
    if stored is not None and not replace:
        verdict = "equal" if same_tables(stored, fresh) else "NOT equal"
        print(f"  already has tables ({verdict} to a fresh computation here): left unchanged")
        return True
    model_file.add_coding_tables(path, fresh, replace=True)

    after_header = model_file.read_header(path)
    config2, params2, metadata2 = model_file.load_model(path)
    after_entries = model_file.entry_bytes(path)
    params_names = [n for n in before_entries if n.startswith(model_file.PARAMS_PREFIX)]
    checks = {
        "digest": after_header["params_digest"] == digest == model_file.params_digest(params2),
        "parameter entries byte for byte": all(
            after_entries.get(n) == before_entries[n] for n in params_names
        ),
        "entry order": [n for n in after_entries if n in before_entries]
        == [n for n in before_entries if not n.startswith(model_file.CODING_PREFIX)],
        "config": config2.to_dict() == config.to_dict(),
        "metadata": metadata2 == metadata,
        "header otherwise": {k: v for k, v in after_header.items() if k != "coding"}
        == {k: v for k, v in before_header.items() if k != "coding"},
        "tables read back": same_tables(model_file.load_coding_tables(path), fresh),
    }
    print(f"  params_digest after:  {after_header['params_digest']}")
    print(f"  sha256 after:         {sha256(path)}")
    c = after_header["coding"]
    print(
        f"  tables: {len(fresh['z_offsets'])} channels, {len(fresh['z_cdf'])} cdf values, "
        f"precision {c['precision']}, tail mass {c['tail_mass']}, computed by {c['computed_by']}"
    )
    for name, ok in checks.items():
        print(f"  {'ok' if ok else 'FAILED'}: {name} unchanged" if name != "tables read back"
              else f"  {'ok' if ok else 'FAILED'}: {name}")  # fmt: skip
    return all(checks.values())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", metavar="MODEL")
    ap.add_argument("--replace", action="store_true", help="recompute tables a file already has")
    ap.add_argument("--allow-xla-flags", action="store_true", help="run even with XLA_FLAGS set")
    args = ap.parse_args(argv)
    if os.environ.get("XLA_FLAGS") and not args.allow_xla_flags:
        print(
            f"XLA_FLAGS={os.environ['XLA_FLAGS']!r} may change the tables: unset it",
            file=sys.stderr,
        )
        return 2
    import jax

    print(f"jax {jax.__version__}, numpy {np.__version__}, backend {jax.default_backend()}")
    results = [process(p, args.replace) for p in args.models]  # every file, even after a failure
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())

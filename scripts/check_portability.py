"""The portability checks on a whole data set (default: Kodak, the three bundled models).

    python scripts/check_portability.py [--data DIR] [--relative 1e-4] [--limit N] [--out F.json]
                                        [--encode-only]

For every image and model it

* encodes the image (a real ``.mrac`` file);
* decodes it with a decoder whose entropy parameters carry relative noise (``--relative``,
  ``coding.perturbation``: h_s outputs, mu, sigma before rounding, the LRP outputs, every slice)
  and checks that the symbols are the encoder's and the image differs by float noise only (PSNR
  of the perturbed decode against the encoder's prediction);
* where tensorflow-compression is importable (``.venv``), checks that the numba coder wrote the
  same bytes as tfc's coder for the same tables and symbols: the z string, and each y string
  after its scale-index agreement block;
* counts the agreement blocks' bytes: the rate cost of portability, against the file without
  them (the old format wrote the same range-coded strings without the blocks).

It prints one line per file and a summary per model; ``--out`` writes all rows as JSON.
``--encode-only`` measures the rate cost alone (no perturbed decode, no tfc comparison).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import pathlib
import sys
import time

import numpy as np

from mracnn_jax import codec, images, zoo
from mracnn_jax.coding import container, perturbation


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def _tfc_equal(model, result, bs) -> bool:
    """The file's strings equal tensorflow-compression's for the same tables and symbols."""
    from mracnn_jax.coding import tfc_models

    t = model.coding_tables()
    zc = tfc_models.ZCoder(t["z_cdf"], t["z_cdf_offset"], t["precision"])
    if zc.compress(result.z_symbols) != bs.z_string:
        return False
    yc = tfc_models.y_coder()
    syms = np.split(result.y_symbols, model.num_slices, axis=-1)
    idx = np.split(result.scale_indexes, model.num_slices, axis=-1)
    return all(
        s.endswith(yc.compress(np.ascontiguousarray(y), np.ascontiguousarray(k)))
        for s, y, k in zip(bs.y_strings, syms, idx)
    )


def check(
    model, rgb: np.ndarray, relative: float, seed: int, tfc: bool, decode: bool = True
) -> dict:
    result = codec.compress_with_info(rgb, model, estimate_bits=False)
    row = {"bytes": len(result.data), "agreement_bytes": result.bits["agreement"] // 8}
    if not decode:
        return row
    bs = container.unpack(result.data)
    noisy = perturbation.perturbed(model, relative, seed=seed)
    try:
        dec = codec.decompress_with_info(result.data, noisy)
    except codec.CodecError as e:
        row["error"] = str(e)
    else:
        row["same_symbols"] = bool(
            np.array_equal(dec.y_symbols, result.y_symbols)
            and np.array_equal(dec.z_symbols, result.z_symbols)
        )
        row["psnr_vs_encoder_db"] = _psnr(dec.image, result.reconstruction)
    if tfc:
        row["tfc_bytes_equal"] = _tfc_equal(model, result, bs)
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", type=pathlib.Path, default=pathlib.Path("../shared/data/kodak"))
    p.add_argument(
        "--models",
        type=pathlib.Path,
        nargs="+",
        default=[e.path for e in zoo.for_channels(3)],
    )
    p.add_argument("--relative", type=float, default=1e-4)
    p.add_argument("--limit", type=int, default=0, help="first N images only")
    p.add_argument("--out", type=pathlib.Path)
    p.add_argument(
        "--encode-only", action="store_true", help="the rate cost only: no perturbed decode"
    )
    args = p.parse_args(argv)
    paths = images.list_images(args.data) if args.data.is_dir() else []
    paths = paths[: args.limit or None]
    if not paths:
        print(f"no images in {args.data}", file=sys.stderr)
        return 2
    decode = not args.encode_only
    tfc = decode and importlib.util.find_spec("tensorflow_compression") is not None
    rows, failures = [], 0
    for mpath in args.models:
        model = codec.LoadedModel.load(mpath)
        for n, img in enumerate(paths):
            t = time.perf_counter()
            rgb, _ = images.read_image(img)
            row = {
                "model": mpath.name,
                "image": img.name,
                **check(model, rgb, args.relative, n, tfc, decode),
            }
            row["seconds"] = round(time.perf_counter() - t, 2)
            bad = decode and (
                "error" in row
                or not row["same_symbols"]
                or row["psnr_vs_encoder_db"] < 40
                or row.get("tfc_bytes_equal") is False
            )
            failures += bad
            rows.append(row)
            print(json.dumps(row), flush=True)
    print(
        f"\nrelative noise {args.relative:g}; tensorflow-compression byte check: "
        f"{'on' if tfc else 'off (not installed or --encode-only)'}"
        + ("" if decode else "; encode only: no decoding checked")
    )
    print(
        "model | files | decoded, same symbols | min PSNR vs encoder | tfc bytes equal | "
        "agreement bytes | rate cost"
    )
    for mpath in args.models:
        mine = [r for r in rows if r["model"] == mpath.name]
        ok = [r for r in mine if r.get("same_symbols")]
        agree = sum(r["agreement_bytes"] for r in mine)
        total = sum(r["bytes"] for r in mine)
        psnrs = [r["psnr_vs_encoder_db"] for r in ok]
        tfc_ok = sum(bool(r.get("tfc_bytes_equal")) for r in mine) if tfc else "-"
        print(
            f"{mpath.name} | {len(mine)} | {len(ok)} | "
            f"{min(psnrs) if psnrs else float('nan'):.1f} dB | {tfc_ok} | {agree} | "
            f"{100 * agree / (total - agree):.3f} %"
        )
    agree = sum(r["agreement_bytes"] for r in rows)
    total = sum(r["bytes"] for r in rows)
    print(
        f"all | {len(rows)} | failures {failures} | rate cost {100 * agree / (total - agree):.3f} %"
    )
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""Range coder speed: mracnn_jax.coding.range_coder (numba) against tensorflow-compression.

Both coders code the same symbols with the same tables in one process, and the bytes are checked
to be equal:

  * y: a slice ``[1, 48, 32, 32]`` (a 768x512 image's latent, 32 channels) with the real y model's
    tables (``tfc_models.YCoder``), scale indexes drawn log-normally around scale 0.7 and symbols
    ``round(N(0, scale))`` of each element's scale;
  * z: ``[1, 12, 8, 192]`` (the hyper-latent of the same image) through ``tfc_models.ZCoder`` with
    tables of discretised logistics (per-channel scales 0.3 to 6, tail mass 2^-8).

tfc is timed through the coders the codec calls (``YCoder.compress/decompress``,
``ZCoder.compress/decompress``: eager TensorFlow ops, decoding in a watchdog thread); ours with
``encode``/``decode`` on ``Tables`` built once; the tfc models' own ``compress``/``decompress``
(no wrapper, no thread) are timed too. Medians of ``--repeats`` calls after a warm-up
(numba's compilation is cached on disk). Needs .venv (TensorFlow):

    .venv/bin/python benchmarks/bench_range_coder.py [--repeats 30]

Prints a Markdown table (symbols/s, and our speed over tfc's: > 1 is faster) and a JSON line.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np

from mracnn_jax.coding import range_coder as rc
from mracnn_jax.coding import tfc_models

tf = tfc_models.tf


def median_seconds(fn, repeats: int) -> float:
    fn()
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def y_case(rng):
    yc = tfc_models.y_coder()
    tables = rc.Tables.from_tfc_flat(yc.model.cdf.numpy(), yc.model.cdf_offset.numpy(), 12)
    scales = tfc_models.scale_fn(np.arange(yc.num_scales)).numpy()
    shape = (1, 48, 32, 32)
    sigma = np.exp(rng.normal(np.log(0.7), 1.0, shape))
    idx = np.clip(np.searchsorted(scales, sigma), 0, yc.num_scales - 1)
    symbols = np.rint(rng.normal(size=shape) * scales[idx]).astype(np.int32)
    tfc_pair = (lambda: yc.compress(symbols, idx), lambda s: yc.decompress(s, idx))
    x, i = tf.constant(symbols.astype(np.float32)), tf.constant(idx.astype(np.int32))
    raw = (lambda: yc.model.compress(x, i), lambda s: yc.model.decompress(s, i))
    return "y 1x48x32x32", symbols, idx, tables, tfc_pair, raw


def z_case(rng):
    import tensorflow_compression as tfc

    channels, precision = 192, tfc_models.PRECISION
    rows, offsets = [], []
    scales = rng.uniform(0.3, 6.0, channels)
    for s in scales:
        half = int(np.ceil(s * np.log(2 / tfc_models.TAIL_MASS - 1)))  # logistic tail quantile
        x = np.arange(-half, half + 1, dtype=np.float64)
        p = 1 / (1 + np.exp(-(x + 0.5) / s)) - 1 / (1 + np.exp(-(x - 0.5) / s))
        q = np.append(p, max(1 - p.sum(), 0.0)).astype(np.float32)
        row = tfc.pmf_to_quantized_cdf(q, precision=precision).numpy()
        rows.append(np.concatenate([[-precision], row]))
        offsets.append(-half)
    flat = np.concatenate(rows).astype(np.int32)
    offsets = np.asarray(offsets, np.int32)
    zc = tfc_models.ZCoder(flat, offsets, precision)
    tables = rc.Tables.from_tfc_flat(flat, offsets, precision)
    shape = (1, 12, 8, channels)
    symbols = np.rint(rng.logistic(size=shape) * scales).astype(np.int32)
    ch = np.broadcast_to(np.arange(channels, dtype=np.int32), shape)
    tfc_pair = (lambda: zc.compress(symbols), lambda s: zc.decompress(s, shape[1:3]))
    x, hw = tf.constant(symbols.astype(np.float32)), tf.constant(shape[1:3], tf.int32)
    raw = (lambda: zc.model.compress(x), lambda s: zc.model.decompress(s, hw))
    return "z 1x12x8x192", symbols, ch, tables, tfc_pair, raw


def time_case(name, symbols, rows, tables, tfc_pair, raw_pair, repeats: int) -> dict:
    (tfc_enc, tfc_dec), (raw_enc, raw_dec) = tfc_pair, raw_pair
    ours = rc.encode(symbols, rows, tables)
    theirs = tfc_enc()
    assert ours == theirs, f"{name}: the strings differ"
    np.testing.assert_array_equal(rc.decode(ours, rows, tables), symbols)
    np.testing.assert_array_equal(tfc_dec(theirs), symbols)
    raw_strings = raw_enc()
    t = {
        "tfc_encode": median_seconds(tfc_enc, repeats),
        "tfc_decode": median_seconds(lambda: tfc_dec(theirs), repeats),
        "tfc_model_encode": median_seconds(raw_enc, repeats),
        "tfc_model_decode": median_seconds(lambda: raw_dec(raw_strings), repeats),
        "ours_encode": median_seconds(lambda: rc.encode(symbols, rows, tables), repeats),
        "ours_decode": median_seconds(lambda: rc.decode(ours, rows, tables), repeats),
    }
    n = symbols.size
    row = {"case": name, "symbols": n, "bytes": len(ours)}
    row.update({k + "_sym_per_s": n / v for k, v in t.items()})
    row["encode_speedup"] = t["tfc_encode"] / t["ours_encode"]
    row["decode_speedup"] = t["tfc_decode"] / t["ours_decode"]
    row["encode_speedup_vs_model"] = t["tfc_model_encode"] / t["ours_encode"]
    row["decode_speedup_vs_model"] = t["tfc_model_decode"] / t["ours_decode"]
    return row


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    results = [time_case(*case, args.repeats) for case in (y_case(rng), z_case(rng))]

    print(
        "| case | symbols | bytes | tfc encode | ours encode | x | tfc decode | ours decode | x |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r['case']} | {r['symbols']} | {r['bytes']} "
            f"| {r['tfc_encode_sym_per_s'] / 1e6:.2f} M/s | {r['ours_encode_sym_per_s'] / 1e6:.2f} M/s "
            f"| {r['encode_speedup']:.2f} "
            f"| {r['tfc_decode_sym_per_s'] / 1e6:.2f} M/s | {r['ours_decode_sym_per_s'] / 1e6:.2f} M/s "
            f"| {r['decode_speedup']:.2f} |"
        )
    print("\nWithout tfc_models' wrappers (the tfc model's compress/decompress called directly):")
    for r in results:
        print(
            f"  {r['case']}: tfc encode {r['tfc_model_encode_sym_per_s'] / 1e6:.2f} M/s "
            f"(ours {r['encode_speedup_vs_model']:.2f}x), decode "
            f"{r['tfc_model_decode_sym_per_s'] / 1e6:.2f} M/s "
            f"(ours {r['decode_speedup_vs_model']:.2f}x)"
        )
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

#!/usr/bin/env python
"""Codec speed, memory and rate at 768x512: real .mrac files through tensorflow-compression.

For each config (default mracnn_jax/configs/mracnn.py and mracnn_jax/configs/wacnn.py, random initialisation with
``--seed``, exported to a model file by a first subprocess; or one ``--model`` file) a fresh
subprocess, like ``mracnn compress`` / ``decompress`` would:

  * loads the model file and builds the coders (TensorFlow import, y tables, z tables from the
    prior: "setup");
  * encodes (the file only, as ``mracnn compress`` does: no synthesis) and decodes the image once
    (compilation + run), then ``--repeats`` more times, and
    reports the median seconds of each, split into network (JAX) and entropy coding (tfc range
    coder); compile seconds = first call - median steady call, per side;
  * checks that the decoder returns exactly the reconstruction an encoder predicts (one more
    encode with the synthesis, writing the same bytes), and that repeated calls
    compile nothing (``LoadedModel.compilations``);
  * the rate check: payload bits of the file against the ideal code length of the same symbols
    under the coding tables (-log2 of the quantised probabilities plus the escape codes), and,
    with ``--forward``, the JAX model's own -log2 likelihood (inference forward pass, unsnapped
    sigma; one more compilation at full size);
  * peak RSS of the subprocess (resource.getrusage ru_maxrss) after each stage; the reported peak
    is the codec's (model, coders, encoding and decoding), before the optional forward pass.

    .venv/bin/python benchmarks/bench_codec.py                      # both configs, Kodak 01
    .venv/bin/python benchmarks/bench_codec.py --configs small --repeats 2

The reference: with ``--torch PYTHON`` (default this interpreter, where ``make test`` installs
torch and CompressAI; ``none`` to skip) benchmarks/bench_torch_wacnn_codec.py first times the
PyTorch WACNN codec with CompressAI's rANS coder on the same image, and mracnn_jax/configs/wacnn.py is then
timed on *the same weights* (its state dict converted with ``mracnn_jax.convert``) instead of
our own random initialisation, so that both code the same latents. The table gives each side's
ratio to PyTorch's.

Run it on a quiet machine (``uptime`` load well under the core count). Targets: wacnn encodes
and decodes at least as fast as the PyTorch WACNN with rANS (quoted at 2.0 s and 2.15 s on the
2-core development machine), mracnn within 1.6x of that, peak memory under 2 GiB. Prints a
Markdown table and, as its last line, a JSON object with every number.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import platform
import subprocess
import sys
import time

from mracnn_jax.config_files import REPO, data_path

HERE = pathlib.Path(__file__).resolve().parent
DEFAULT_IMAGE = data_path("kodak", "kodim01.png")
TORCH_WACNN_QUOTED = {"encode_s": 2.0, "decode_s": 2.15, "peak_gib": 1.1}  # the targets' figures


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _child(args) -> dict:
    import resource
    import statistics

    import numpy as np

    def peak_mib() -> float:
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0

    peaks = {}
    t0 = time.perf_counter()
    from mracnn_jax import codec, images
    from mracnn_jax.config_files import load_config

    if args.export_to and args.from_torch:  # the PyTorch reference's weights, converted
        from mracnn_jax.convert import convert_checkpoint

        convert_checkpoint(args.from_torch, args.export_to, arch="wacnn")
        return {"init_s": time.perf_counter() - t0, "peak_rss_mib": peak_mib()}
    if args.export_to:  # random initialisation, written to a model file for the timing run
        model = codec.LoadedModel.from_config(load_config(args.config), seed=args.seed)
        model.save(args.export_to, {"seed": args.seed, "config": args.config})
        return {"init_s": time.perf_counter() - t0, "peak_rss_mib": peak_mib()}
    if args.cache_dir:
        codec.enable_compilation_cache(args.cache_dir)
    model = codec.LoadedModel.load(args.model)
    load_s = time.perf_counter() - t0
    peaks["model"] = peak_mib()
    _log(f"[{model.name}] model loaded in {load_s:.1f} s")

    rgb, mode = images.read_image(args.image)
    image = rgb[:, :, 0] if mode == "L" else rgb
    h, w = rgb.shape[:2]

    t = time.perf_counter()
    model.z_coder()
    model.y_coder()
    setup_s = time.perf_counter() - t
    peaks["coders"] = peak_mib()

    # Encoding as `mracnn compress` does it: the file only, no prediction of the decoded image.
    first_enc = codec.compress_with_info(image, model, reconstruct=False)
    peaks["first_encode"] = peak_mib()
    first_dec = codec.decompress_with_info(first_enc.data, model)
    peaks["first_decode"] = peak_mib()
    predicted = codec.compress_with_info(image, model, estimate_bits=False)  # with the synthesis
    compiled = model.compilations()
    _log(
        f"[{model.name}] first encode {first_enc.seconds['total']:.1f} s, "
        f"first decode {first_dec.seconds['total']:.1f} s ({compiled} executables)"
    )
    enc, dec = [], []
    for _ in range(args.repeats):
        enc.append(
            codec.compress_with_info(image, model, estimate_bits=False, reconstruct=False).seconds
        )
        dec.append(codec.decompress_with_info(first_enc.data, model).seconds)
    exact = predicted.data == first_enc.data and bool(
        np.array_equal(first_dec.image, predicted.reconstruction)
    )
    peaks["coding"] = peak_mib()

    def med(runs, key):
        return statistics.median(r[key] for r in runs)

    out = {
        "model": model.name,
        "source": args.source or f"model file {args.model}",
        "image": str(args.image),
        "size": [h, w],
        "load_s": load_s,
        "setup_s": setup_s,
        "encode_s": med(enc, "total"),
        "encode_network_s": med(enc, "network"),
        "encode_entropy_s": med(enc, "entropy"),
        "decode_s": med(dec, "total"),
        "decode_network_s": med(dec, "network"),
        "decode_entropy_s": med(dec, "entropy"),
        "encode_compile_s": first_enc.seconds["network"] - med(enc, "network"),
        "decode_compile_s": first_dec.seconds["network"] - med(dec, "network"),
        "executables": compiled,
        "recompiled": model.compilations() != compiled,
        "exact_round_trip": exact,
        "file_bytes": len(first_enc.data),
        "header_bytes": first_enc.bits["header"] // 8,
        "bpp": first_enc.bits["file"] / (h * w),
        "payload_bits": first_enc.bits["payload"],
        "table_bits": first_enc.bits["table"],
        "z_payload_bits": first_enc.bits["z_payload"],
        "z_table_bits": first_enc.bits["z_table"],
        "y_payload_bits": sum(first_enc.bits["y_payload"]),
        "y_table_bits": sum(first_enc.bits["y_table"]),
        "payload_over_table": first_enc.bits["payload"] / first_enc.bits["table"],
    }
    if args.forward:
        import jax
        import jax.numpy as jnp

        from mracnn_jax.models.registry import forward_any_size

        x = jnp.asarray(rgb[None], jnp.float32) / 255.0
        t = time.perf_counter()
        lik = jax.jit(lambda p, x: forward_any_size(model.module, p, x)["likelihoods"])(
            model.params, x
        )
        out["forward_s"] = time.perf_counter() - t
        out["model_bits"] = float(
            sum(np.sum(-np.log2(np.asarray(v, np.float64))) for v in lik.values())
        )
        out["payload_over_model"] = out["payload_bits"] / out["model_bits"]
        peaks["forward"] = peak_mib()
    out["peak_rss_mib"] = peaks["coding"]  # the codec's peak (before the optional forward pass)
    out["peak_rss_mib_by_stage"] = peaks
    return out


def _run_child(argv: list[str], timeout: float) -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run(
        [sys.executable, __file__, "--child", *argv],
        check=False,
        stdout=subprocess.PIPE,
        stderr=None,  # progress goes straight to our stderr
        text=True,
        timeout=timeout,
        cwd=REPO,
        env=env,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"child {argv} failed with status {proc.returncode}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _run_torch_reference(python: str, image: str, repeats: int, state_dict: str, timeout: float):
    proc = subprocess.run(
        [
            python,
            str(HERE / "bench_torch_wacnn_codec.py"),
            "--threads",
            "2",
            "--repeats",
            str(repeats),
            "--image",
            image,
            "--save-state-dict",
            state_dict,
        ],
        check=False,
        stdout=subprocess.PIPE,
        text=True,
        timeout=timeout,
        cwd=REPO,
    )
    if proc.returncode != 0:
        _log(f"the PyTorch reference failed (status {proc.returncode}); no ratios")
        return None
    return json.loads(proc.stdout.strip().splitlines()[-1])


def _table(results: list[dict], torch_ref: dict | None) -> str:
    rows = [
        (
            "| model | encode s (net + entropy) | decode s (net + entropy) | vs PyTorch enc / dec "
            "| compile s enc / dec | peak MiB | bpp | payload / table bits | exact |"
        ),
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def ratios(r):
        if not torch_ref:
            return "n/a"
        return (
            f"{r['encode_s'] / torch_ref['encode_s']:.2f}x / "
            f"{r['decode_s'] / torch_ref['decode_s']:.2f}x"
        )

    for r in results:
        rows.append(
            f"| {r['model']} | {r['encode_s']:.2f} ({r['encode_network_s']:.2f} + "
            f"{r['encode_entropy_s']:.3f}) | {r['decode_s']:.2f} ({r['decode_network_s']:.2f} + "
            f"{r['decode_entropy_s']:.3f}) | {ratios(r)} "
            f"| {r['encode_compile_s']:.1f} / {r['decode_compile_s']:.1f} "
            f"| {r['peak_rss_mib']:.0f} | {r['bpp']:.4f} | {r['payload_bits']} / "
            f"{r['table_bits']:.0f} = {r['payload_over_table']:.5f} | {r['exact_round_trip']} |"
        )
    if torch_ref:
        t = torch_ref
        rows.append(
            f"| PyTorch WACNN + CompressAI rANS (torch {t['torch']}) | {t['encode_s']:.2f} "
            f"({t['encode_network_s']:.2f} + {t['encode_entropy_s']:.3f}) | {t['decode_s']:.2f} "
            f"({t['decode_network_s']:.2f} + {t['decode_entropy_s']:.3f}) | 1.00x / 1.00x | - "
            f"| {t['peak_rss_mib']:.0f} | {t['bpp']:.4f} | - | y_hat {t['y_hat_exact']} |"
        )
    return "\n".join(rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--configs", nargs="+", default=["mracnn", "wacnn"])
    parser.add_argument("--model", help="a model file instead of random initialisation (one run)")
    parser.add_argument("--image", default=str(DEFAULT_IMAGE))
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--forward", action="store_true", help="also the JAX model's -log2 p")
    parser.add_argument("--cache-dir", help="persistent JAX compilation cache")
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument(
        "--torch",
        default=sys.executable,
        help="python with torch and CompressAI for the PyTorch reference (default: this one); "
        "'none' to skip",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--config", help=argparse.SUPPRESS)
    parser.add_argument("--export-to", help=argparse.SUPPRESS)
    parser.add_argument("--from-torch", help=argparse.SUPPRESS)
    parser.add_argument("--source", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.child:
        print(json.dumps(_child(args)))
        return 0

    if "xla_backend_optimization_level=0" in os.environ.get("XLA_FLAGS", ""):
        _log("warning: XLA_FLAGS lowers the optimisation level; timings will not be representative")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    _log(f"load average {load:.2f} on {os.cpu_count()} cores")
    common = ["--image", args.image, "--repeats", str(args.repeats)]
    if args.forward:
        common.append("--forward")
    if args.cache_dir:
        common += ["--cache-dir", args.cache_dir]
    results, torch_ref = [], None
    if args.model:
        results.append(_run_child(["--model", args.model] + common, args.timeout))
    else:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            state_dict = os.path.join(tmp, "torch_wacnn.pt")
            if args.torch != "none" and pathlib.Path(args.torch).exists():
                _log("PyTorch WACNN with CompressAI's rANS coder (the reference)")
                torch_ref = _run_torch_reference(
                    args.torch, args.image, args.repeats, state_dict, args.timeout
                )
            for config in args.configs:
                path = os.path.join(tmp, pathlib.Path(config).stem + ".mracnn")
                export_args = ["--config", config, "--seed", str(args.seed), "--export-to", path]
                source = f"{config}, random initialisation (seed {args.seed}), exported"
                if torch_ref and pathlib.Path(config).stem == "wacnn":
                    export_args += ["--from-torch", state_dict]
                    source = f"{config}, the PyTorch reference's weights (converted)"
                export = _run_child(export_args, args.timeout)
                result = _run_child(["--model", path, "--source", source] + common, args.timeout)
                result["init_s"] = export["init_s"]
                results.append(result)
    print(_table(results, torch_ref))
    summary = {
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "load_avg_1m": load},
        "torch_wacnn_quoted": TORCH_WACNN_QUOTED,
        "torch_wacnn_codec": torch_ref,
        "results": results,
    }
    print(json.dumps(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())

#!/usr/bin/env python
"""CPU timing of the PyTorch WACNN reference (tests/reference/torch_wacnn.py).

Measures, after warm-up, the median wall time of
  * eval:  one forward pass, eval mode (rounding), no grad, at 1x3x512x768 (Kodak size);
  * train: one training step at batch 4 of 256x256: forward, loss = lambda*255^2*MSE + bpp,
           backward, gradient clipping at norm 1.0 (STF default), Adam step (lr 1e-4), then the
           entropy-bottleneck aux loss backward + its Adam step (lr 1e-3), as STF's train.py does
           (--no-clip / --no-aux drop those two parts);
plus the process's peak RSS after each phase and, with torch.utils.flop_counter, the MACs
(conv/linear/matmul multiply-accumulates = counted FLOPs / 2, counted on a 64x64 input and
scaled by the pixel count, which is exact here).

Human-readable progress goes to stderr; the LAST line on stdout is one JSON object, so another
benchmark can run this as a subprocess and compute ratios in the same run:

    .venv/bin/python benchmarks/bench_torch_wacnn.py --threads 2 --repeats 3   # torch: make test

Peak RSS (resource.getrusage ru_maxrss) is a process-wide high-water mark: with --mode all the
train figure includes the eval phase; run --mode eval and --mode train separately for clean peaks.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import os
import pathlib
import platform
import resource
import statistics
import sys
import time

import torch

REFERENCE = pathlib.Path(__file__).resolve().parents[1] / "tests" / "reference"


def _reference(name: str):
    """``tests/reference/<name>.py`` as ``reference.<name>``, the name the tests import it by.
    The package is found by its location, so nothing of ``tests/`` goes on ``sys.path``; under
    pytest (``tests/`` on the path) the package already imported is reused."""
    if "reference" not in sys.modules:
        spec = importlib.util.spec_from_file_location(
            "reference", REFERENCE / "__init__.py", submodule_search_locations=[str(REFERENCE)]
        )
        package = importlib.util.module_from_spec(spec)
        sys.modules["reference"] = package
        spec.loader.exec_module(package)
    return importlib.import_module(f"reference.{name}")


def load_reference():
    """tests/reference/torch_wacnn.py (the PyTorch WACNN), for this and the other benchmarks."""
    return _reference("torch_wacnn")


def load_compressai():
    """CompressAI's entropy_models, gdn and ans (tests/reference/compressai_loader.py)."""
    return _reference("compressai_loader").import_compressai()


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _flop_counter():
    try:
        from torch.utils.flop_counter import FlopCounterMode
    except ImportError:  # older torch
        return None
    return FlopCounterMode(display=False)


def _count_gmacs(fn_for_shape, b: int, h: int, w: int):
    """MACs of fn at (b, 3, h, w), counted on a 1x3x64x64 input and scaled by pixel count.

    Every counted op (convs, the windowed-attention matmuls and linears, the entropy
    bottleneck's per-element matmuls) is linear in the number of pixels when H and W are
    multiples of 64, so the scaling is exact (4.304 GMACs at 64x128 -> 206.6 at 512x768).
    """
    counter = _flop_counter()
    if counter is None or h % 64 or w % 64:
        return None
    with counter:
        fn_for_shape(1, 64, 64)
    return counter.get_total_flops() / 2 * (b * h * w) / (64 * 64) / 1e9


def _timed(fn, warmup: int, repeats: int, label: str):
    for i in range(warmup):
        t0 = time.perf_counter()
        fn()
        _log(f"[{label}] warm-up {i}: {time.perf_counter() - t0:.2f}s")
    times = []
    for i in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
        _log(f"[{label}] run {i}: {times[-1]:.2f}s")
    return times


def make_train_step(
    model, ref, x, lmbda: float, clip: bool = True, aux: bool = True, last: dict | None = None
):
    """STF's training step on batch ``x`` as a no-argument callable, in train mode:
    forward, loss = lambda*255^2*MSE + bpp, backward, gradient clipping at norm 1, Adam (lr 1e-4),
    then the entropy bottleneck's aux loss backward and its Adam step (lr 1e-3). ``last`` receives
    the step's loss terms."""
    main_params = [p for n, p in model.named_parameters() if not n.endswith(".quantiles")]
    aux_params = [p for n, p in model.named_parameters() if n.endswith(".quantiles")]
    opt = torch.optim.Adam(main_params, lr=1e-4)
    aux_opt = torch.optim.Adam(aux_params, lr=1e-3)

    def train_step(inp=x):
        model.train()  # each call: the same model may serve an eval-mode forward in between
        opt.zero_grad(set_to_none=True)
        aux_opt.zero_grad(set_to_none=True)
        out = model(inp)
        losses = ref.rate_distortion_loss(out, inp, lmbda)
        losses["loss"].backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(main_params, 1.0)
        opt.step()
        if aux:
            model.aux_loss().backward()
            aux_opt.step()
        if last is not None:
            last.update({k: v.detach().item() for k, v in losses.items()})

    return train_step


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--threads", type=int, default=2, help="torch.set_num_threads (default 2)")
    p.add_argument("--mode", choices=("all", "eval", "train"), default="all")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--eval-hw", type=int, nargs=2, default=(512, 768), metavar=("H", "W"))
    p.add_argument("--train-batch", type=int, default=4)
    p.add_argument("--train-hw", type=int, nargs=2, default=(256, 256), metavar=("H", "W"))
    p.add_argument("--lmbda", type=float, default=0.013)
    p.add_argument("--no-clip", action="store_true", help="skip clip_grad_norm_(1.0)")
    p.add_argument("--no-aux", action="store_true", help="skip the aux-loss step")
    p.add_argument("--no-macs", action="store_true", help="skip the flop_counter run")
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    ref = load_reference()
    load_start = os.getloadavg()

    t0 = time.perf_counter()
    model = ref.WACNN(N=192, M=320)
    build_s = time.perf_counter() - t0
    n_params = sum(p.numel() for p in model.parameters())
    _log(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {n_params:,} params, "
        f"built in {build_s:.2f}s, loadavg {load_start}"
    )

    result = {
        "bench": "torch_wacnn",
        "framework": "torch",
        "torch_version": torch.__version__,
        "device": "cpu",
        "threads": torch.get_num_threads(),
        "params": n_params,
        "warmup": args.warmup,
        "repeats": args.repeats,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "cpu_count": os.cpu_count(),
        "loadavg_start": list(load_start),
    }

    if args.mode in ("all", "eval"):
        h, w = args.eval_hw
        x = torch.rand(1, 3, h, w, generator=torch.Generator().manual_seed(args.seed))
        model.eval()

        def eval_forward(inp):
            with torch.no_grad():
                return model(inp)

        gmacs = (
            None
            if args.no_macs
            else _count_gmacs(lambda b_, h_, w_: eval_forward(torch.rand(b_, 3, h_, w_)), 1, h, w)
        )
        times = _timed(lambda: eval_forward(x), args.warmup, args.repeats, "eval")
        result["eval"] = {
            "shape": [1, 3, h, w],
            "median_s": statistics.median(times),
            "min_s": min(times),
            "times_s": times,
            "gmacs": gmacs,
            "peak_rss_mb": _peak_rss_mb(),
        }

    if args.mode in ("all", "train"):
        b = args.train_batch
        h, w = args.train_hw
        x = torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(args.seed + 1))
        last = {}
        train_step = make_train_step(
            model, ref, x, args.lmbda, clip=not args.no_clip, aux=not args.no_aux, last=last
        )

        # forward + backward MACs: counted without the optimiser so the timed runs start clean
        gmacs = None
        if not args.no_macs:

            def fwd_bwd(b_, h_, w_):
                inp = torch.rand(b_, 3, h_, w_)
                ref.rate_distortion_loss(model(inp), inp, args.lmbda)["loss"].backward()
                model.zero_grad(set_to_none=True)

            gmacs = _count_gmacs(fwd_bwd, b, h, w)
        times = _timed(train_step, args.warmup, args.repeats, "train")
        includes = ["forward", "rd_loss", "backward"]
        includes += [] if args.no_clip else ["clip_grad_norm_1.0"]
        includes += ["adam_step"] + ([] if args.no_aux else ["aux_loss_backward", "aux_adam_step"])
        result["train"] = {
            "shape": [b, 3, h, w],
            "lmbda": args.lmbda,
            "median_s": statistics.median(times),
            "min_s": min(times),
            "times_s": times,
            "gmacs_step": gmacs,  # forward + backward
            "includes": includes,
            "last_loss": last,
            "peak_rss_mb": _peak_rss_mb(),
        }

    result["loadavg_end"] = list(os.getloadavg())
    result["peak_rss_mb"] = _peak_rss_mb()
    print(json.dumps(result), flush=True)
    return result


if __name__ == "__main__":
    main()

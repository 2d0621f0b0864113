#!/usr/bin/env python
"""The PyTorch WACNN codec with CompressAI's rANS coder: the reference for our codec's speed.

The network is tests/reference/torch_wacnn.py (the public WACNN's structure, random
initialisation with ``--seed``, its last analysis layers scaled by the reference's
``spread_latents`` so that y and z span several quantisation steps as a trained model's do,
instead of rounding to 0 as a fresh PyTorch model's would); its two entropy layers are
CompressAI's own ``EntropyBottleneck`` and ``GaussianConditional`` with the same parameters, and
an image is coded the way STF's ``WACNN.compress`` / ``decompress`` code it:

  encode: y = g_a(x), z = h_a(y); z through the entropy bottleneck's rANS coder (and decoded back,
          as the public code does); per slice the mean and scale transforms, the scale index, the
          symbols round(y - mu), the LRP refinement; all slices' symbols in one BufferedRansEncoder
          stream (64 scales exp(linspace(ln 0.11, ln 256))).
  decode: z from its string, then per slice mu, sigma, the symbols from the RansDecoder stream,
          y_hat = symbols + mu + LRP; x_hat = g_s(y_hat), clamped and rounded to 8 bits.

Timed after a warm-up call, median of ``--repeats``: each side's total and its entropy-coding part
(the rANS calls with the list conversions they need, the entropy bottleneck's compress and
decompress); network = total - entropy. Checks that the decoded y_hat equals the encoder's
exactly. Peak RSS (ru_maxrss) of the process. ``--save-state-dict PATH`` writes the weights
(STF key names) so that benchmarks/bench_codec.py can time our codec on the same weights.

    .venv/bin/python benchmarks/bench_torch_wacnn_codec.py --threads 2 --repeats 3

Progress goes to stderr; the last line on stdout is one JSON object.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import pathlib
import re
import resource
import statistics
import sys
import time

import numpy as np
import torch
from PIL import Image

REPO = pathlib.Path(__file__).resolve().parents[1]
DEFAULT_IMAGE = REPO.parent / "shared" / "data" / "kodak" / "kodim01.png"
SCALE_MIN, SCALE_MAX, NUM_SCALES = 0.11, 256.0, 64
# tests/reference/torch_wacnn.spread_latents at paper size: y and z of a fresh model then span
# several quantisation steps, like a trained model's (PyTorch's initialisation rounds them to 0)
Y_GAIN, Z_GAIN, SCALE_OFFSET = 30.0, 50.0, 2.0


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


@dataclasses.dataclass
class Coded:
    strings: dict  # "y" (all slices, one rANS stream), "z", "z_shape"
    symbols: list  # round(y - mu), slice after slice, NCHW order within a slice
    y_hat: object  # torch [1, M, h, w], after the LRP
    seconds: float
    coding_seconds: float


@dataclasses.dataclass
class Decoded:
    image: np.ndarray  # uint8 [H, W, 3]
    y_hat: object
    seconds: float
    coding_seconds: float


class TorchWacnnCodec:
    """STF's WACNN compress / decompress around the reference network and CompressAI's coders."""

    def __init__(self, net, compressai, reference):
        em = compressai.entropy_models
        self.net = net.eval()
        self.ans = compressai.ans
        self.eb = em.EntropyBottleneck(net.entropy_bottleneck.channels)
        # STF's vendored CompressAI names the density's tensors _matrix{i} / _bias{i} /
        # _factor{i}; CompressAI 1.2 keeps them in ParameterLists matrices / biases / factors.
        plural = {single[1:]: many for many, single in reference._NEW_COMPRESSAI_EB.items()}
        renamed = {
            re.sub(r"^_(matrix|bias|factor)(\d+)$", lambda m: f"{plural[m[1]]}.{m[2]}", k): v
            for k, v in net.entropy_bottleneck.state_dict().items()
        }
        missing, unexpected = self.eb.load_state_dict(renamed, strict=False)
        params = {k for k, _ in self.eb.named_parameters()}
        if unexpected or params & set(missing):
            raise RuntimeError(f"entropy bottleneck: missing {missing}, unexpected {unexpected}")
        self.eb.update(force=True, update_quantiles=True)
        self.gc = em.GaussianConditional(None)
        scales = torch.exp(torch.linspace(math.log(SCALE_MIN), math.log(SCALE_MAX), NUM_SCALES))
        self.gc.update_scale_table(scales, force=True)
        self.cdf = self.gc.quantized_cdf.tolist()
        self.cdf_lengths = self.gc.cdf_length.reshape(-1).int().tolist()
        self.offsets = self.gc.offset.reshape(-1).int().tolist()

    def _slice_params(self, i, latent_means, latent_scales, y_hat_slices, hy, wy):
        net = self.net
        support = y_hat_slices[: net.max_support_slices]
        mean_support = torch.cat([latent_means] + support, dim=1)
        mu = net.cc_mean_transforms[i](mean_support)[:, :, :hy, :wy]
        scale_support = torch.cat([latent_scales] + support, dim=1)
        scale = net.cc_scale_transforms[i](scale_support)[:, :, :hy, :wy]
        return mean_support, mu, self.gc.build_indexes(scale)

    def _refine(self, i, mean_support, y_hat_slice):
        lrp = self.net.lrp_transforms[i](torch.cat([mean_support, y_hat_slice], dim=1))
        return y_hat_slice + 0.5 * torch.tanh(lrp)

    @torch.no_grad()
    def compress(self, x):
        net, coding = self.net, 0.0
        t0 = time.perf_counter()
        y = net.g_a(x)
        hy, wy = y.shape[2:]
        z = net.h_a(y)
        t = time.perf_counter()
        z_strings = self.eb.compress(z)
        z_hat = self.eb.decompress(z_strings, z.shape[-2:])
        coding += time.perf_counter() - t
        latent_scales, latent_means = net.h_scale_s(z_hat), net.h_mean_s(z_hat)
        symbols, indexes, y_hat_slices = [], [], []
        for i, y_slice in enumerate(y.chunk(net.num_slices, dim=1)):
            mean_support, mu, index = self._slice_params(
                i, latent_means, latent_scales, y_hat_slices, hy, wy
            )
            q = self.gc.quantize(y_slice, "symbols", mu)
            t = time.perf_counter()
            symbols.extend(q.reshape(-1).tolist())
            indexes.extend(index.reshape(-1).tolist())
            coding += time.perf_counter() - t
            y_hat_slices.append(self._refine(i, mean_support, q + mu))
        t = time.perf_counter()
        encoder = self.ans.BufferedRansEncoder()
        encoder.encode_with_indexes(symbols, indexes, self.cdf, self.cdf_lengths, self.offsets)
        y_string = encoder.flush()
        coding += time.perf_counter() - t
        strings = {"y": y_string, "z": z_strings[0], "z_shape": tuple(z.shape[-2:])}
        return Coded(
            strings, symbols, torch.cat(y_hat_slices, dim=1), time.perf_counter() - t0, coding
        )

    @torch.no_grad()
    def decompress(self, strings):
        net, coding = self.net, 0.0
        t0 = time.perf_counter()
        t = time.perf_counter()
        z_hat = self.eb.decompress([strings["z"]], strings["z_shape"])
        coding += time.perf_counter() - t
        latent_scales, latent_means = net.h_scale_s(z_hat), net.h_mean_s(z_hat)
        hy, wy = z_hat.shape[2] * 4, z_hat.shape[3] * 4
        decoder = self.ans.RansDecoder()
        decoder.set_stream(strings["y"])
        y_hat_slices = []
        for i in range(net.num_slices):
            mean_support, mu, index = self._slice_params(
                i, latent_means, latent_scales, y_hat_slices, hy, wy
            )
            t = time.perf_counter()
            values = decoder.decode_stream(
                index.reshape(-1).tolist(), self.cdf, self.cdf_lengths, self.offsets
            )
            q = torch.tensor(values, dtype=torch.float32).reshape(mu.shape)
            coding += time.perf_counter() - t
            y_hat_slices.append(self._refine(i, mean_support, self.gc.dequantize(q, mu)))
        y_hat = torch.cat(y_hat_slices, dim=1)
        x_hat = net.g_s(y_hat).clamp_(0, 1)
        image = (x_hat[0].permute(1, 2, 0) * 255.0).round().to(torch.uint8).numpy()
        return Decoded(image, y_hat, time.perf_counter() - t0, coding)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--image", default=str(DEFAULT_IMAGE))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--save-state-dict", help="write the weights (STF key names, .pt) here")
    p.add_argument("--y-gain", type=float, default=Y_GAIN)
    p.add_argument("--z-gain", type=float, default=Z_GAIN)
    p.add_argument("--scale-offset", type=float, default=SCALE_OFFSET)
    a = p.parse_args()

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    from bench_torch_wacnn import load_compressai, load_reference  # this script's folder

    ref = load_reference()
    net = ref.spread_latents(ref.WACNN(), a.y_gain, a.z_gain, a.scale_offset)
    codec = TorchWacnnCodec(net, load_compressai(), ref)
    if a.save_state_dict:
        torch.save(codec.net.state_dict(), a.save_state_dict)

    rgb = np.array(Image.open(a.image).convert("RGB"))
    h, w = rgb.shape[:2]
    if h % 64 or w % 64:
        raise SystemExit(f"{a.image}: {h}x{w} is not a multiple of 64 (the public code pads)")
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255.0

    t = time.perf_counter()
    coded = codec.compress(x)
    decoded = codec.decompress(coded.strings)
    _log(f"torch wacnn codec: warm-up encode + decode {time.perf_counter() - t:.1f} s")
    exact = bool(torch.equal(coded.y_hat, decoded.y_hat))
    strings = coded.strings
    enc, dec = [], []
    for _ in range(a.repeats):
        e, d = codec.compress(x), codec.decompress(strings)
        enc.append((e.seconds, e.coding_seconds))
        dec.append((d.seconds, d.coding_seconds))
        _log(f"  encode {e.seconds:.2f} s, decode {d.seconds:.2f} s")

    def med(runs, k):
        return statistics.median(r[k] for r in runs)

    nbytes = len(strings["y"]) + len(strings["z"])
    out = {
        "torch": torch.__version__,
        "threads": a.threads,
        "image": a.image,
        "size": [h, w],
        "encode_s": med(enc, 0),
        "encode_entropy_s": med(enc, 1),
        "encode_network_s": med(enc, 0) - med(enc, 1),
        "decode_s": med(dec, 0),
        "decode_entropy_s": med(dec, 1),
        "decode_network_s": med(dec, 0) - med(dec, 1),
        "encode_runs_s": [r[0] for r in enc],
        "decode_runs_s": [r[0] for r in dec],
        "y_hat_exact": exact,
        "string_bytes": nbytes,
        "y_bytes": len(strings["y"]),
        "z_bytes": len(strings["z"]),
        "bpp": 8.0 * nbytes / (h * w),
        "peak_rss_mib": _peak_rss_mib(),
    }
    print(json.dumps(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())

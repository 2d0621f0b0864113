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

Conventions (PyTorch -> Flax; the reverse is the inverse permutation):

* Convolution ``weight [O, I, kh, kw]`` -> ``kernel [kh, kw, I, O]`` (NCHW -> NHWC; grouped
  convolutions the same, with I the per-group width). Padding is symmetric ``k // 2`` on both
  sides, as in PyTorch (``mracnn_jax.layers.conv.Conv2d``), so no kernel flip or shift is needed.
* Transposed convolution ``weight [I, O, k, k]`` -> ``kernel [k, k, I, O]``, *not* flipped: our
  ``ConvTranspose2d`` implements PyTorch's ``ConvTranspose2d(k, 2, padding=k//2,
  output_padding=1)`` directly from the PyTorch-layout taps (it flips internally in its dilated
  form, and gathers phases in its sub-pixel form).
* Linear ``weight [O, I]`` -> ``kernel [I, O]``.
* Sub-pixel convolution before ``PixelShuffle(r)``: PyTorch reads conv output channel
  ``c*r*r + s`` for sub-position ``s = i*r + j``; our ``depth_to_space`` reads ``s*C + c``. So
  our output channel ``q`` takes PyTorch's channel ``(q % C) * r*r + q // C`` (kernel and bias).
* Window attention: ``relative_position_bias_table [(2w-1)^2, heads]`` is copied unchanged; both
  index it with Swin's ``relative_position_index`` (row-major (dy, dx), offset ``w - 1``), which
  is checked against ours on import and written on export. ``qkv`` output channels are ordered
  (q|k|v, head, head_dim) in both.
* GDN / IGDN: CompressAI stores ``beta`` and ``gamma`` through ``NonNegativeParametrizer``
  (stored ``p = sqrt(max(v + pedestal, pedestal))``, pedestal ``2^-36``) and so do we
  (``mracnn_jax.layers.gdn``): the stored tensors are copied unchanged, ``gamma[i, j]`` being
  output i, input j in both. The buffers ``*_reparam.pedestal`` and ``*_reparam.lower_bound.bound``
  must hold CompressAI's defaults (beta_min 1e-6), otherwise the import fails.
* EntropyBottleneck: ``_matrix{k}`` / ``_bias{k}`` / ``_factor{k}`` map to our ``matrix_k`` /
  ``bias_k`` / ``factor_k`` with identical shapes (``[C, f_{k+1}, f_k]``, ``[C, f_{k+1}, 1]``).
  ``quantiles [C, 1, 3]`` is *not* a parameter here: we quantise z around the exact median of each
  channel's density (bisection, ``FactorizedPrior.medians``), the point CompressAI's auxiliary loss
  drives ``quantiles[:, 0, 1]`` to. The import reports the largest distance between the two
  (``ConversionReport.max_median_deviation``); on export the quantiles are recomputed from the
  density at the logits ``(-t, 0, t)``, ``t = ln(2 / tail_mass - 1)``, the auxiliary loss's
  targets.
* GaussianConditional has no parameters. ``scale_bound`` and the lower bounds must be 0.11 and
  1e-9 (ours); a non-empty ``scale_table`` that differs from ours (64 scales from 0.11 to 256) is
  noted in the report, since it only changes the coder's tables.
* Entropy-coding tables (``_offset``, ``_quantized_cdf``, ``_cdf_length``) are ignored on import
  (our coder builds its own) and exported empty, as in a PyTorch model before ``update()``.

Key names (``to_torch_state_dict`` writes them; ``from_torch_state_dict`` reads them):

* WACNN: exactly the public STF ``WACNN`` state dict (``g_a.0.weight``, ``g_a.1.beta``,
  ``g_a.4.conv_a.0.conv.0.weight``, ``g_a.4.conv_b.0.attn.qkv.weight``, ``g_s.1.weight``,
  ``h_mean_s.2.0.weight``, ``cc_mean_transforms.i.j.weight``, ``lrp_transforms.i.j.weight``,
  ``entropy_bottleneck._matrix0``, ``gaussian_conditional.scale_bound``, ...);
  docs/architecture.md §1.
* MRACNN and the ablations (no public PyTorch code exists; this naming is ours, chosen to follow
  the code each part comes from):
  - ``g_a.i`` / ``g_s.i``: the i-th module of the transform in order (for MRACNN ``g_a.0..5`` =
    MRACD, MRACD, ELAM, MRACD, conv, ELAM; ``g_s.0..5`` = ELAM, MRACU, MRACU, ELAM, MRACU,
    deconv, with ``third_elam`` inserting one more after the first MRACU).
  - MRACD ``g_a.i.{down, asym.conv_1xn, asym.conv_nx1, asym.conv_nxn, gdn, skip}``; MRACU
    ``g_s.i.{up, asym.*, igdn, skip}``.
  - ELAM laid out like STF's WAM: ``conv_a.{0,1,2}.conv.{0,2,4}`` (trunk residual units),
    ``conv_b.0`` the attention, ``conv_b.{1,2,3}.conv.{0,2,4}`` (mask residual units),
    ``conv_b.4`` (1x1). The attention ``conv_b.0`` holds the ELSA module of ``damo-cv/ELSA`` as
    ``conv_b.0.attn.{pre_proj.weight, attn.0.*, attn.2.*, ghost_head, post_proj.*}``; the
    ``ELSABlock`` variant adds ``conv_b.0.{norm1, norm2, mlp.fc1, mlp.fc2}``.
  - CLAB laid out like TCM's ``SWAtten`` (``jmliu206/LIC_TCM``): ``atten_mean.i`` /
    ``atten_scale.i`` with ``in_conv``, ``out_conv``, ``conv_a.{0,1,2}.conv.{0,2,4}``,
    ``conv_b.{0,1,2}.conv.{0,2,4}``, ``conv_b.3`` and the ELSA as ``non_local_block.attn.*``.
  - Hyperprior, ``cc_mean_transforms``, ``cc_scale_transforms``, ``lrp_transforms``,
    ``entropy_bottleneck`` and ``gaussian_conditional`` as in WACNN (the slice transforms have
    ``len(cc_widths) + 1`` convolutions, keys ``0, 2, 4, ...``).

Errors: a state dict that does not fit raises ``ConversionError`` (a ``ValueError``) with a
one-line message naming the first offending key (missing, unexpected, wrong shape or wrong
buffer value, in sorted key order).
"""

from __future__ import annotations

import functools
import json
import math
import os
import re
import warnings
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from PIL import Image, UnidentifiedImageError

from mracnn_jax import model_file
from mracnn_jax.entropy.factorized import LIKELIHOOD_BOUND as Z_LIKELIHOOD_BOUND
from mracnn_jax.entropy.factorized import logit_quantiles
from mracnn_jax.entropy.gaussian import LIKELIHOOD_BOUND as Y_LIKELIHOOD_BOUND
from mracnn_jax.entropy.gaussian import SCALE_BOUND
from mracnn_jax.entropy.gaussian import scale_table as _scale_table
from mracnn_jax.layers.gdn import BETA_MIN, PEDESTAL
from mracnn_jax.layers.wam import relative_position_index
from mracnn_jax.model_file import unflatten_params
from mracnn_jax.models import presets
from mracnn_jax.models.compressor import DOWNSAMPLING
from mracnn_jax.models.registry import build_model

__all__ = [
    "ARCHS",
    "ConversionError",
    "ConversionReport",
    "convert_checkpoint",
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

ARCHS = ("wacnn", "mracnn")
TAIL_MASS = 1e-9  # CompressAI's EntropyBottleneck default: quantiles at logits +-ln(2/tail - 1)
_CODING_BUFFERS = ("_offset", "_quantized_cdf", "_cdf_length")
_TORCH_HINT = (
    "reading or writing PyTorch checkpoints needs torch: pip install -r requirements/torch-cpu.txt "
    "(or torch from https://download.pytorch.org/whl/cpu)"
)


class ConversionError(ValueError):
    """A state dict does not fit the model (the one-line message names the first offending key)."""


@dataclass
class ConversionReport:
    """What an import ignored or noticed (nothing here changes the converted parameters)."""

    ignored: list[str] = field(default_factory=list)  # coding tables and other unused buffers
    notes: list[str] = field(default_factory=list)
    max_median_deviation: float | None = None  # max |quantiles[:, 0, 1] - our median| over channels

    def summary(self) -> str:
        parts = [f"{len(self.ignored)} buffers ignored"]
        if self.max_median_deviation is not None:
            parts.append(
                f"max |quantile median - density median| = {self.max_median_deviation:.3g}"
            )
        return "; ".join(parts + self.notes)


# -------------------------------------------------------------------------------------------------
# Reading state dicts.


def _to_numpy(value: Any, key: str) -> np.ndarray:
    if hasattr(value, "detach"):  # a torch tensor, without importing torch
        value = value.detach().cpu()
        if str(value.dtype) == "torch.bfloat16":
            value = value.float()
        return value.numpy()
    if isinstance(value, np.ndarray) or np.isscalar(value):
        return np.asarray(value)
    raise ConversionError(f"state dict entry {key!r} is a {type(value).__name__}, not a tensor")


_EB_NEW_NAMES = re.compile(r"^entropy_bottleneck\.(_?)(matrices|biases|factors)\.(\d+)$")
_EB_SINGULAR = {"matrices": "_matrix", "biases": "_bias", "factors": "_factor"}


def normalize_state_dict(obj: Mapping[str, Any]) -> OrderedDict[str, np.ndarray]:
    """``{key: np.ndarray}`` in STF spelling from a state dict or a checkpoint dict holding one.

    Unwraps ``obj['state_dict']``, strips a ``module.`` prefix and renames CompressAI 1.2's
    ``entropy_bottleneck.matrices.k`` (and ``_matrices.k``, ``biases``, ``factors``) to
    ``entropy_bottleneck._matrix{k}`` etc.
    """
    if not isinstance(obj, Mapping):
        raise ConversionError(f"expected a state dict (a mapping), got {type(obj).__name__}")
    if "state_dict" in obj and isinstance(obj["state_dict"], Mapping):
        obj = obj["state_dict"]
    out: OrderedDict[str, np.ndarray] = OrderedDict()
    for key, value in obj.items():
        key = str(key)
        key = key.removeprefix("module.")
        m = _EB_NEW_NAMES.match(key)
        if m:
            key = f"entropy_bottleneck.{_EB_SINGULAR[m.group(2)]}{m.group(3)}"
        if key in out:
            raise ConversionError(f"key {key!r} appears twice (after normalising names)")
        out[key] = _to_numpy(value, key)
    if not out:
        raise ConversionError("the state dict is empty")
    return out


def _import_torch():
    try:
        import torch
    except ImportError as e:
        raise ImportError(_TORCH_HINT) from e
    return torch


def load_torch_state_dict(path: str | os.PathLike) -> OrderedDict[str, np.ndarray]:
    """Reads a ``.pth`` / ``.pth.tar`` file (``torch.load(weights_only=True)``, on the CPU).

    Returns the normalised state dict (``normalize_state_dict``) as NumPy arrays. Needs torch; no
    model code is imported or executed (``weights_only`` refuses arbitrary pickles).
    """
    path = os.fspath(path)
    what = _not_a_checkpoint(path) if os.path.exists(path) else None  # needs no torch
    if what:
        raise ConversionError(f"{path!r} is {what}, not a PyTorch checkpoint: {_EXPECTED}")
    torch = _import_torch()
    if not os.path.exists(path):
        raise FileNotFoundError(f"no such checkpoint: {path!r}")
    try:
        with warnings.catch_warnings():
            # torch's note on a pickle protocol above 2, which changes nothing for a state dict
            warnings.filterwarnings("ignore", "Detected pickle protocol", UserWarning)
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises many kinds; keep it one line
        raise ConversionError(
            f"{path!r} is not a PyTorch checkpoint torch can read ({_torch_reason(e)}): {_EXPECTED}"
        ) from e
    return normalize_state_dict(obj)


_EXPECTED = (
    "convert takes a .pth / .pth.tar file written by torch.save holding a state dict of "
    "CompressAI / STF layout (tensors only, bare or under 'state_dict')"
)


def _not_a_checkpoint(path: str) -> str | None:
    """What a file is when it is plainly no checkpoint (empty, a directory, an image), else None."""
    if os.path.isdir(path):
        return "a directory"
    if os.path.getsize(path) == 0:
        return "empty"
    try:
        with Image.open(path) as im:
            return f"a {im.format} image"
    except (UnidentifiedImageError, OSError, ValueError):
        return None


def _torch_reason(e: BaseException) -> str:
    """The part of torch's message that says what was wrong, as one sentence.

    ``weights_only`` failures wrap the reason (``Unsupported operand 80``, ``Unsupported global:
    GLOBAL foo.Net was not an allowed global``) in several sentences about the PyTorch 2.6 default;
    other errors lead with it (``PytorchStreamReader failed reading zip archive: ...``).
    """
    text = str(e).strip() or type(e).__name__
    match = re.search(r"WeightsUnpickler error:\s*(.*)", text, re.DOTALL)
    if match and match.group(1).strip():
        text = match.group(1).strip()
    text = " ".join(re.split(r"\n\s*\n", text, maxsplit=1)[0].split())  # the first paragraph
    text = re.split(r"(?<=[.!?]) (?=[A-Z])", text, maxsplit=1)[0].rstrip(".")
    return text


def save_torch_state_dict(state_dict: Mapping[str, np.ndarray], path: str | os.PathLike) -> None:
    """Writes ``{key: array}`` as a PyTorch state dict file (``torch.save``); needs torch."""
    torch = _import_torch()
    torch.save(
        OrderedDict((k, torch.from_numpy(np.ascontiguousarray(v))) for k, v in state_dict.items()),
        os.fspath(path),
    )


# -------------------------------------------------------------------------------------------------
# Leaf conversions. ``kind`` names the layout difference; each is exact (a permutation).


def _subpel_perm(channels: int, r: int) -> np.ndarray:
    """Our output channel q = s*C + c reads PyTorch channel c*r*r + s."""
    q = np.arange(channels * r * r)
    return (q % channels) * r * r + q // channels


def _leaf_from_torch(kind: str, t: np.ndarray, arg: int = 0) -> np.ndarray:
    if kind == "conv":  # [O, I, kh, kw] -> [kh, kw, I, O]
        return t.transpose(2, 3, 1, 0)
    if kind == "deconv":  # [I, O, k, k] -> [k, k, I, O]
        return t.transpose(2, 3, 0, 1)
    if kind == "dense":  # [O, I] -> [I, O]
        return t.T
    if kind == "subpel_conv":
        return t.transpose(2, 3, 1, 0)[..., _subpel_perm(t.shape[0] // (arg * arg), arg)]
    if kind == "subpel_bias":
        return t[_subpel_perm(t.shape[0] // (arg * arg), arg)]
    if kind == "copy":
        return t
    raise AssertionError(kind)


def _leaf_to_torch(kind: str, a: np.ndarray, arg: int = 0) -> np.ndarray:
    if kind == "conv":
        return a.transpose(3, 2, 0, 1)
    if kind == "deconv":
        return a.transpose(2, 3, 0, 1)
    if kind == "dense":
        return a.T
    if kind == "subpel_conv":
        inv = np.argsort(_subpel_perm(a.shape[-1] // (arg * arg), arg))
        return a[..., inv].transpose(3, 2, 0, 1)
    if kind == "subpel_bias":
        return a[np.argsort(_subpel_perm(a.shape[0] // (arg * arg), arg))]
    if kind == "copy":
        return a
    raise AssertionError(kind)


def _torch_shape(kind: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The PyTorch shape of a Flax leaf of ``shape``."""
    if kind in ("conv", "subpel_conv"):
        return (shape[3], shape[2], shape[0], shape[1])
    if kind == "deconv":
        return (shape[2], shape[3], shape[0], shape[1])
    if kind == "dense":
        return (shape[1], shape[0])
    return tuple(shape)


# -------------------------------------------------------------------------------------------------
# Flax path -> PyTorch key.


def _index(name: str) -> int:
    return int(name.rsplit("_", 1)[1])


def _sequence(cfg, which: str) -> list[str]:
    """Our submodule names of g_a / g_s in order (the PyTorch ``nn.Sequential`` indices)."""
    if which == "g_a":
        if cfg.transform == "conv5":
            names = ["conv_0", "gdn_1", "conv_2", "gdn_3", "attention_4", "conv_5", "gdn_6"]
            return names + ["conv_7", "attention_8"]
        return ["mracd_0", "mracd_1", "attention_2", "mracd_3", "conv_4", "attention_5"]
    if cfg.transform == "conv5":
        names = ["attention_0", "deconv_1", "igdn_2", "deconv_3", "igdn_4", "attention_5"]
        return names + ["deconv_6", "igdn_7", "deconv_8"]
    extra = ["attention_extra"] if cfg.third_elam else []
    return ["attention_0", "mracu_1"] + extra + ["mracu_2", "attention_3", "mracu_4", "deconv_5"]


def _plain(prefix: str, leaf: str, kernel_kind: str) -> tuple[str, str]:
    if leaf == "kernel":
        return f"{prefix}.weight", kernel_kind
    if leaf == "scale":  # LayerNorm
        return f"{prefix}.weight", "copy"
    if leaf in ("bias", "beta", "gamma"):
        return f"{prefix}.{leaf}", "copy"
    raise KeyError(leaf)


def _residual_unit(prefix: str, rest: tuple[str, ...]) -> tuple[str, str]:
    # conv1 / conv2 / conv3 -> conv.0 / conv.2 / conv.4
    j = int(rest[0][len("conv") :]) - 1
    return _plain(f"{prefix}.conv.{2 * j}", rest[1], "conv")


def _elsa_core(prefix: str, rest: tuple[str, ...]) -> tuple[str, str]:
    head = rest[0]
    if head == "ghost_head":
        return f"{prefix}.ghost_head", "copy"
    names = {"pre_proj": "pre_proj", "attn_conv": "attn.0", "attn_proj": "attn.2"}
    if head in names:
        return _plain(f"{prefix}.{names[head]}", rest[1], "conv")
    if head == "post_proj":
        return _plain(f"{prefix}.post_proj", rest[1], "dense")
    raise KeyError(head)


def _elsa(prefix: str, rest: tuple[str, ...]) -> tuple[str, str]:
    """ELSA (bare) or ELSABlock, as the module at ``prefix`` (``.attn`` holds the ELSA proper)."""
    head = rest[0]
    if head in ("norm1", "norm2"):
        return _plain(f"{prefix}.{head}", rest[1], "copy")
    if head in ("mlp_fc1", "mlp_fc2"):
        return _plain(f"{prefix}.mlp.{head[4:]}", rest[1], "dense")
    if head == "attn":  # ELSABlock's inner ELSA
        return _elsa_core(f"{prefix}.attn", rest[1:])
    return _elsa_core(f"{prefix}.attn", rest)


def _attention_module(prefix: str, rest: tuple[str, ...]) -> tuple[str, str]:
    """WAM / ELAM in STF's WAM layout."""
    head = rest[0]
    if head.startswith("trunk_"):
        return _residual_unit(f"{prefix}.conv_a.{_index(head)}", rest[1:])
    if head.startswith("mask_") and head != "mask_out":
        return _residual_unit(f"{prefix}.conv_b.{_index(head) + 1}", rest[1:])
    if head == "mask_out":
        return _plain(f"{prefix}.conv_b.4", rest[1], "conv")
    if head == "attention":  # WAM's window attention
        if rest[1] == "relative_position_bias_table":
            return f"{prefix}.conv_b.0.attn.relative_position_bias_table", "copy"
        return _plain(f"{prefix}.conv_b.0.attn.{rest[1]}", rest[2], "dense")
    if head == "elsa":
        return _elsa(f"{prefix}.conv_b.0", rest[1:])
    raise KeyError(head)


def _clab(prefix: str, rest: tuple[str, ...]) -> tuple[str, str]:
    """CLAB in TCM's SWAtten layout."""
    head = rest[0]
    if head == "squeeze":
        return _plain(f"{prefix}.in_conv", rest[1], "conv")
    if head == "unsqueeze":
        return _plain(f"{prefix}.out_conv", rest[1], "conv")
    if head.startswith("trunk_"):
        return _residual_unit(f"{prefix}.conv_a.{_index(head)}", rest[1:])
    if head.startswith("mask_") and head != "mask_out":
        return _residual_unit(f"{prefix}.conv_b.{_index(head)}", rest[1:])
    if head == "mask_out":
        return _plain(f"{prefix}.conv_b.3", rest[1], "conv")
    if head == "elsa":
        return _elsa(f"{prefix}.non_local_block", rest[1:])
    raise KeyError(head)


def _transform_module(prefix: str, name: str, rest: tuple[str, ...]) -> tuple[str, str]:
    if name.startswith("conv_"):
        return _plain(prefix, rest[0], "conv")
    if name.startswith("deconv_"):
        return _plain(prefix, rest[0], "deconv")
    if name.startswith(("gdn_", "igdn_")):
        return _plain(prefix, rest[0], "copy")
    if name.startswith("attention_"):
        return _attention_module(prefix, rest)
    if name.startswith(("mracd_", "mracu_")):
        head = rest[0]
        if head in ("down", "skip", "up"):  # strided paths: transposed in MRACU
            upsampling = name.startswith("mracu_")
            return _plain(f"{prefix}.{head}", rest[1], "deconv" if upsampling else "conv")
        if head == "asym":
            return _plain(f"{prefix}.asym.{rest[1]}", rest[2], "conv")
        if head in ("gdn", "igdn"):
            return _plain(f"{prefix}.{head}", rest[1], "copy")
    raise KeyError(name)


_SLICE_STACKS = {
    "cc_mean": "cc_mean_transforms",
    "cc_scale": "cc_scale_transforms",
    "lrp": "lrp_transforms",
}


def _torch_key(path: tuple[str, ...], cfg) -> tuple[str, str, int]:
    """(PyTorch key, kind, arg) of the Flax parameter at ``path``; KeyError when unknown."""
    top = path[0]
    if top in ("g_a", "g_s"):
        i = _sequence(cfg, top).index(path[1])
        return _transform_module(f"{top}.{i}", path[1], path[2:]) + (0,)
    if top == "h_a":
        return _plain(f"h_a.{_index(path[1])}", path[2], "conv") + (0,)
    if top in ("h_mean_s", "h_scale_s"):
        i = _index(path[1])
        if path[1].startswith("subpel_"):
            kind = "subpel_conv" if path[3] == "kernel" else "subpel_bias"
            return f"{top}.{i}.0.{'weight' if path[3] == 'kernel' else 'bias'}", kind, 2
        return _plain(f"{top}.{i}", path[2], "conv") + (0,)
    if top == "entropy":
        stack, i = path[1].rsplit("_", 1)
        if stack in _SLICE_STACKS:
            j = _index(path[2])
            return _plain(f"{_SLICE_STACKS[stack]}.{i}.{2 * j}", path[3], "conv") + (0,)
        if stack in ("clab_mean", "clab_scale"):
            name = "atten_mean" if stack == "clab_mean" else "atten_scale"
            return _clab(f"{name}.{i}", path[2:]) + (0,)
    if top == "entropy_bottleneck":
        kind, k = path[1].rsplit("_", 1)
        return f"entropy_bottleneck._{kind}{k}", "copy", 0
    raise KeyError("/".join(path))


def _flat_paths(
    tree: Mapping[str, Any], prefix: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], Any]]:
    out = []
    for k, v in tree.items():
        if hasattr(v, "shape") and not isinstance(v, Mapping):
            out.append((prefix + (str(k),), v))
        else:
            out.extend(_flat_paths(v, prefix + (str(k),)))
    return out


def torch_key_map(
    params_or_shapes: Mapping[str, Any], model_config
) -> OrderedDict[str, tuple[str, str, int]]:
    """``{flax path 'a/b/kernel': (torch key, kind, arg)}`` for every parameter of the tree."""
    cfg = _frozen(model_config)
    out: OrderedDict[str, tuple[str, str, int]] = OrderedDict()
    seen: dict[str, str] = {}
    for path, _ in _flat_paths(params_or_shapes):
        try:
            key, kind, arg = _torch_key(path, cfg)
        except (KeyError, ValueError, IndexError) as e:
            raise ConversionError(
                f"no PyTorch name for parameter {'/'.join(path)!r} ({e})"
            ) from None
        if key in seen:
            raise AssertionError(f"{key} from both {seen[key]} and {'/'.join(path)}")
        seen[key] = "/".join(path)
        out["/".join(path)] = (key, kind, arg)
    return out


# -------------------------------------------------------------------------------------------------
# Buffers: what PyTorch stores beside the parameters.


def _gdn_buffers(prefix: str) -> dict[str, np.ndarray]:
    """CompressAI GDN's buffers (``prefix`` ends with '.' or is empty) and their values."""

    def f(v):
        return np.asarray([v], np.float32)

    return {
        f"{prefix}beta_reparam.pedestal": f(PEDESTAL),
        f"{prefix}beta_reparam.lower_bound.bound": f((BETA_MIN + PEDESTAL) ** 0.5),
        f"{prefix}gamma_reparam.pedestal": f(PEDESTAL),
        f"{prefix}gamma_reparam.lower_bound.bound": f(PEDESTAL**0.5),
    }


def _relative_position_index(window: int) -> np.ndarray:
    return np.asarray(relative_position_index(window), np.int64)


def _empty_tables(prefix: str) -> dict[str, np.ndarray]:
    return {f"{prefix}.{b}": np.zeros((0,), np.int32) for b in _CODING_BUFFERS}


def _expected_buffers(key_map: Mapping[str, tuple[str, str, int]], shapes: Mapping[str, Any]):
    """``{torch key: value}`` of the buffers PyTorch keeps beside these parameters.

    Values that must match on import are real arrays; ``None`` marks buffers whose value we do
    not use (coding tables, quantiles, target, scale table), checked separately or ignored.
    """
    out: dict[str, np.ndarray | None] = {}
    for path, (key, _, _) in key_map.items():
        if key.endswith(".beta") and path.rsplit("/", 2)[-2].split("_")[0] in ("gdn", "igdn"):
            out.update(_gdn_buffers(key[: -len("beta")]))
        if key.endswith(".relative_position_bias_table"):
            rows = shapes[path][0]
            window = (math.isqrt(rows) + 1) // 2
            out[key.replace("relative_position_bias_table", "relative_position_index")] = (
                _relative_position_index(window)
            )
    for name in ("target", "quantiles", *_CODING_BUFFERS):
        out[f"entropy_bottleneck.{name}"] = None
    for name in ("scale_table", *_CODING_BUFFERS):
        out[f"gaussian_conditional.{name}"] = None
    out["entropy_bottleneck.likelihood_lower_bound.bound"] = np.asarray(
        [Z_LIKELIHOOD_BOUND], np.float32
    )
    out["gaussian_conditional.likelihood_lower_bound.bound"] = np.asarray(
        [Y_LIKELIHOOD_BOUND], np.float32
    )
    out["gaussian_conditional.scale_bound"] = np.asarray([SCALE_BOUND], np.float32)
    out["gaussian_conditional.lower_bound_scale.bound"] = np.asarray([SCALE_BOUND], np.float32)
    return out


# -------------------------------------------------------------------------------------------------
# The factorized prior's quantiles.


def density_quantiles(eb: Mapping[str, np.ndarray], tail_mass: float = TAIL_MASS) -> np.ndarray:
    """``[C, 1, 3]`` float32: per channel the points where the cumulative logit is ``-t, 0, t``
    (``t = ln(2 / tail_mass - 1)``), CompressAI's ``quantiles`` at convergence
    (``entropy.factorized.logit_quantiles``)."""
    t = math.log(2.0 / tail_mass - 1.0)
    num_layers = sum(1 for k in eb if k.startswith("matrix_"))
    eb = {k: jnp.asarray(v, jnp.float32) for k, v in eb.items()}
    q = logit_quantiles(eb, jnp.asarray([-t, 0.0, t], jnp.float32), num_layers)
    return np.array(q, np.float32)[:, None, :]  # a writable copy, as torch.from_numpy wants


# -------------------------------------------------------------------------------------------------
# Configs.


def _frozen(cfg):
    if isinstance(cfg, ml_collections.FrozenConfigDict):
        return cfg
    if isinstance(cfg, Mapping) and not isinstance(cfg, ml_collections.ConfigDict):
        cfg = ml_collections.ConfigDict(dict(cfg))
    return ml_collections.FrozenConfigDict(cfg)


def _preset(arch: str):
    if arch not in ARCHS:
        raise ConversionError(f"unknown arch {arch!r}; expected one of {ARCHS}")
    return getattr(presets, arch)()


def _shape(sd: Mapping[str, np.ndarray], key: str) -> tuple[int, ...]:
    if key not in sd:
        raise ConversionError(f"missing key {key!r}: not a WACNN (STF) state dict")
    return tuple(sd[key].shape)


def infer_wacnn_config(state_dict: Mapping[str, np.ndarray]):
    """The ``wacnn`` preset with the widths, slices and attention sizes read off the shapes.

    The public checkpoints give the preset itself; smaller or wider variants of the same layout
    are read correctly (N, M, Z, hyperprior widths, slice count and support, cc widths and
    kernel, heads, windows; shifts are window // 2 as in STF).
    """
    sd = state_dict
    cfg = _preset("wacnn")
    cfg.N = _shape(sd, "g_a.0.weight")[0]
    cfg.M = _shape(sd, "g_a.7.weight")[0]
    cfg.Z = _shape(sd, "h_a.8.weight")[0]
    cfg.hyper_analysis_widths = tuple(_shape(sd, f"h_a.{2 * j}.weight")[0] for j in range(4))
    s0, s2 = _shape(sd, "h_mean_s.0.weight")[0], _shape(sd, "h_mean_s.2.0.weight")[0] // 4
    s4, s6 = _shape(sd, "h_mean_s.4.weight")[0], _shape(sd, "h_mean_s.6.0.weight")[0] // 4
    cfg.hyper_synthesis_widths = (s0, s2, s4, s6)
    slices = 0
    while f"cc_mean_transforms.{slices}.0.weight" in sd:
        slices += 1
    if slices == 0:
        raise ConversionError("missing key 'cc_mean_transforms.0.0.weight': not a WACNN state dict")
    width = cfg.M // slices
    convs = 0
    while f"cc_mean_transforms.0.{2 * convs}.weight" in sd:
        convs += 1
    cfg.entropy.num_slices = slices
    cfg.entropy.cc_widths = tuple(
        _shape(sd, f"cc_mean_transforms.0.{2 * j}.weight")[0] for j in range(convs - 1)
    )
    cfg.entropy.cc_kernel = _shape(sd, "cc_mean_transforms.0.0.weight")[-1]
    supports = [
        (_shape(sd, f"cc_mean_transforms.{i}.0.weight")[1] - cfg.M) // width for i in range(slices)
    ]
    cfg.entropy.max_support = max(supports) if supports[-1] < slices - 1 else -1
    table_n = _shape(sd, "g_a.4.conv_b.0.attn.relative_position_bias_table")
    table_m = _shape(sd, "g_a.8.conv_b.0.attn.relative_position_bias_table")
    window_n, window_m = (math.isqrt(table_n[0]) + 1) // 2, (math.isqrt(table_m[0]) + 1) // 2
    cfg.wam.heads = table_n[1]
    cfg.wam.update(
        {
            "window_n": window_n,
            "shift_n": window_n // 2,
            "window_m": window_m,
            "shift_m": window_m // 2,
        }
    )
    return cfg


def _param_shapes(model_config) -> dict[str, tuple[int, ...]]:
    """``{path: shape}`` of the Flax parameters of ``model_config`` (no arrays are created).

    Tracing the model's ``init`` takes seconds, so the result is cached per config.
    """
    cfg = _frozen(model_config).to_dict()
    cfg.pop("name", None)  # a label; it does not shape the model
    return dict(_param_shapes_cached(json.dumps(cfg, sort_keys=True, default=list)))


@functools.lru_cache(maxsize=16)
def _param_shapes_cached(config_json: str) -> tuple[tuple[str, tuple[int, ...]], ...]:
    model = build_model(_frozen(json.loads(config_json)).to_dict() | {"name": "shapes"})
    x = jnp.zeros((1, DOWNSAMPLING, DOWNSAMPLING, 3), jnp.float32)
    rngs = {"params": jax.random.PRNGKey(0), "noise": jax.random.PRNGKey(1)}
    tree = jax.eval_shape(lambda: model.init(rngs, x, train=True)["params"])
    return tuple(("/".join(p), tuple(v.shape)) for p, v in _flat_paths(tree))


# -------------------------------------------------------------------------------------------------
# The two directions.


def _check_buffer(key: str, value: np.ndarray, expected: np.ndarray) -> None:
    value = np.asarray(value)
    if value.shape != expected.shape and value.size == expected.size:
        value = value.reshape(expected.shape)
    if value.shape != expected.shape:
        raise ConversionError(f"buffer {key!r} has shape {value.shape}, expected {expected.shape}")
    if np.issubdtype(expected.dtype, np.integer):
        ok = np.array_equal(value, expected)
    else:
        ok = np.allclose(value.astype(np.float64), expected.astype(np.float64), rtol=1e-5, atol=0)
    if not ok:
        raise ConversionError(
            f"buffer {key!r} = {value.ravel()[:4].tolist()} differs from ours "
            f"{expected.ravel()[:4].tolist()}: this layer's settings are not supported"
        )


def from_torch_state_dict(
    state_dict: Mapping[str, Any],
    arch: str = "wacnn",
    model_config=None,
) -> tuple[Any, dict[str, Any], ConversionReport]:
    """PyTorch state dict -> ``(model_config, params, report)``.

    Args:
      state_dict: ``{key: tensor or np.ndarray}`` (or a dict holding it under ``'state_dict'``),
        with the key names of the module docstring.
      arch: ``'wacnn'`` (STF names; without ``model_config`` the widths are read off the shapes,
        ``infer_wacnn_config``) or ``'mracnn'`` (our names; default config: the ``mracnn`` preset).
      model_config: the ``config.model`` to build (any preset or variant); overrides ``arch``'s
        default.
    Returns:
      The model config (a ConfigDict), the Flax ``params`` tree (nested dicts of float32 NumPy
      arrays, ready for ``build_model(cfg).apply({'params': params}, ...)``), and a report.
    Raises:
      ConversionError: a missing, unexpected or wrongly shaped key, or a buffer holding settings
        we do not implement (the message names the first such key).
    """
    sd = normalize_state_dict(state_dict)
    if model_config is None:
        model_config = infer_wacnn_config(sd) if arch == "wacnn" else _preset(arch)
    cfg = ml_collections.ConfigDict(_frozen(model_config).to_dict())
    shapes = _param_shapes(cfg)
    # zero-strided placeholders: only their shapes are read
    key_map = torch_key_map(
        unflatten_params({p: np.broadcast_to(np.float32(0), s) for p, s in shapes.items()}), cfg
    )
    buffers = _expected_buffers(key_map, shapes)
    wanted = {key: path for path, (key, _, _) in key_map.items()}

    for key in sorted(set(wanted) | set(sd)):
        if key in wanted:
            if key not in sd:
                raise ConversionError(
                    f"missing key {key!r} (for our parameter {wanted[key]!r}, arch {cfg.name!r})"
                )
            _, kind, _ = key_map[wanted[key]]
            need = _torch_shape(kind, shapes[wanted[key]])
            if tuple(sd[key].shape) != need:
                raise ConversionError(
                    f"key {key!r} has shape {tuple(sd[key].shape)}, but {cfg.name!r} with this "
                    f"config needs {need}"
                )
        elif key not in buffers:
            raise ConversionError(
                f"unexpected key {key!r}: not part of {cfg.name!r} with this config"
            )

    report = ConversionReport()
    for key, expected in buffers.items():
        if key not in sd:
            continue
        if expected is not None:
            _check_buffer(key, sd[key], expected)
        elif key.endswith(_CODING_BUFFERS) or key.endswith(".target"):
            report.ignored.append(key)

    flat: dict[str, np.ndarray] = {}
    for path, (key, kind, arg) in key_map.items():
        flat[path] = np.ascontiguousarray(
            _leaf_from_torch(kind, np.asarray(sd[key]), arg), np.float32
        )
    params = unflatten_params(flat)

    if "entropy_bottleneck.quantiles" in sd:
        q = np.asarray(sd["entropy_bottleneck.quantiles"], np.float64)
        if q.shape != (cfg.Z, 1, 3):
            raise ConversionError(
                f"buffer 'entropy_bottleneck.quantiles' has shape {q.shape}, "
                f"expected {(cfg.Z, 1, 3)}"
            )
        medians = density_quantiles(params["entropy_bottleneck"])[:, 0, 1]
        report.max_median_deviation = float(np.max(np.abs(q[:, 0, 1] - medians)))
    table = sd.get("gaussian_conditional.scale_table")
    if table is not None and table.size:
        ours = _scale_table()
        if table.shape != ours.shape or not np.allclose(table, ours, rtol=1e-5):
            report.notes.append(
                f"gaussian_conditional.scale_table ({table.size} scales from "
                f"{float(table.min()):.3g} to {float(table.max()):.3g}) differs from our "
                "coder's (64 scales, 0.11 to 256)"
            )
    return cfg, params, report


def to_torch_state_dict(
    params: Mapping[str, Any], model_config, *, buffers: bool = True
) -> OrderedDict[str, np.ndarray]:
    """Flax ``params`` -> PyTorch-style state dict ``{key: np.ndarray}`` (sorted keys).

    Key names and layouts as in the module docstring (STF's for WACNN). With ``buffers`` the
    state dict also holds what a PyTorch model stores beside its parameters (GDN pedestals and
    bounds, relative-position indices, the entropy bottleneck's ``quantiles`` computed from the
    density and its ``target``, the Gaussian conditional's bounds and scale table, and empty
    coding tables), so a PyTorch WACNN loads it with ``strict=True``; call its ``update()`` before
    coding. Needs no torch (``save_torch_state_dict`` writes the file).
    """
    flat = {"/".join(p): np.asarray(v) for p, v in _flat_paths(params)}
    key_map = torch_key_map(params, model_config)
    out: dict[str, np.ndarray] = {}
    for path, (key, kind, arg) in key_map.items():
        out[key] = np.ascontiguousarray(_leaf_to_torch(kind, flat[path], arg))
    if buffers:
        shapes = {p: v.shape for p, v in flat.items()}
        for key, value in _expected_buffers(key_map, shapes).items():
            if value is not None:
                out[key] = value
        eb = {p.split("/", 1)[1]: v for p, v in flat.items() if p.startswith("entropy_bottleneck/")}
        t = math.log(2.0 / TAIL_MASS - 1.0)
        out["entropy_bottleneck.quantiles"] = density_quantiles(eb)
        out["entropy_bottleneck.target"] = np.asarray([-t, 0.0, t], np.float32)
        out["gaussian_conditional.scale_table"] = _scale_table().astype(np.float32)
        out.update(_empty_tables("entropy_bottleneck"))
        out.update(_empty_tables("gaussian_conditional"))
    return OrderedDict(sorted(out.items()))


# -------------------------------------------------------------------------------------------------
# Single CompressAI layers (for other CompressAI-layout models).


def gdn_from_torch(state_dict: Mapping[str, Any], prefix: str = "") -> dict[str, np.ndarray]:
    """CompressAI ``GDN`` (or IGDN) state dict -> our ``GDN`` params ``{'beta', 'gamma'}``.

    ``prefix`` is the module's key prefix (``'g_a.1.'`` or ``''``). Buffers present are checked.
    """
    sd = normalize_state_dict(state_dict)
    out = {}
    for name in ("beta", "gamma"):
        if prefix + name not in sd:
            raise ConversionError(f"missing key {prefix + name!r}")
        out[name] = np.asarray(sd[prefix + name], np.float32)
    c = out["beta"].shape[0]
    if out["gamma"].shape != (c, c):
        raise ConversionError(
            f"key {prefix + 'gamma'!r} has shape {out['gamma'].shape}, expected {(c, c)}"
        )
    for key, value in _gdn_buffers(prefix).items():
        if key in sd:
            _check_buffer(key, sd[key], value)
    return out


def entropy_bottleneck_from_torch(
    state_dict: Mapping[str, Any], prefix: str = "entropy_bottleneck."
) -> dict[str, np.ndarray]:
    """CompressAI ``EntropyBottleneck`` state dict -> our ``FactorizedPrior`` params.

    Reads ``{prefix}_matrix{k}`` (STF) or ``{prefix}matrices.k`` (CompressAI 1.2), and likewise
    biases and factors; ``quantiles`` and the coding tables are not needed (module docstring).
    """
    sd = normalize_state_dict(
        {
            "entropy_bottleneck." + k[len(prefix) :]: v
            for k, v in state_dict.items()
            if k.startswith(prefix)
        }
        if prefix
        else {"entropy_bottleneck." + k: v for k, v in state_dict.items()}
    )
    num_layers = 0
    while f"entropy_bottleneck._matrix{num_layers}" in sd:
        num_layers += 1
    if num_layers == 0:
        raise ConversionError(f"missing key {prefix + '_matrix0'!r}")
    out = {}
    for k in range(num_layers):
        names = [("matrix", "_matrix"), ("bias", "_bias")] + (
            [("factor", "_factor")] if k < num_layers - 1 else []
        )
        for ours, theirs in names:
            key = f"entropy_bottleneck.{theirs}{k}"
            if key not in sd:
                raise ConversionError(f"missing key {prefix + theirs + str(k)!r}")
            out[f"{ours}_{k}"] = np.asarray(sd[key], np.float32)
    return out


# -------------------------------------------------------------------------------------------------
# Checkpoint file -> model file.


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

"""Flax parameter <-> PyTorch key: the names and the array layouts of the two frameworks.

``torch_key_map(params, model_config)`` gives, for every Flax parameter path, the PyTorch key and
the layout ``kind`` that ``leaf_from_torch`` / ``leaf_to_torch`` convert between; each conversion
is exact (a transpose or a channel permutation).

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
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

import ml_collections
import numpy as np

from mracnn_jax.convert.checkpoints import ConversionError

# -------------------------------------------------------------------------------------------------
# Leaf conversions. ``kind`` names the layout difference; each is exact (a permutation).


def subpel_perm(channels: int, r: int) -> np.ndarray:
    """Our output channel q = s*C + c reads PyTorch channel c*r*r + s."""
    q = np.arange(channels * r * r)
    return (q % channels) * r * r + q // channels


def leaf_from_torch(kind: str, t: np.ndarray, arg: int = 0) -> np.ndarray:
    if kind == "conv":  # [O, I, kh, kw] -> [kh, kw, I, O]
        return t.transpose(2, 3, 1, 0)
    if kind == "deconv":  # [I, O, k, k] -> [k, k, I, O]
        return t.transpose(2, 3, 0, 1)
    if kind == "dense":  # [O, I] -> [I, O]
        return t.T
    if kind == "subpel_conv":
        return t.transpose(2, 3, 1, 0)[..., subpel_perm(t.shape[0] // (arg * arg), arg)]
    if kind == "subpel_bias":
        return t[subpel_perm(t.shape[0] // (arg * arg), arg)]
    if kind == "copy":
        return t
    raise AssertionError(kind)


def leaf_to_torch(kind: str, a: np.ndarray, arg: int = 0) -> np.ndarray:
    if kind == "conv":
        return a.transpose(3, 2, 0, 1)
    if kind == "deconv":
        return a.transpose(2, 3, 0, 1)
    if kind == "dense":
        return a.T
    if kind == "subpel_conv":
        inv = np.argsort(subpel_perm(a.shape[-1] // (arg * arg), arg))
        return a[..., inv].transpose(3, 2, 0, 1)
    if kind == "subpel_bias":
        return a[np.argsort(subpel_perm(a.shape[0] // (arg * arg), arg))]
    if kind == "copy":
        return a
    raise AssertionError(kind)


def torch_shape(kind: str, shape: tuple[int, ...]) -> tuple[int, ...]:
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


def flat_paths(
    tree: Mapping[str, Any], prefix: tuple[str, ...] = ()
) -> list[tuple[tuple[str, ...], Any]]:
    out = []
    for k, v in tree.items():
        if hasattr(v, "shape") and not isinstance(v, Mapping):
            out.append((prefix + (str(k),), v))
        else:
            out.extend(flat_paths(v, prefix + (str(k),)))
    return out


def torch_key_map(
    params_or_shapes: Mapping[str, Any], model_config
) -> OrderedDict[str, tuple[str, str, int]]:
    """``{flax path 'a/b/kernel': (torch key, kind, arg)}`` for every parameter of the tree."""
    cfg = frozen_config(model_config)
    out: OrderedDict[str, tuple[str, str, int]] = OrderedDict()
    seen: dict[str, str] = {}
    for path, _ in flat_paths(params_or_shapes):
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


def frozen_config(cfg):
    """``cfg`` (a ConfigDict, FrozenConfigDict or plain mapping) as a FrozenConfigDict."""
    if isinstance(cfg, ml_collections.FrozenConfigDict):
        return cfg
    if isinstance(cfg, Mapping) and not isinstance(cfg, ml_collections.ConfigDict):
        cfg = ml_collections.ConfigDict(dict(cfg))
    return ml_collections.FrozenConfigDict(cfg)

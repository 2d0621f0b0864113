"""The codec's networks as serialised ``jax.export`` artefacts, runnable without this package.

    write_export(model_path, outdir, height=H, width=W)        one image shape
    write_export(model_path, outdir, symbolic=True)            any multiples of 64 (symbolic)

``outdir`` gets one file per network piece of ``codec.NetworkPieces`` (``<piece>.jaxexport``,
``jax.export.Exported.serialize()`` bytes, the model's parameters closed over as constants) and
``manifest.json``, which says what a deployment needs to chain them:

* ``pieces``: each piece's file, its inputs and outputs (value name, shape, dtype);
* ``programs``: ``encode`` (image -> symbols, y^ and the encoder's reconstruction) and ``decode``
  (symbols -> y^ -> image), lists of steps over named values. A step is a piece (``"op": "call"``)
  or one of four host operations (``host_ops``): ``add_z_offsets`` (z^ = s_z + m, m the manifest's
  ``z_offsets``), ``split_channels`` (y into its S slices), ``round_residual`` (s_i =
  round(y_i - mu_i), numpy's half-to-even) and ``concat_channels``;
* ``image``: the padding rule (centred zeros to a multiple of 64, samples / 255 as float32) and,
  for a fixed shape, the image and padded sizes;
* ``entropy_coding``: what is *not* exported. Symbols <-> bytes is the range coder of
  ``mracnn_jax.coding`` (numba); the z tables are in the model file, the y tables a package asset;
  the y scale indexes are ``clip(round(scale_index_i), 0, 63)`` agreed on through
  ``coding.scale_agreement`` before range coding;
* ``model`` (name, params digest, the 16 bytes a ``.mrac`` file records), ``jax`` (version,
  calling convention, platforms).

The pieces are exactly the codec's (``codec.loaded_model``), so a deployment that follows the
programs gets the codec's symbols and y^ up to float noise, and its reconstruction (uint8, peak
255: 8-bit images only). Exporting needs the ``flatbuffers`` package (``jax.export``'s
serialisation); ``jax.export`` is public from JAX 0.4.30, the oldest version this package runs on
is 0.4.34. An artefact loads in a JAX that supports its calling convention version (recorded in
the manifest; JAX 0.4.34 reads 9 only, later versions 9 and up).
"""

from __future__ import annotations

import importlib.util
import json
import os
import shutil
import tempfile
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import export as jax_export  # not an attribute of jax before it is imported (0.4.34)

from mracnn_jax import fileio, model_file
from mracnn_jax.codec.loaded_model import LoadedModel
from mracnn_jax.models.compressor import DOWNSAMPLING
from mracnn_jax.models.padding import padded_size, padding_amounts

FORMAT = "mracnn-jax-xla"
FORMAT_VERSION = 1
PIECE_SUFFIX = ".jaxexport"
MANIFEST = "manifest.json"
PEAK = 255  # 8-bit samples: synthesis's static peak
PLATFORMS = ("cpu", "cuda", "rocm", "tpu")  # the names jax.export knows
LATENT_STRIDE, HYPER_STRIDE = 16, 4  # image -> y, y -> z

HOST_OPS = {
    "add_z_offsets": "z_hat = float32(z_symbols) + z_offsets (per channel, the manifest's list)",
    "split_channels": "the input's last axis cut into len(out) equal parts, in order",
    "round_residual": "s = round(y - mu), float32, round half to even (numpy.round)",
    "concat_channels": "the inputs joined along the last axis, in order",
}


def serialisation_error() -> str | None:
    """Why ``jax.export`` cannot serialise here (one line), or None."""
    if importlib.util.find_spec("flatbuffers") is None:
        return "jax.export's serialisation needs the 'flatbuffers' package: pip install flatbuffers"
    return None


def check_platforms(platforms: tuple[str, ...]) -> None:
    """Raises ``ValueError`` (one line) unless ``platforms`` are names ``jax.export`` knows."""
    bad = [p for p in platforms if p not in PLATFORMS]
    if bad or not platforms:
        raise ValueError(f"unknown platform {bad[0] if bad else ''!r}: use {', '.join(PLATFORMS)}")


def _spec(shape, dtype=jnp.float32) -> jax.ShapeDtypeStruct:
    return jax.ShapeDtypeStruct(tuple(shape), dtype)


def _dims(shape) -> list:
    return [d if isinstance(d, int) else str(d) for d in shape]


def _bound_pieces(model: LoadedModel) -> dict:
    """name -> (jitted function of arrays only, input names, output names), in calling order;
    each closes over ``model``'s parameters (and z offsets) and calls the codec's piece."""
    pieces, p, offsets = model.pieces, model.params, np.asarray(model.offsets, np.float32)
    # The pieces' Python functions, traced inline: through a nested jit, a shape-polymorphic
    # export keeps every parameter of the model as a constant of every piece (the small model's
    # refine_0: 3.8 MB instead of 83 kB).
    raw = {name: getattr(fn, "__wrapped__", fn) for name, fn in pieces.functions().items()}

    def analysis(x):
        return raw["analysis"](p, x)

    def hyper_analysis(y):
        return raw["hyper_analysis"](p, y, offsets)

    def hyper_synthesis(z_hat):
        return raw["hyper_synthesis"](p, z_hat)

    def slice_fn(i):
        def f(means, scales, *support):
            return raw[f"slice_{i}"](p, means, scales, *support)

        return f

    def refine_fn(i):
        def f(support, mu, s):
            return raw[f"refine_{i}"](p, support, mu, s)

        return f

    def synthesis(y_hat):
        return raw["synthesis"](p, y_hat, PEAK)

    out = {
        "analysis": (analysis, ["x"], ["y"]),
        "hyper_analysis": (hyper_analysis, ["y"], ["z_symbols"]),
        "hyper_synthesis": (hyper_synthesis, ["z_hat"], ["means", "scales"]),
    }
    for i in range(model.num_slices):
        support = [f"y_hat_{j}" for j in range(pieces.num_support[i])]
        parameters = [f"mu_{i}", f"scale_index_{i}", f"support_{i}"]
        out[f"slice_{i}"] = (slice_fn(i), ["means", "scales", *support], parameters)
        out[f"refine_{i}"] = (
            refine_fn(i), [f"support_{i}", f"mu_{i}", f"s_{i}"], [f"y_tilde_{i}", f"y_hat_{i}"]
        )  # fmt: skip
    out["synthesis"] = (synthesis, ["y_hat"], ["x_hat"])
    return {name: (jax.jit(fn), ins, outs) for name, (fn, ins, outs) in out.items()}


def export_pieces(
    model: LoadedModel,
    height: int | None = None,
    width: int | None = None,
    *,
    symbolic: bool = False,
    platforms: tuple[str, ...] = ("cpu",),
) -> dict[str, tuple[jax_export.Exported, list, list]]:
    """name -> (``Exported``, input names, output names) for every piece, in calling order.

    The image is ``height x width`` (padded to ``padded_size``: x ``[1, P_H, P_W, C]``), or with
    ``symbolic`` any ``[1, 64a, 64b, C]`` (``jax.export.symbolic_shape``). Each piece's input
    shapes are the outputs of the pieces that feed it (the programs of ``manifest``).
    """
    if symbolic and model.config.get("attention") == "wam":
        raise ValueError(
            "a window-attention (WAM) model exports for one image size only (its shifted "
            "windows' mask is built for the size): give --height and --width"
        )
    if symbolic:
        a, b = jax_export.symbolic_shape("a, b")
        ph, pw = DOWNSAMPLING * a, DOWNSAMPLING * b
    else:
        ph, pw = padded_size(int(height), int(width))
    check_platforms(platforms)
    known = {"x": _spec((1, ph, pw, model.channels))}
    exported = {}
    for name, (fn, ins, outs) in _bound_pieces(model).items():
        if name == "hyper_synthesis":  # z^ = s_z + m has s_z's shape
            known["z_hat"] = known["z_symbols"]
        if name == "synthesis":  # y^ = the slices' y^_i joined along channels
            parts = [known[f"y_hat_{i}"] for i in range(model.num_slices)]
            channels = sum(int(s.shape[-1]) for s in parts)
            known["y_hat"] = _spec((*parts[0].shape[:-1], channels))
        if name.startswith("refine_"):  # s_i has mu_i's shape
            i = name.split("_")[1]
            known[f"s_{i}"] = known[f"mu_{i}"]
        exp = jax_export.export(fn, platforms=tuple(platforms))(*[known[n] for n in ins])
        leaves = jax.tree_util.tree_leaves(exp.out_avals)
        known.update({n: _spec(a.shape, a.dtype) for n, a in zip(outs, leaves)})
        exported[name] = (exp, ins, outs)
    return exported


def programs(exported: dict, num_slices: int) -> dict[str, list[dict]]:
    """The ``encode`` and ``decode`` step lists of the manifest (module docstring); a call takes
    and gives the value names of its piece in ``exported`` (``export_pieces``)."""
    slices = range(num_slices)

    def call(piece):
        _, ins, outs = exported[piece]
        return {"op": "call", "piece": piece, "in": list(ins), "out": list(outs)}

    def op(name, ins, outs):
        return {"op": name, "in": ins, "out": outs}

    def entropy_part(encoder: bool) -> list[dict]:
        steps = [op("add_z_offsets", ["z_symbols"], ["z_hat"]), call("hyper_synthesis")]
        if encoder:
            steps.append(op("split_channels", ["y"], [f"y_{i}" for i in slices]))
        for i in slices:
            steps.append(call(f"slice_{i}"))
            if encoder:
                steps.append(op("round_residual", [f"y_{i}", f"mu_{i}"], [f"s_{i}"]))
            steps.append(call(f"refine_{i}"))
        steps.append(op("concat_channels", [f"y_hat_{i}" for i in slices], ["y_hat"]))
        return steps

    encode = [
        call("analysis"),
        call("hyper_analysis"),
        *entropy_part(encoder=True),
        op("concat_channels", [f"s_{i}" for i in slices], ["y_symbols"]),
        op("concat_channels", [f"scale_index_{i}" for i in slices], ["scale_index"]),
        call("synthesis"),
    ]
    decode = [*entropy_part(encoder=False), call("synthesis")]
    return {"encode": encode, "decode": decode}


def manifest(
    model: LoadedModel,
    exported: dict,
    *,
    model_path: str | os.PathLike | None = None,
    height: int | None = None,
    width: int | None = None,
) -> dict[str, Any]:
    """The ``manifest.json`` of ``exported`` (``export_pieces``) for ``model``."""
    pieces = {}
    for name, (exp, ins, outs) in exported.items():
        out_avals = jax.tree_util.tree_leaves(exp.out_avals)
        pieces[name] = {
            "file": name + PIECE_SUFFIX,
            "inputs": [{"name": n, "shape": _dims(a.shape), "dtype": str(a.dtype)}
                       for n, a in zip(ins, exp.in_avals)],
            "outputs": [{"name": n, "shape": _dims(a.shape), "dtype": str(a.dtype)}
                        for n, a in zip(outs, out_avals)],
        }  # fmt: skip
    first = next(iter(exported.values()))[0]
    symbolic = height is None
    image: dict[str, Any] = {
        "multiple": DOWNSAMPLING,
        "peak": PEAK,
        "channels": model.channels,
        "symbolic": symbolic,
        "input": "x = the image's samples / peak as float32, zero padded (centred) to [1, P_H, "
        "P_W, C], P_H and P_W the multiples of 'multiple' that hold it, (P_H - H) // 2 rows on "
        "top and (P_W - W) // 2 columns on the left; encode's x_hat, cropped back, is the image "
        "(uint8)",
    }
    if not symbolic:
        (top, _), (left, _) = padding_amounts(height, width)
        image.update(height=height, width=width, padded=list(padded_size(height, width)),
                     top=top, left=left)  # fmt: skip
    stored = model_path is not None and model_file.load_coding_tables(model_path) is not None
    z_tables = (
        "the model file's entries coding/z_cdf.npy and coding/z_cdf_offset.npy (int32, "
        "tensorflow-compression's flat CDF rows; mracnn_jax.model_file.load_coding_tables)"
        if stored
        else "not in the model file: computed from the parameters by "
        "mracnn_jax.coding.tables.z_coding_tables (mracnn_jax.model_file.add_coding_tables "
        "stores them)"
    )
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "model": {
            "name": model.name,
            "params_digest": model.params_digest,
            "identity": model.identity.hex(),
            "file": None if model_path is None else os.path.basename(os.fspath(model_path)),
            "num_slices": model.num_slices,
            "num_support": list(model.pieces.num_support),
        },
        "jax": {
            "version": jax.__version__,
            "calling_convention_version": first.calling_convention_version,
            "platforms": list(first.platforms),
        },
        "image": image,
        "pieces": pieces,
        "programs": programs(exported, model.num_slices),
        "host_ops": HOST_OPS,
        "z_offsets": [float(v) for v in np.asarray(model.offsets, np.float32)],
        "entropy_coding": {
            "included": False,
            "coder": "mracnn_jax.coding (the numba range coder, byte for byte "
            "tensorflow-compression 2.14's); the .mrac container: docs/format.md",
            "z": f"z_symbols (int32) with the z tables: {z_tables}",
            "y": "s_i (int32) with the Gaussian tables of mracnn_jax/assets/gaussian_tables.npz, "
            "table k = clip(round(scale_index_i), 0, 63), agreed on by encoder and decoder "
            "through mracnn_jax.coding.scale_agreement",
        },
    }


def write_export(
    model_path: str | os.PathLike,
    outdir: str | os.PathLike,
    height: int | None = None,
    width: int | None = None,
    *,
    symbolic: bool = False,
    platforms: tuple[str, ...] = ("cpu",),
) -> dict[str, Any]:
    """Exports the model file's pieces into ``outdir`` (created; an empty one is replaced, a
    non-empty one refused) and returns the manifest. The folder appears only once complete."""
    outdir = os.fspath(outdir)
    if os.path.exists(outdir) and (not os.path.isdir(outdir) or os.listdir(outdir)):
        raise ValueError(f"output {outdir!r} exists and is not an empty folder")
    error = serialisation_error()
    if error:
        raise RuntimeError(error)
    check_platforms(platforms)
    sized = height is not None or width is not None
    if symbolic == sized or (sized and (height is None or width is None)):
        raise ValueError("give both height and width, or symbolic=True")
    model = LoadedModel.load(model_path)
    exported = export_pieces(model, height, width, symbolic=symbolic, platforms=platforms)
    info = manifest(model, exported, model_path=model_path, height=height, width=width)
    files = {name + PIECE_SUFFIX: exp.serialize() for name, (exp, _, _) in exported.items()}
    files[MANIFEST] = (json.dumps(info, indent=1) + "\n").encode()
    _write_folder(outdir, files)
    return info


def _write_folder(outdir: str, files: dict[str, bytes]) -> None:
    """Writes ``files`` into a temporary folder beside ``outdir`` and renames it into place
    (the permissions ``os.mkdir`` and ``open()`` would give)."""
    parent = os.path.dirname(os.path.abspath(outdir))
    tmp = tempfile.mkdtemp(prefix=".tmp-mracnn-", dir=parent)
    try:
        os.chmod(tmp, 0o777 & ~fileio.current_umask())
        for name, data in files.items():
            with open(os.path.join(tmp, name), "wb") as f:
                f.write(data)
        os.replace(tmp, outdir)  # replaces an empty folder, refuses a non-empty one
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise

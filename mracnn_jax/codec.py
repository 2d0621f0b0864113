"""Images to ``.mrac`` bytes and back: the JAX networks plus a numba range coder.

    data = compress(image, model)          # image: uint8 [H, W, 3] / [H, W] array or PIL image
    image = decompress(data, model)        # uint8 [H, W, 3] (RGB) or [H, W] (grayscale)
    model = LoadedModel.load("model.mracnn")    or    LoadedModel.from_config(config, seed=0)

Encoder (decoder steps marked D, in the same order, with the same jitted functions):

    x (padded to a multiple of 64, centred zeros) -> y = g_a(x), z = h_a(y)
    s_z = round(z - m)                                 m: per-channel medians, stored in the model
  D z^ = s_z + m;  (means, scales) = h_s(z^)
    for each slice i:
  D   (mu_i, f_i, support_i) = slice_i(means, scales, y^_0 .. y^_{i-1})  f_i = scale_to_index(sigma_i)
  D   k_i = clip(round(f_i), 0, 63), agreed on through the slice's agreement block
      s_i = round(y_i - mu_i);  range-code s_i with the Gaussian table k_i
  D   y~_i = s_i + mu_i;  y^_i = refine_i(support_i, y~_i)                  (LRP)
  D x^ = g_s(y^), cropped, rounded to uint8

Portability: the range coder's inputs are integers that float noise cannot change. The z tables
and offsets are stored in the model file (``coding.tables``); the y tables are a package asset;
the scale indexes are agreed on by ``coding.scale_agreement`` (the decoder's sigma may differ from
the encoder's by 1.23e-4 relative); mu and the LRP only move the reconstruction by float noise.
Every network piece is one ``jax.jit`` function per architecture (``NetworkPieces``, shared by all
models of one config, the parameters are an argument), compiled once per padded shape and cached
by JAX (see ``LoadedModel.compilations``); ``enable_compilation_cache`` adds JAX's persistent
cache across processes.

Guard: the file stores SHA-256[:16] of the integer symbols (s_z, s_0..s_{S-1}) and of the scale
indexes (k_0..k_{S-1}). The decoder checks the index digest and the symbol digest before
synthesis and raises ``LatentMismatchError`` if either differs, so a decoder whose entropy
parameters differ beyond the tolerance, or a damaged file, fails loudly instead of returning a
wrong image. Nothing float is digested: decoders on other machines return the same image up to
float noise.

Colour (the rules of ``mracnn_jax.images``): RGB is coded as is; grayscale (``L``, ``1``, 16-bit
``I;16`` reduced to 8 bits with a warning) is coded as RGB with equal channels and decoded back to
``L`` (ITU-R 601 luma of the reconstruction); palette images without transparency, CMYK and YCbCr
are coded and decoded as RGB. Images with an alpha channel and 32-bit integer or float images are
refused (``ImageError``, also an ``images.ImageError``), and so are sides beyond 65535 pixels.

Tiled coding (``tile=T``, version-4 files, ``mracnn_jax.coding.tiling``): the image is cut into
``T x T`` tiles coded one after another, each with its own z, hyperprior and strings; optionally g_a
sees a halo of neighbouring pixels and g_s a halo of neighbouring latents (no pixel is coded twice
either way; the default is no halo, see docs/benchmarks.md). The decoder range-decodes every tile,
checks the digests (over all tiles in order), then synthesises tile after tile: memory follows the
tile size.

No TensorFlow: ``coding.tfc_models`` keeps tensorflow-compression's coder as the reference the
tests compare the numba coder with, byte for byte.
"""

from __future__ import annotations

import dataclasses
import os
import time
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mracnn_jax import images, model_file, zoo
from mracnn_jax.coding import coders, container, scale_agreement, tables, tiling
from mracnn_jax.coding.container import Bitstream, ContainerError
from mracnn_jax.coding.range_coder import RangeCodingError
from mracnn_jax.entropy.gaussian import scale_to_index
from mracnn_jax.models.compressor import DOWNSAMPLING
from mracnn_jax.models.padding import padding_amounts
from mracnn_jax.models.registry import build_model, init_params

__all__ = [
    "AUTO_TILE_PIXELS",
    "DEFAULT_HALO",
    "DEFAULT_TILE",
    "CodecError",
    "CompressionResult",
    "ContainerError",
    "DecompressionResult",
    "ImageError",
    "LatentMismatchError",
    "LoadedModel",
    "ModelMismatchError",
    "NetworkPieces",
    "auto_tile",
    "compress",
    "compress_with_info",
    "decompress",
    "decompress_with_info",
    "enable_compilation_cache",
    "pieces_for",
    "resolve_tiling",
]


# Tiled coding: defaults in coding/tiling.py (chosen in docs/benchmarks.md, issue 8).
DEFAULT_TILE = tiling.DEFAULT_TILE
DEFAULT_HALO = tiling.DEFAULT_HALO
AUTO_TILE_PIXELS = tiling.AUTO_TILE_PIXELS
PROGRESS_DELAY_S = 3.0  # the progress bar appears once the work has taken this long


class CodecError(ValueError):
    """Compression or decompression failed (the message, one line, says why)."""


class ImageError(CodecError, images.ImageError):
    """The input is not an image this codec accepts (also an ``images.ImageError``)."""


class ModelMismatchError(CodecError):
    """The bitstream was written by another model."""


class LatentMismatchError(CodecError):
    """The decoded latents differ from the encoder's (the guard)."""


def enable_compilation_cache(path: str | os.PathLike | None) -> None:
    """Persists compiled JAX functions under ``path`` so later processes skip XLA compilation
    (``None`` turns the persistent cache off again)."""
    if path is not None:
        os.makedirs(path, exist_ok=True)
        path = os.fspath(path)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0 if path else 1.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    try:  # JAX fixes the cache at its first compilation; start over with the new directory
        from jax._src import compilation_cache

        compilation_cache.reset_cache()
    except (ImportError, AttributeError):  # pragma: no cover - other JAX versions
        pass


# -------------------------------------------------------------------------------------------------
# Images: read by mracnn_jax.images (its rules); the codec adds its size limit.


def _coded_image(image: Any) -> tuple[np.ndarray, str]:
    """``images.to_rgb_array(image)`` within the format's size limit; raises ``ImageError``."""
    try:
        rgb, mode = images.to_rgb_array(image)
    except images.ImageError as e:
        raise ImageError(str(e)) from None
    h, w = rgb.shape[:2]
    if not (1 <= h <= container.MAX_SIDE and 1 <= w <= container.MAX_SIDE):
        raise ImageError(f"image size {h}x{w} outside 1..{container.MAX_SIDE} pixels per side")
    return rgb, mode


# -------------------------------------------------------------------------------------------------
# The model and its jitted pieces.


def _model_config(config) -> ml_collections.ConfigDict:
    if isinstance(config, dict):
        config = ml_collections.ConfigDict(config)
    if "model" in config and "N" not in config:  # an experiment config: use its model block
        config = config.model
    return config


class NetworkPieces:
    """The jitted network pieces of one architecture; parameters are an argument.

    Shared by every ``LoadedModel`` with the same config (``pieces_for``), so loading a second
    model of an architecture (another quality, a perturbed copy) compiles nothing new. Each piece
    is one ``jax.jit`` function; JAX compiles it once per input shape (padded image size).
    """

    def __init__(self, config):
        self.config = config
        self.module = module = build_model(config)
        self.num_slices = int(config.entropy.num_slices)
        max_support = int(config.entropy.max_support)
        self.num_support = [
            i if max_support < 0 else min(i, max_support) for i in range(self.num_slices)
        ]

        def apply(p, method, *args):
            return module.apply({"params": p}, *args, method=method)

        def analysis(p, x, off):
            y = apply(p, lambda m, x: m.analysis(x), x)
            z = apply(p, lambda m, y: m.hyper_analysis(y), y)
            return y, jnp.round(z - off)

        def analysis_cropped(p, x, off, margin):
            # g_a on a tile with its halo; h_a on the tile's own latent block only
            y = apply(p, lambda m, x: m.analysis(x), x)
            y = y[:, margin : y.shape[1] - margin, margin : y.shape[2] - margin, :]
            z = apply(p, lambda m, y: m.hyper_analysis(y), y)
            return y, jnp.round(z - off)

        def hyper_synthesis(p, z_hat):
            return apply(p, lambda m, z: m.hyper_synthesis(z), z_hat)

        def slice_fn(i):
            def f(p, means, scales, *support):
                mu, sigma, mean_support = apply(
                    p,
                    lambda m, a, b, d: m.slice_parameters(i, a, b, d),
                    means,
                    scales,
                    list(support),
                )
                return mu, scale_to_index(sigma), mean_support

            return f

        def refine_fn(i):
            def f(p, mean_support, mu, s):
                y_tilde = s + mu
                y_hat = apply(p, lambda m, a, b: m.refine_slice(i, a, b), mean_support, y_tilde)
                return y_tilde, y_hat

            return f

        def synthesis(p, y_hat):
            x = apply(p, lambda m, y: m.synthesis(y), y_hat)
            return jnp.round(jnp.clip(x, 0.0, 1.0) * 255.0).astype(jnp.uint8)

        self.analysis = jax.jit(analysis)
        self.analysis_cropped = jax.jit(analysis_cropped, static_argnums=3)
        self.hyper_synthesis = jax.jit(hyper_synthesis)
        self.slices = [jax.jit(slice_fn(i)) for i in range(self.num_slices)]
        self.refines = [jax.jit(refine_fn(i)) for i in range(self.num_slices)]
        self.synthesis = jax.jit(synthesis)

    def functions(self) -> dict:
        named = {
            "analysis": self.analysis,
            "analysis_cropped": self.analysis_cropped,
            "hyper_synthesis": self.hyper_synthesis,
            "synthesis": self.synthesis,
        }
        named.update({f"slice_{i}": f for i, f in enumerate(self.slices)})
        named.update({f"refine_{i}": f for i, f in enumerate(self.refines)})
        return named

    def compilations(self) -> dict:
        """Compiled executables per piece (one per distinct input shape)."""
        return {k: f._cache_size() for k, f in self.functions().items()}


_PIECES: dict[str, NetworkPieces] = {}


def pieces_for(config) -> NetworkPieces:
    """The shared ``NetworkPieces`` of an architecture (keyed by its config)."""
    key = config.to_json(sort_keys=True) if hasattr(config, "to_json") else repr(config)
    if key not in _PIECES:
        _PIECES[key] = NetworkPieces(config)
    return _PIECES[key]


class LoadedModel:
    """A codec model: config, parameters, identity and its jitted pieces (built lazily).

    ``name`` and ``params_digest`` (hex SHA-256 of the parameters, see ``model_file``) identify
    it; a bitstream records the name and the first 16 bytes of the digest and is only decoded by
    the same model.
    """

    def __init__(
        self,
        config,
        params,
        metadata: dict | None = None,
        digest: str | None = None,
        coding_tables: dict | None = None,
    ):
        self.config = ml_collections.FrozenConfigDict(_model_config(config))
        self.pieces = pieces_for(self.config)
        self.module = self.pieces.module
        self.name = str(self.config.name)
        host = jax.tree_util.tree_map(np.asarray, params)
        self.params_digest = digest or model_file.params_digest(host)
        self.identity = bytes.fromhex(self.params_digest)[: container.DIGEST_BYTES]
        self.params = jax.tree_util.tree_map(jnp.asarray, host)
        self.metadata = dict(metadata or {})
        self.num_slices = self.pieces.num_slices
        self._coding_tables = coding_tables
        self._z_coder = None

    # -- construction --------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | os.PathLike) -> LoadedModel:
        """From a model file written by ``model_file.save_model`` / ``mracnn export``."""
        config, params, metadata = model_file.load_model(path)
        header = model_file.read_header(path)
        return cls(
            config, params, metadata, digest=header["params_digest"],
            coding_tables=model_file.load_coding_tables(path),
        )  # fmt: skip

    @classmethod
    def from_config(cls, config, seed: int = 0) -> LoadedModel:
        """Randomly initialised (``config`` is a model or an experiment config)."""
        cfg = _model_config(config)
        params = init_params(build_model(cfg), jax.random.PRNGKey(seed))  # as training starts
        return cls(cfg, params, {"init_seed": seed})

    def save(self, path: str | os.PathLike, metadata: dict | None = None) -> str:
        """Writes a model file (``model_file.save_model``); returns the parameter digest."""
        meta = {**self.metadata, **(metadata or {})}
        return model_file.save_model(path, self.config.to_dict(), self.params, metadata=meta)

    # -- jitted pieces, bound to this model's parameters ------------------------------------------
    def compilations(self) -> int:
        """Compiled executables over all pieces of this architecture (grows only on new shapes)."""
        return sum(self.pieces.compilations().values())

    def coding_tables(self) -> dict:
        """The z offsets and tables (``coding.tables.z_coding_tables``): those stored in the
        model file, or computed from the parameters for a model without them (a model file
        written before they were stored, or a model built in memory)."""
        if self._coding_tables is None:
            self._coding_tables = tables.z_coding_tables(self.params["entropy_bottleneck"])
        return self._coding_tables

    @property
    def offsets(self) -> np.ndarray:
        """z quantisation offsets ``[Z]`` (the prior's medians), float32."""
        return self.coding_tables()["z_offsets"]

    def analysis(self, x, offsets):
        """x ``[1, H, W, 3]`` -> (y, round(z - m))."""
        return self.pieces.analysis(self.params, x, offsets)

    def analysis_cropped(self, x, offsets, margin: int):
        """x ``[1, H, W, 3]`` -> (y without ``margin`` latent pixels on each side, round(z - m))
        with z = h_a of that cropped y (tiled coding: g_a sees the halo, h_a does not)."""
        if margin == 0:
            return self.analysis(x, offsets)
        return self.pieces.analysis_cropped(self.params, x, offsets, margin)

    def hyper_synthesis(self, z_hat):
        """z^ -> (latent means, latent scales)."""
        return self.pieces.hyper_synthesis(self.params, z_hat)

    def slice_parameters(self, i: int, means, scales, decoded):
        """(mu_i, pre-rounding scale index f_i (float32), mean support) for slice ``i``."""
        support = tuple(decoded[: self.pieces.num_support[i]])
        return self.pieces.slices[i](self.params, means, scales, *support)

    def refine(self, i: int, mean_support, mu, symbols):
        """(y~_i = symbols + mu_i, y^_i = LRP-refined y~_i)."""
        return self.pieces.refines[i](self.params, mean_support, mu, symbols)

    def synthesis(self, y_hat):
        """y^ -> uint8 image ``[1, H, W, 3]`` (clipped to [0, 1], x 255, rounded)."""
        return self.pieces.synthesis(self.params, y_hat)

    # -- range coders ----------------------------------------------------------------------------
    def z_coder(self) -> coders.ZCoder:
        """The z coder with this model's stored tables (built once per model)."""
        if self._z_coder is None:
            t = self.coding_tables()
            self._z_coder = coders.ZCoder(t["z_cdf"], t["z_cdf_offset"], t["precision"])
        return self._z_coder

    @staticmethod
    def y_coder() -> coders.YCoder:
        """The y coder (shared by every model)."""
        return coders.y_coder()


# -------------------------------------------------------------------------------------------------
# Compress / decompress.


@dataclasses.dataclass
class CompressionResult:
    """Everything ``compress_with_info`` knows (the tests compare it with the decoder).

    ``reconstruction`` is ``None`` with ``reconstruct=False``. Tiled: the latent arrays are those
    of the whole latent canvas (tiles in place); all but ``y_hat`` are ``None`` with
    ``keep_latents=False``.
    """

    data: bytes
    reconstruction: np.ndarray | None  # what decompress will return (uint8)
    z_symbols: np.ndarray | None  # int32 [1, h/4, w/4, Z] (h, w: y's size)
    y_symbols: np.ndarray | None  # int32 [1, h, w, M]
    z_hat: np.ndarray | None  # float32, s_z + m
    y_tilde: np.ndarray | None  # float32 [1, h, w, M], s + mu (quantised y)
    y_hat: np.ndarray | None  # float32, after the LRP (what g_s sees)
    scale_indexes: np.ndarray | None  # int32 [1, h, w, M]
    bits: dict  # payload and ideal-code-length ("table") bits, per stream
    seconds: dict  # network / entropy coding / total
    tiling: dict | None = None  # the tile grid (``TileGrid.describe``), None when untiled


@dataclasses.dataclass
class DecompressionResult:
    image: np.ndarray
    bitstream: Bitstream
    z_symbols: np.ndarray | None
    y_symbols: np.ndarray | None
    z_hat: np.ndarray | None
    y_tilde: np.ndarray | None
    y_hat: np.ndarray | None
    seconds: dict


def _digest_chunks(z_sym, y_syms, indexes) -> tuple[list[bytes], list[bytes]]:
    """Integer chunks of the two digests: the symbols (z, then y slice by slice) and the y
    scale indexes, int32 little-endian, C order. Nothing float is digested: the reconstruction
    may differ between machines by float noise, the integers may not."""

    def ints(a):
        return np.ascontiguousarray(a, "<i4").tobytes()

    return [ints(z_sym)] + [ints(s) for s in y_syms], [ints(k) for k in indexes]


def _digests(z_sym, y_syms, indexes) -> tuple[bytes, bytes]:
    symbols, index_chunks = _digest_chunks(z_sym, y_syms, indexes)
    return container.digest(symbols), container.digest(index_chunks)


def _padded_input(rgb: np.ndarray) -> np.ndarray:
    h, w = rgb.shape[:2]
    (t, b), (l, r) = padding_amounts(h, w)
    x = rgb.astype(np.float32) / np.float32(255.0)
    return np.pad(x, ((t, b), (l, r), (0, 0)))[None]


def _crop(x: np.ndarray, h: int, w: int) -> np.ndarray:
    (t, _), (l, _) = padding_amounts(h, w)
    return x[0, t : t + h, l : l + w, :]


class _Clock:
    """Wall-clock seconds per kind of work: coder ``setup`` (tables, the range coder's start-up;
    once per process / model), ``network`` (JAX, including compilation on a new shape), ``entropy``
    (range coding)."""

    def __init__(self):
        self.seconds = {"setup": 0.0, "network": 0.0, "entropy": 0.0}

    def setup(self, fn, *args):
        t = time.perf_counter()
        out = fn(*args)
        self.seconds["setup"] += time.perf_counter() - t
        return out

    def network(self, fn, *args):
        t = time.perf_counter()
        out = jax.block_until_ready(fn(*args))
        self.seconds["network"] += time.perf_counter() - t
        return out

    def entropy(self, fn, *args):
        t = time.perf_counter()
        out = fn(*args)
        self.seconds["entropy"] += time.perf_counter() - t
        return out


@dataclasses.dataclass
class _Latents:
    """One coded latent (the whole image, or one tile): strings and the quantities both sides
    derive."""

    z_string: bytes
    y_strings: list
    z_int: np.ndarray  # int32 [1, h/4, w/4, Z]
    z_hat: np.ndarray
    syms: list  # int32 per slice
    tildes: list  # float32 per slice
    indexes: list  # int32 per slice
    y_hat: Any  # [1, h, w, M] (JAX array)
    agreement_bytes: int = 0  # of the scale-index agreement blocks in the y strings

    def digest_into(self, symbols: container.Digest, indexes: container.Digest) -> None:
        sym_chunks, index_chunks = _digest_chunks(self.z_int, self.syms, self.indexes)
        for c in sym_chunks:
            symbols.update(c)
        for c in index_chunks:
            indexes.update(c)

    def place(self, r: int, c: int, y_canvas: _Canvas, z_canvas: _Canvas, keep: bool) -> None:
        """Puts tile (r, c)'s ŷ on ``y_canvas``; with ``keep``, also its symbols and latents (and
        on the encoder side its scale indexes) for the caller's inspection."""
        arrays = _latent_arrays(self) if keep else {"y_hat": self.y_hat}
        if keep:
            arrays["scale_indexes"] = np.concatenate(self.indexes, axis=-1)
        for name, value in arrays.items():
            (z_canvas if name.startswith("z_") else y_canvas).put(name, r, c, value)


def _encode_latents(model: LoadedModel, y, z_sym, zc, yc, clock: _Clock) -> _Latents:
    """Range-codes (y, round(z - m)) as the encoder half of the module docstring's steps."""
    offsets = model.offsets
    z_int = np.asarray(z_sym).astype(np.int32)
    z_hat = z_int.astype(np.float32) + offsets
    z_string = clock.entropy(zc.compress, z_int)
    means, scales = clock.network(model.hyper_synthesis, z_hat)

    y_slices = np.split(np.asarray(y), model.num_slices, axis=-1)
    decoded, strings, syms, tildes, indexes = [], [], [], [], []
    agreement = 0
    for i, y_i in enumerate(y_slices):
        mu, f, support = clock.network(model.slice_parameters, i, means, scales, decoded)
        mu = np.asarray(mu)
        s = np.round(y_i - mu)  # float32, the model's round(y - mu)
        s_int = s.astype(np.int32)
        idx, block = clock.entropy(scale_agreement.encode, np.asarray(f))
        strings.append(block + clock.entropy(yc.compress, s_int, idx))
        agreement += len(block)
        y_tilde, y_hat_i = clock.network(model.refine, i, support, mu, s)
        decoded.append(y_hat_i)
        syms.append(s_int)
        tildes.append(np.asarray(y_tilde))
        indexes.append(idx)
    y_hat = jnp.concatenate(decoded, axis=-1)
    return _Latents(z_string, strings, z_int, z_hat, syms, tildes, indexes, y_hat, agreement)


def _decode_latents(
    model: LoadedModel, z_string, y_strings, z_shape, zc, yc, clock: _Clock, where: str = ""
) -> _Latents:
    """The decoder half: strings -> symbols and latents (``z_shape``: z's spatial size)."""
    try:
        z_int = clock.entropy(zc.decompress, z_string, z_shape)
    except RangeCodingError as e:
        raise LatentMismatchError(f"{e}{where}; the file does not match this model") from None
    z_hat = z_int.astype(np.float32) + model.offsets
    means, scales = clock.network(model.hyper_synthesis, z_hat)
    decoded, syms, tildes, indexes = [], [], [], []
    agreement = 0
    for i, string in enumerate(y_strings):
        mu, f, support = clock.network(model.slice_parameters, i, means, scales, decoded)
        mu = np.asarray(mu)
        try:
            idx, used = clock.entropy(scale_agreement.decode, np.asarray(f), string)
            s_int = clock.entropy(yc.decompress, string[used:], idx, f"y slice {i}{where}")
        except (RangeCodingError, scale_agreement.AgreementError) as e:
            raise LatentMismatchError(f"{e} (y slice {i}{where})") from None
        agreement += used
        s = s_int.astype(np.float32)
        y_tilde, y_hat_i = clock.network(model.refine, i, support, mu, s)
        decoded.append(y_hat_i)
        syms.append(s_int)
        tildes.append(np.asarray(y_tilde))
        indexes.append(idx)
    y_hat = jnp.concatenate(decoded, axis=-1)
    return _Latents(
        z_string, list(y_strings), z_int, z_hat, syms, tildes, indexes, y_hat, agreement
    )


def _progress(total: int, desc: str, enabled: bool):
    """A tqdm bar on stderr that appears only for work taking more than a few seconds."""
    from tqdm.auto import tqdm

    return tqdm(
        total=total, desc=desc, unit="tile", delay=PROGRESS_DELAY_S, disable=not enabled,
        leave=False, dynamic_ncols=True,
    )


class _Canvas:
    """Whole-image latent arrays assembled from tiles (``[1, h, w, C]`` at one stride)."""

    def __init__(self, grid: tiling.TileGrid, stride: int):
        self.grid, self.stride = grid, stride
        ch, cw = grid.canvas
        self.shape = (ch // stride, cw // stride)
        self.arrays: dict[str, np.ndarray] = {}

    def put(self, name: str, r: int, c: int, value) -> None:
        value = np.asarray(value)
        if name not in self.arrays:
            self.arrays[name] = np.zeros((1, *self.shape, value.shape[-1]), value.dtype)
        rows, cols = self.grid.block(r, c, self.stride)
        self.arrays[name][0, rows, cols] = value[0]

    def get(self, name: str):
        return self.arrays.get(name)


def _synthesise_tiles(model, grid, y_hat, clock, bar) -> np.ndarray:
    """g_s tile after tile on the latent canvas ``y_hat``, halo dropped: uint8 ``[H, W, 3]``."""
    out = np.zeros((grid.height, grid.width, 3), np.uint8)
    for r, c in grid.tiles():
        x = np.asarray(clock.network(model.synthesis, grid.synthesis_input(y_hat, r, c)))
        grid.paste(out, x[0], r, c)
        bar.update(1)
    return out


def resolve_tiling(tile: int | None, halo: tuple[int, int] | None = None):
    """``container.Tiling`` for a tile size (``None``: untiled); ``halo`` = (analysis, synthesis)
    pixels, ``DEFAULT_HALO`` when ``None``. Raises ``CodecError`` for sizes the format lacks."""
    if tile is None:
        return None
    halo_a, halo_s = DEFAULT_HALO if halo is None else halo
    try:
        tiling.check_tiling(tile, halo_a, halo_s)
    except ValueError as e:
        raise CodecError(str(e)) from None
    return container.Tiling(int(tile), int(halo_a), int(halo_s))


def auto_tile(height: int, width: int) -> int | None:
    """The tile size ``mracnn compress`` picks: ``DEFAULT_TILE`` above ``AUTO_TILE_PIXELS``
    pixels, else ``None`` (untiled)."""
    return DEFAULT_TILE if height * width > AUTO_TILE_PIXELS else None


def compress_with_info(
    image: Any,
    model: LoadedModel,
    *,
    estimate_bits: bool = True,
    tile: int | None = None,
    halo: tuple[int, int] | None = None,
    reconstruct: bool = True,
    keep_latents: bool = True,
    progress: bool = False,
) -> CompressionResult:
    """Compresses ``image`` and returns the bytes with the encoder's view of the result.

    ``bits`` holds the payload and header sizes and, with ``estimate_bits``, the ideal code
    length of the symbols under the coding tables (``"table"``, ``"z_table"``, ``"y_table"``).

    ``tile=None`` writes an untiled (version 3) file. ``tile=T`` (a multiple of 64) codes
    ``T x T`` tiles one after another into a version-4 file (``mracnn_jax.coding.tiling``), with
    ``halo = (analysis, synthesis)`` pixels of context (default ``DEFAULT_HALO``); memory then
    depends on ``T``, not on the image size. ``reconstruct=False`` skips the encoder's prediction
    of the decoded image (the synthesis transform, about 40 % of the encoder's network time;
    ``reconstruction`` is then ``None``). Tiled only: ``keep_latents=False`` drops the
    whole-image latent arrays but ``y_hat``, ``progress`` shows a bar over the tiles.
    """
    t_start = time.perf_counter()
    rgb, mode = _coded_image(image)
    tiles = resolve_tiling(tile, halo)
    clock = _Clock()
    zc = clock.setup(model.z_coder)
    yc = clock.setup(model.y_coder)
    if tiles is not None:
        return _compress_tiled(
            rgb, mode, model, tiles, clock, zc, yc, t_start,
            estimate_bits=estimate_bits, reconstruct=reconstruct,
            keep_latents=keep_latents, progress=progress,
        )  # fmt: skip
    h, w = rgb.shape[:2]
    y, z_sym = clock.network(model.analysis, _padded_input(rgb), model.offsets)
    lat = _encode_latents(model, y, z_sym, zc, yc, clock)
    reconstruction = None
    if reconstruct:
        x_hat = np.asarray(clock.network(model.synthesis, lat.y_hat))
        reconstruction = images.restore_mode(_crop(x_hat, h, w), mode)

    symbol_digest, index_digest = _digests(lat.z_int, lat.syms, lat.indexes)
    bs = _bitstream(
        h, w, mode, model, symbol_digest, index_digest,
        z_string=lat.z_string, y_strings=tuple(lat.y_strings),
    )  # fmt: skip
    data = container.pack(bs)
    bits = _bits(bs, data, lat.agreement_bytes)
    if estimate_bits:
        y_table = [yc.table_bits(s, k) for s, k in zip(lat.syms, lat.indexes)]
        z_table = zc.table_bits(lat.z_int)
        bits.update(z_table=z_table, y_table=y_table, table=z_table + sum(y_table))
    clock.seconds["total"] = time.perf_counter() - t_start
    return CompressionResult(
        data=data,
        reconstruction=reconstruction,
        **_latent_arrays(lat),
        scale_indexes=np.concatenate(lat.indexes, axis=-1),
        bits=bits,
        seconds=clock.seconds,
    )


def _bitstream(h, w, mode, model, symbol_digest, index_digest, **payload) -> Bitstream:
    """A file's header fields for an ``h x w`` image of ``mode`` coded by ``model``, with the
    payload fields (``z_string``/``y_strings`` untiled, ``tiling``/``tiles`` tiled)."""
    return Bitstream(
        height=h,
        width=w,
        colour_mode=mode,
        model_name=model.name,
        params_digest=model.identity,
        symbol_digest=symbol_digest,
        index_digest=index_digest,
        **payload,
    )


def _latent_arrays(lat: _Latents) -> dict:
    """The whole-image latent fields of Compression/DecompressionResult from one ``_Latents``."""
    return {
        "z_symbols": lat.z_int,
        "y_symbols": np.concatenate(lat.syms, axis=-1),
        "z_hat": lat.z_hat,
        "y_tilde": np.concatenate(lat.tildes, axis=-1),
        "y_hat": np.asarray(lat.y_hat),
    }


def _bits(bs: Bitstream, data: bytes, agreement_bytes: int) -> dict:
    """Sizes in bits; ``agreement`` is the part of the y payload that carries the scale-index
    agreement blocks (``coding.scale_agreement``), the rest of ``y_payload`` is range-coded."""
    return {
        "payload": 8 * bs.payload_bytes(),
        "agreement": 8 * agreement_bytes,
        "header": 8 * bs.header_bytes(),
        "file": 8 * len(data),
        "z_payload": 8 * bs.z_bytes(),
        "y_payload": [8 * b for b in bs.y_bytes()],
    }


def _compress_tiled(
    rgb, mode, model, tiles, clock, zc, yc, t_start, *, estimate_bits, reconstruct,
    keep_latents, progress,
) -> CompressionResult:  # fmt: skip
    h, w = rgb.shape[:2]
    grid = tiles.grid(h, w)
    margin = grid.halo_analysis // tiling.LATENT_STRIDE
    symbols, index_digest = container.Digest(), container.Digest()
    y_canvas = _Canvas(grid, tiling.LATENT_STRIDE)
    z_canvas = _Canvas(grid, DOWNSAMPLING)
    coded, z_table, y_table = [], 0.0, [0.0] * model.num_slices
    agreement = 0
    steps = grid.num_tiles * (2 if reconstruct else 1)
    with _progress(steps, "mracnn compress", progress) as bar:
        for r, c in grid.tiles():
            x = grid.analysis_input(rgb, r, c)
            y, z_sym = clock.network(model.analysis_cropped, x, model.offsets, margin)
            lat = _encode_latents(model, y, z_sym, zc, yc, clock)
            lat.digest_into(symbols, index_digest)
            agreement += lat.agreement_bytes
            coded.append(container.TileCode(lat.z_string, tuple(lat.y_strings)))
            lat.place(r, c, y_canvas, z_canvas, keep_latents)
            if estimate_bits:
                z_table += zc.table_bits(lat.z_int)
                for i, (s, k) in enumerate(zip(lat.syms, lat.indexes)):
                    y_table[i] += yc.table_bits(s, k)
            del lat, y, z_sym, x
            bar.update(1)
        reconstruction = None
        if reconstruct:
            image = _synthesise_tiles(model, grid, y_canvas.get("y_hat"), clock, bar)
            reconstruction = images.restore_mode(image, mode)
    bs = _bitstream(
        h, w, mode, model, symbols.value(), index_digest.value(), tiling=tiles, tiles=tuple(coded)
    )
    data = container.pack(bs)
    bits = _bits(bs, data, agreement)
    bits["tiles"] = grid.num_tiles
    if estimate_bits:
        bits.update(z_table=z_table, y_table=y_table, table=z_table + sum(y_table))
    clock.seconds["total"] = time.perf_counter() - t_start
    return CompressionResult(
        data=data,
        reconstruction=reconstruction,
        z_symbols=z_canvas.get("z_symbols"),
        y_symbols=y_canvas.get("y_symbols"),
        z_hat=z_canvas.get("z_hat"),
        y_tilde=y_canvas.get("y_tilde"),
        y_hat=y_canvas.get("y_hat"),  # held for the synthesis anyway
        scale_indexes=y_canvas.get("scale_indexes"),
        bits=bits,
        seconds=clock.seconds,
        tiling=grid.describe(),
    )


def compress(image: Any, model: LoadedModel, *, tile: int | None = None, **kwargs) -> bytes:
    """``image`` (uint8 [H, W, 3] / [H, W] array or PIL image) -> ``.mrac`` bytes (untiled,
    version 3; tiled, version 4, with ``tile=T``; ``kwargs`` as ``compress_with_info``). Runs no
    synthesis unless asked (``reconstruct=True``): the bytes do not depend on it."""
    kwargs = {"reconstruct": False, **kwargs}
    if tile is not None:
        kwargs = {"keep_latents": False, **kwargs}
    return compress_with_info(image, model, estimate_bits=False, tile=tile, **kwargs).data


def check_identity(bs: Bitstream, model: LoadedModel) -> None:
    """Raises ``ModelMismatchError`` unless ``bs`` was written by ``model`` (``zoo.identity_error``,
    the check the CLI runs on a model file's header too)."""
    message = zoo.identity_error(bs, model.name, model.identity, "the loaded model")
    if message is not None:
        raise ModelMismatchError(message)


def decompress_with_info(
    data: bytes | Bitstream,
    model: LoadedModel,
    *,
    check_model: bool = True,
    keep_latents: bool = True,
    progress: bool = False,
) -> DecompressionResult:
    """Decodes ``data`` (version 3 or 4); raises ``ContainerError``, ``ModelMismatchError`` or
    ``LatentMismatchError`` (all one-line) on failure.

    ``check_model=False`` skips the identity check (for testing the latent guard only).
    Tiled files: ``keep_latents=False`` drops the whole-image latent arrays, ``progress`` shows
    a bar over the tiles.
    """
    t_start = time.perf_counter()
    bs = data if isinstance(data, Bitstream) else container.unpack(data)
    if check_model:
        check_identity(bs, model)
    if bs.num_slices != model.num_slices:
        raise ModelMismatchError(
            f"the file has {bs.num_slices} y slices, the model codes {model.num_slices}"
        )
    clock = _Clock()
    zc = clock.setup(model.z_coder)
    yc = clock.setup(model.y_coder)
    if bs.tiling is not None:
        return _decompress_tiled(bs, model, clock, zc, yc, t_start, keep_latents, progress)
    ph = -(-bs.height // DOWNSAMPLING) * DOWNSAMPLING
    pw = -(-bs.width // DOWNSAMPLING) * DOWNSAMPLING
    z_shape = (ph // DOWNSAMPLING, pw // DOWNSAMPLING)
    lat = _decode_latents(model, bs.z_string, bs.y_strings, z_shape, zc, yc, clock)
    symbol_digest, index_digest = _digests(lat.z_int, lat.syms, lat.indexes)
    _check_digests(bs, symbol_digest, index_digest)
    x_hat = np.asarray(clock.network(model.synthesis, lat.y_hat))
    image = images.restore_mode(_crop(x_hat, bs.height, bs.width), bs.colour_mode)
    clock.seconds["total"] = time.perf_counter() - t_start
    return DecompressionResult(
        image=np.ascontiguousarray(image),
        bitstream=bs,
        **_latent_arrays(lat),
        seconds=clock.seconds,
    )


def _check_digests(bs: Bitstream, symbol_digest: bytes, index_digest: bytes) -> None:
    if index_digest != bs.index_digest:
        raise LatentMismatchError(
            "the decoder's scale indexes differ from the encoder's (digest mismatch): its entropy "
            "parameters differ by more than the format's tolerance, or the file is damaged"
        )
    if symbol_digest != bs.symbol_digest:
        raise LatentMismatchError(
            "decoded latent symbols differ from the encoder's (digest mismatch): the file does "
            "not match this model's coding tables"
        )


def _decompress_tiled(bs, model, clock, zc, yc, t_start, keep_latents, progress):
    grid = bs.grid()
    th, tw = grid.tile_shape
    z_shape = (th // DOWNSAMPLING, tw // DOWNSAMPLING)
    symbols, index_digest = container.Digest(), container.Digest()
    y_canvas = _Canvas(grid, tiling.LATENT_STRIDE)
    z_canvas = _Canvas(grid, DOWNSAMPLING)
    with _progress(2 * grid.num_tiles, "mracnn decompress", progress) as bar:
        for (r, c), code in zip(grid.tiles(), bs.tiles):
            where = f" of tile ({r}, {c})"
            lat = _decode_latents(
                model, code.z_string, code.y_strings, z_shape, zc, yc, clock, where
            )
            lat.digest_into(symbols, index_digest)
            lat.place(r, c, y_canvas, z_canvas, keep_latents)
            del lat
            bar.update(1)
        # Every tile's latent is checked before any pixel is synthesised.
        _check_digests(bs, symbols.value(), index_digest.value())
        image = _synthesise_tiles(model, grid, y_canvas.get("y_hat"), clock, bar)
    image = images.restore_mode(image, bs.colour_mode)
    clock.seconds["total"] = time.perf_counter() - t_start
    return DecompressionResult(
        image=np.ascontiguousarray(image),
        bitstream=bs,
        z_symbols=z_canvas.get("z_symbols"),
        y_symbols=y_canvas.get("y_symbols"),
        z_hat=z_canvas.get("z_hat"),
        y_tilde=y_canvas.get("y_tilde"),
        y_hat=y_canvas.get("y_hat"),  # held for the synthesis anyway
        seconds=clock.seconds,
    )


def decompress(data: bytes, model: LoadedModel, *, progress: bool = False) -> np.ndarray:
    """``.mrac`` bytes (version 3 or 4) -> uint8 image ``[H, W, 3]`` (RGB) or ``[H, W]``."""
    return decompress_with_info(data, model, keep_latents=False, progress=progress).image

"""A codec model: its config, parameters, identity, jitted network pieces and range coders.

    model = LoadedModel.load("model.mracnn")      or    LoadedModel.from_config(config, seed=0)

Network pieces (``NetworkPieces``, one set per architecture, the parameters an argument), with
``M`` latent channels, ``Z`` hyper-latent channels and ``m`` the per-channel z medians:

    analysis           x [1, H, W, C] in [0, 1]      -> y [1, H/16, W/16, M]          (g_a)
    hyper_analysis     y, m                         -> round(h_a(y) - m) [1, H/64, W/64, Z]
    hyper_synthesis    z^ = s_z + m                 -> (means, scales), each [1, H/16, W/16, M]
    slice_i            means, scales, y^_0..y^_{i-1} -> (mu_i, f_i = scale_to_index(sigma_i), support)
    refine_i           support, mu_i, s_i            -> (y~_i = s_i + mu_i, y^_i = LRP(y~_i))
    synthesis          y^ [1, h, w, M], peak P      -> [1, 16h, 16w, C] (clip, x P, round)

(C: the model's channels, 3, or 1 for a grayscale model; P: 255, or 2^bits - 1 for deeper samples,
whose integers come out as uint16.) Each piece is one ``jax.jit`` function, compiled once per input shape and shared by every model of
the same config (``pieces_for``), so a second quality of one architecture compiles nothing new;
``enable_compilation_cache`` adds JAX's persistent cache across processes.

Identity: ``params_digest`` is the hex SHA-256 of the parameters (``model_file``); a bitstream
records its first 16 bytes (``identity``) and the model name, and is decoded only by that model.
The z coder's tables and offsets come from the model file (``coding.tables``), or are computed
from the parameters for a model built in memory; the y coder's Gaussian tables are a package asset.
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from mracnn_jax import model_file
from mracnn_jax.coding import coders, container, tables
from mracnn_jax.compilation_cache import enable_compilation_cache  # noqa: F401 - codec's name
from mracnn_jax.entropy.gaussian import scale_to_index
from mracnn_jax.models.presets import with_defaults
from mracnn_jax.models.registry import build_model, init_params


def model_config(config) -> ml_collections.ConfigDict:
    """The model block of ``config`` (a model config, an experiment config or a dict)."""
    if isinstance(config, dict):
        config = ml_collections.ConfigDict(config)
    if "model" in config and "N" not in config:  # an experiment config: use its model block
        config = config.model
    return config


class NetworkPieces:
    """The jitted network pieces of one architecture (module docstring); parameters are an
    argument, so every ``LoadedModel`` of the same config shares them (``pieces_for``)."""

    def __init__(self, config):
        self.config = config
        self.module = module = build_model(config, compute_dtype="float32")  # codes in float32
        self.num_slices = int(config.entropy.num_slices)
        max_support = int(config.entropy.max_support)
        self.num_support = [
            i if max_support < 0 else min(i, max_support) for i in range(self.num_slices)
        ]

        def apply(p, method, *args):
            return module.apply({"params": p}, *args, method=method)

        def analysis(p, x):
            return apply(p, lambda m, x: m.analysis(x), x)

        def hyper_analysis(p, y, off):
            return jnp.round(apply(p, lambda m, y: m.hyper_analysis(y), y) - off)

        def hyper_synthesis(p, z_hat):
            return apply(p, lambda m, z: m.hyper_synthesis(z), z_hat)

        def slice_fn(i):
            def f(p, means, scales, *support):
                mu, sigma, mean_support = apply(
                    p, lambda m, a, b, d: m.slice_parameters(i, a, b, d), means, scales,
                    list(support),
                )  # fmt: skip
                return mu, scale_to_index(sigma), mean_support

            return f

        def refine_fn(i):
            def f(p, mean_support, mu, s):
                y_tilde = s + mu
                y_hat = apply(p, lambda m, a, b: m.refine_slice(i, a, b), mean_support, y_tilde)
                return y_tilde, y_hat

            return f

        def synthesis(p, y_hat, peak):
            x = apply(p, lambda m, y: m.synthesis(y), y_hat)
            dtype = jnp.uint8 if peak <= 255 else jnp.uint16
            return jnp.round(jnp.clip(x, 0.0, 1.0) * float(peak)).astype(dtype)

        self.analysis = jax.jit(analysis)
        self.hyper_analysis = jax.jit(hyper_analysis)
        self.hyper_synthesis = jax.jit(hyper_synthesis)
        self.slices = [jax.jit(slice_fn(i)) for i in range(self.num_slices)]
        self.refines = [jax.jit(refine_fn(i)) for i in range(self.num_slices)]
        self.synthesis = jax.jit(synthesis, static_argnums=2)

    def functions(self) -> dict:
        named = {
            "analysis": self.analysis,
            "hyper_analysis": self.hyper_analysis,
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
    """A codec model: config, parameters, identity and its jitted pieces (module docstring)."""

    def __init__(
        self,
        config,
        params,
        metadata: dict | None = None,
        digest: str | None = None,
        coding_tables: dict | None = None,
    ):
        self.config = ml_collections.FrozenConfigDict(with_defaults(model_config(config)))
        self.pieces = pieces_for(self.config)
        self.module = self.pieces.module
        self.name = str(self.config.name)
        host = jax.tree_util.tree_map(np.asarray, params)
        self.params_digest = digest or model_file.params_digest(host)
        self.identity = bytes.fromhex(self.params_digest)[: container.DIGEST_BYTES]
        self.params = jax.device_put(
            host
        )  # (jnp.asarray would compile a copy per shape on jax 0.10)
        self.metadata = dict(metadata or {})
        self.num_slices = self.pieces.num_slices
        self.channels = int(self.config.channels)  # 3, or 1: a grayscale model
        self._coding_tables = coding_tables
        self._z_coder = None

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
        cfg = model_config(config)
        params = init_params(build_model(cfg), jax.random.PRNGKey(seed))  # as training starts
        return cls(cfg, params, {"init_seed": seed})

    def save(self, path: str | os.PathLike, metadata: dict | None = None) -> str:
        """Writes a model file (``model_file.save_model``); returns the parameter digest."""
        meta = {**self.metadata, **(metadata or {})}
        return model_file.save_model(path, self.config.to_dict(), self.params, metadata=meta)

    def compilations(self) -> int:
        """Compiled executables over all pieces of this architecture (grows only on new shapes)."""
        return sum(self.pieces.compilations().values())

    # -- the z prior's integers --------------------------------------------------------------------
    def coding_tables(self) -> dict:
        """The z offsets and tables (``coding.tables.z_coding_tables``): those stored in the
        model file, or computed from the parameters for a model without them."""
        if self._coding_tables is None:
            self._coding_tables = tables.z_coding_tables(self.params["entropy_bottleneck"])
        return self._coding_tables

    @property
    def offsets(self) -> np.ndarray:
        """z quantisation offsets ``[Z]`` (the prior's medians), float32."""
        return self.coding_tables()["z_offsets"]

    # -- jitted pieces, bound to this model's parameters -------------------------------------------
    def analysis(self, x):
        return self.pieces.analysis(self.params, x)

    def hyper_analysis(self, y):
        return self.pieces.hyper_analysis(self.params, y, self.offsets)

    def hyper_synthesis(self, z_hat):
        return self.pieces.hyper_synthesis(self.params, z_hat)

    def slice_parameters(self, i: int, means, scales, decoded):
        """(mu_i, pre-rounding scale index f_i (float32), mean support) for slice ``i``."""
        support = tuple(decoded[: self.pieces.num_support[i]])
        return self.pieces.slices[i](self.params, means, scales, *support)

    def refine(self, i: int, mean_support, mu, symbols):
        return self.pieces.refines[i](self.params, mean_support, mu, symbols)

    def synthesis(self, y_hat, peak: int = 255):
        return self.pieces.synthesis(self.params, y_hat, int(peak))

    # -- range coders ------------------------------------------------------------------------------
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

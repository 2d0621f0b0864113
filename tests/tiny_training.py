"""What the training tests share: ``TinyCodec`` (a stand-in with the model's interface that
compiles in seconds), synthetic image folders and a full experiment config for it.

Imported by the test modules beside it (pytest puts this folder on ``sys.path``).
"""

from __future__ import annotations

from pathlib import Path

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.scipy.stats import norm
from PIL import Image

from mracnn_jax.model_file import load_model
from mracnn_jax.training import defaults


class TinyCodec(nn.Module):
    """Stand-in codec: x [B,H,W,3] → y [B,H/16,W/16,M], z [B,H/64,W/64,Z] → x̂, with likelihoods.

    Training adds U(−½, ½) noise (rng 'noise'); inference rounds. Likelihood of a value v under
    N(0, σ²) integrated over [v − ½, v + ½], lower-bounded at 1e-9.
    """

    M: int = 4
    Z: int = 2

    @property
    def cfg(self) -> ml_collections.ConfigDict:
        """The model config fields ``registry.init_params`` reads (RGB images)."""
        return ml_collections.ConfigDict({"channels": 3})

    def _likelihood(self, v, name):
        log_scale = self.param(name, nn.initializers.zeros, (v.shape[-1],))
        s = jnp.exp(log_scale) + 0.11
        p = norm.cdf((v + 0.5) / s) - norm.cdf((v - 0.5) / s)
        return jnp.maximum(p, 1e-9)

    def _quantize(self, v, train):
        if train:
            return v + jax.random.uniform(self.make_rng("noise"), v.shape, v.dtype, -0.5, 0.5)
        return jnp.round(v)

    @nn.compact
    def __call__(self, x, train: bool = False):
        y = nn.Conv(self.M, (4, 4), strides=(4, 4), name="ga0")(x)
        y = nn.Conv(self.M, (4, 4), strides=(4, 4), name="ga1")(nn.gelu(y))
        z = nn.Conv(self.Z, (4, 4), strides=(4, 4), name="ha")(y)
        y_hat, z_hat = self._quantize(y, train), self._quantize(z, train)
        x_hat = nn.ConvTranspose(self.M, (4, 4), strides=(4, 4), name="gs0")(y_hat)
        x_hat = nn.ConvTranspose(3, (4, 4), strides=(4, 4), name="gs1")(nn.gelu(x_hat))
        return {
            "x_hat": x_hat + 0.5,
            "likelihoods": {
                "y": self._likelihood(y_hat, "y_scale"),
                "z": self._likelihood(z_hat, "z_scale"),
            },
        }


def write_images(
    folder: Path,
    n: int,
    *,
    size=(80, 72),
    seed: int = 0,
    solid: bool = False,
    corrupt: int = 0,
    small: int = 0,
    gray: int = 1,
) -> list[Path]:
    """n synthetic images (PNG and JPEG alternating; ``gray`` of them grayscale), plus ``corrupt``
    undecodable files and ``small`` images smaller than 64x64. ``solid``: image k is one colour
    (3k + 1), so a crop identifies its file."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for k in range(n):
        w, h = size
        if solid:
            arr = np.full((h, w, 3), 3 * k + 1, np.uint8)
        else:
            arr = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
        img = Image.fromarray(arr)
        if k < gray:
            img = img.convert("L")
        ext = ".png" if (k % 2 == 0 or solid) else ".jpg"
        p = folder / f"img_{k:03d}{ext}"
        img.save(p)
        paths.append(p)
    for k in range(corrupt):
        p = folder / f"bad_{k}.png"
        p.write_bytes(b"\x89PNG\r\n\x1a\n" + rng.integers(0, 256, 300, dtype=np.uint8).tobytes())
        paths.append(p)
    for k in range(small):
        p = folder / "sub" / f"small_{k}.png"
        p.parent.mkdir(exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (40, 50, 3), dtype=np.uint8)).save(p)
        paths.append(p)
    return paths


def tiny_config(tmp_path: Path, **train_overrides) -> ml_collections.ConfigDict:
    """A full experiment config for TinyCodec on synthetic images in tmp_path."""
    train_dir, val_dir = tmp_path / "data" / "train", tmp_path / "data" / "val"
    if not train_dir.exists():
        write_images(train_dir, 12, seed=1)
        write_images(val_dir, 3, seed=2, size=(64, 64))
    config = ml_collections.ConfigDict()
    config.model = ml_collections.ConfigDict({"name": "tiny-stand-in", "M": 4})
    config.train = defaults.training_config()
    config.data = defaults.data_config()
    config.train.update(
        {
            "batch_size": 4,
            "crop_size": 64,
            "num_steps": 20,
            "checkpoint_every": 10,
            "keep_checkpoints": 3,
            "log_every": 5,
            "eval_every": 0,
            "num_eval_images": 2,
            "eval_crop_size": 64,
            "eval_batch_size": 2,
            "learning_rate": 1e-3,
            "lr_schedule": "constant",
        }
    )
    config.train.update(train_overrides)
    config.data.train_dirs = [str(train_dir)]
    config.data.val_dir = str(val_dir)
    config.data.num_workers = 0
    config.data.backend = "auto"
    return config


def params_of(workdir: Path) -> dict:
    """The parameters of the model a run exported."""
    return load_model(workdir / "model.mracnn")[1]


def assert_trees_equal(a, b) -> None:
    """Same tree structure and bitwise-equal leaves."""
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for x, y in zip(la, lb):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def unmoved_parameters(params, start) -> list[str]:
    """Paths of the parameters still exactly at ``start`` (host copies taken before training):
    Adam leaves a parameter whose gradient was always zero where it was."""
    moved = jax.tree_util.tree_map(lambda a, b: bool(np.any(np.asarray(a) != b)), params, start)
    return [jax.tree_util.keystr(k) for k, v in jax.tree_util.tree_leaves_with_path(moved) if not v]

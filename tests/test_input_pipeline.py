"""The training input pipeline for grayscale models (``channels=1``): gray crops, gray eval images.

The colour pipeline's tests are in test_training.py.
"""

from __future__ import annotations

from pathlib import Path

import ml_collections
import numpy as np
import pytest
from PIL import Image

from mracnn_jax.training import input_pipeline


def write_photos(folder: Path, n: int, size=(96, 80)) -> list[Path]:
    """n random colour PNGs and one grayscale PNG (the last)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for k in range(n + 1):
        img = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
        if k == n:
            img = img.convert("L")
        paths.append(folder / f"img{k:02d}.png")
        img.save(paths[-1])
    return paths


def _iterator(paths, **kw):
    args = {"batch_size": 3, "crop_size": 64, "seed": 0, "num_workers": 0, "backend": "python"}
    return input_pipeline.TrainIterator([str(p) for p in paths], **{**args, **kw})


def test_gray_batches_are_the_luma_of_the_colour_crops(tmp_path):
    paths = write_photos(tmp_path, 5)
    colour, gray = _iterator(paths), _iterator(paths, channels=1)
    for _ in range(3):
        c, g = next(colour), next(gray)
        assert c.shape == (3, 64, 64, 3) and g.shape == (3, 64, 64, 1) and g.dtype == np.uint8
        # the same crops (same positions, same draws), as Pillow's convert('L') makes them gray
        luma = [np.asarray(Image.fromarray(x).convert("L")) for x in c]
        np.testing.assert_array_equal(g[..., 0], np.stack(luma))
    colour.close()
    gray.close()


def test_gray_photos_stay_as_they_are(tmp_path):
    paths = write_photos(tmp_path, 0, size=(64, 64))  # one gray 64x64 image: the crop is all of it
    (g,) = next(_iterator(paths, batch_size=1, channels=1, flip_lr=False))
    np.testing.assert_array_equal(g[..., 0], np.asarray(Image.open(paths[0])))


def test_gray_eval_images_and_config(tmp_path):
    paths = write_photos(tmp_path, 2)
    imgs, used = input_pipeline.load_eval_images(tmp_path, 64, 3, channels=1)
    colour, _ = input_pipeline.load_eval_images(tmp_path, 64, 3)
    assert imgs.shape == (3, 64, 64, 1) and len(used) == 3
    luma = [np.asarray(Image.fromarray(x).convert("L")) for x in colour]
    np.testing.assert_array_equal(imgs[..., 0], np.stack(luma))
    cfg = ml_collections.ConfigDict(
        {"train_dirs": [str(tmp_path)], "backend": "python", "num_workers": 0}
    )
    it = input_pipeline.make_train_iterator(cfg, crop_size=64, batch_size=2, seed=0, channels=1)
    assert next(it).shape == (2, 64, 64, 1)
    it.close()
    with pytest.raises(ValueError, match="channels must be one of"):
        input_pipeline.load_eval_images(tmp_path, 64, 1, channels=2)
    assert len(paths) == 3

"""scripts/transform_ceiling.py: the transforms' own PSNR (no quantisation) and with plain
rounding, checked against the model's analysis and synthesis applied by hand in NumPy terms
(padding, clipping, 8-bit rounding and the per-image mean done independently)."""

from __future__ import annotations

import pathlib

import numpy as np
import pytest
from load_script import load_script  # a sibling helper module
from PIL import Image

from mracnn_jax import model_file
from mracnn_jax.models.registry import build_model

REPO = pathlib.Path(__file__).resolve().parents[1]
transform_ceiling = load_script(REPO / "scripts" / "transform_ceiling.py")


def _by_hand(model_path, images: list[np.ndarray]) -> tuple[float, float]:
    config, params, _ = model_file.load_model(model_path)
    module = build_model(config, compute_dtype="float32")
    out = {"ceiling": [], "rounded": []}
    for rgb in images:
        h, w = rgb.shape[:2]
        ph, pw = -(-h // 64) * 64, -(-w // 64) * 64
        top, left = (ph - h) // 2, (pw - w) // 2
        x = np.zeros((1, ph, pw, 3), np.float32)
        x[0, top : top + h, left : left + w] = rgb / 255.0
        y = np.asarray(module.apply({"params": params}, x, method=lambda m, v: m.analysis(v)))
        for key, latents in (("ceiling", y), ("rounded", np.round(y))):
            x_hat = module.apply({"params": params}, latents, method=lambda m, v: m.synthesis(v))
            x_hat = np.asarray(x_hat)[0, top : top + h, left : left + w]
            x_hat = np.round(np.clip(x_hat, 0.0, 1.0) * 255.0)
            mse = np.mean((x_hat - rgb.astype(np.float64)) ** 2)
            out[key].append(10 * np.log10(255.0**2 / mse))
    return float(np.mean(out["ceiling"])), float(np.mean(out["rounded"]))


def test_ceiling_and_rounding_match_a_computation_by_hand(copy_of_small_model, tmp_path, capsys):
    rng = np.random.default_rng(0)
    images = [rng.integers(0, 256, (40, 72, 3), dtype=np.uint8) for _ in range(2)]
    images[1] = np.repeat(np.linspace(0, 255, 72, dtype=np.uint8)[None, :, None], 40, 0)
    images[1] = np.repeat(images[1], 3, 2)
    for i, im in enumerate(images):
        Image.fromarray(im).save(tmp_path / f"im{i}.png")
    assert transform_ceiling.main([str(copy_of_small_model), "--data", str(tmp_path)]) == 0
    row = capsys.readouterr().out.strip().splitlines()[-1]
    ceiling, rounded = (float(c.split()[0]) for c in row.split("|")[3:5])
    want_ceiling, want_rounded = _by_hand(copy_of_small_model, images)
    assert ceiling == pytest.approx(want_ceiling, abs=0.006)
    assert rounded == pytest.approx(want_rounded, abs=0.006)


def test_refuses_a_folder_without_rgb_images(copy_of_small_model, tmp_path):
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(tmp_path / "gray.png")
    with pytest.raises(SystemExit, match="not all are RGB"):
        transform_ceiling.main([str(copy_of_small_model), "--data", str(tmp_path)])

"""The demo's matched-rate table (mracnn_jax/demo.py): each codec at the quality whose file is
closest in size to the model's, and only the codecs this Pillow can write."""

from __future__ import annotations

import numpy as np

from mracnn_jax import demo, metrics
from mracnn_jax.evaluation import anchors


def _image() -> np.ndarray:
    yy, xx = np.mgrid[0:64, 0:96]
    noise = np.random.default_rng(0).integers(0, 40, xx.shape)
    return np.stack([xx * 2, yy * 3, 100 + noise], -1).astype(np.uint8)


def test_a_codec_pillow_cannot_write_is_left_out(monkeypatch):
    monkeypatch.setattr(anchors, "codec_available", lambda name: name != "webp")
    assert demo.matched_codecs() == ("jpeg",)
    record = {"image": "a", "point": "q1", "bpp": 1.0, "psnr": 30.0, "ms_ssim": 0.9,
              "num_bytes": 700}  # fmt: skip
    rows = demo.matched_rate_rows([record], {"a": _image()}, demo.matched_codecs())
    assert set(rows[0]) == {"image", "point", "bpp", "psnr", "ms_ssim", "jpeg"}
    table = demo.matched_rate_table(rows, ("jpeg",))
    assert "WEBP" not in table and "JPEG q" in table
    assert len(table.splitlines()[0].split("|")) == len(table.splitlines()[-1].split("|"))


def test_the_matched_quality_is_the_closest_file_size():
    image = _image()
    h, w = image.shape[:2]
    record = {"image": "a", "point": "q1", "bpp": 1.0, "psnr": 30.0, "ms_ssim": 0.9,
              "num_bytes": 900}  # fmt: skip
    (row,) = demo.matched_rate_rows([record], {"a": image}, ("jpeg",))
    q = row["jpeg"]["quality"]
    size = {k: len(anchors.encode_decode(image, "jpeg", k).data) for k in range(1, 101)}
    assert abs(size[q] - 900) == min(abs(n - 900) for n in size.values())
    assert row["jpeg"]["bpp"] == metrics.bpp_from_file_size(size[q], h, w)

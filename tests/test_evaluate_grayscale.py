"""Evaluation on grayscale images (evaluation/inputs.py, measure.py, anchors.py, metrics.with_channel_axis):
anchors code gray as gray, scores are on the one channel, models code real files, and the
published colour-Kodak points stay out."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from mracnn_jax import codec, metrics, zoo
from mracnn_jax.evaluation import anchors, measure, runner
from mracnn_jax.models.grayscale import grayscale_from_colour


def _gray_photo(h, w, seed):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = 30 + 150 * xx / w + 50 * yy / h + 20 * np.sin(xx / 7.0) * np.cos(yy / 11.0)
    return np.clip(base + rng.normal(0, 6, (h, w)), 0, 255).astype(np.uint8)


def _naive_psnr(a, b):
    err = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return 10 * np.log10(255.0**2 / err)


@pytest.fixture(scope="module")
def gray_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("gray")
    Image.fromarray(_gray_photo(168, 176, 1)).save(d / "a.png")  # mode L
    Image.fromarray(_gray_photo(176, 168, 2)).save(d / "b.png")
    return d


@pytest.fixture(scope="module")
def models(tmp_path_factory, small_model_export, make_latents_informative):
    """A colour and a grayscale model (the colour one converted) with informative latents."""
    d = tmp_path_factory.mktemp("models")
    colour = codec.LoadedModel.load(small_model_export)
    params = make_latents_informative(colour.params)
    codec.LoadedModel(colour.config, params, {"quality": 2}).save(d / "colour.mracnn")
    gray_config, gray_params = grayscale_from_colour(colour.config, params, "mean")
    gray_config["name"] = "small-gray"
    codec.LoadedModel(gray_config, gray_params, {"quality": 2}).save(d / "gray.mracnn")
    return d / "colour.mracnn", d / "gray.mracnn"


@pytest.mark.parametrize("codec_name", ["jpeg", "webp", "jpeg2000", "avif"])
def test_anchors_code_gray_as_gray(codec_name):
    if not anchors.codec_available(codec_name):
        pytest.skip(f"this Pillow cannot write {codec_name}")
    gray = _gray_photo(96, 128, 3)
    quality = 0.5 if codec_name == "jpeg2000" else 50
    coded = anchors.encode_decode(gray, codec_name, quality)
    assert coded.decoded.shape == gray.shape and coded.decoded.dtype == np.uint8
    opened = Image.open(io.BytesIO(coded.data))
    if codec_name != "webp":  # WebP has no grayscale mode
        assert opened.mode == "L", f"{codec_name} wrote {opened.mode}"
    if codec_name in ("jpeg", "avif"):  # one component costs less than three equal ones
        rgb = anchors.encode_decode(np.repeat(gray[:, :, None], 3, 2), codec_name, quality)
        assert len(coded.data) < len(rgb.data)
    if codec_name == "jpeg2000":  # the target rate counts one 8-bit channel, not three
        bpp = 8 * len(coded.data) / gray.size
        assert abs(bpp - 0.5) < 0.05, bpp


def test_gray_scores_are_on_the_one_channel():
    gray = _gray_photo(176, 176, 4)
    noise = np.random.default_rng(0).integers(-9, 10, gray.shape)
    noisy = np.clip(gray.astype(int) + noise, 0, 255).astype(np.uint8)
    m = metrics.image_metrics(gray, noisy)
    assert m["psnr"] == pytest.approx(_naive_psnr(gray, noisy), abs=1e-4)
    # Three equal channels have the same MSE, so the same PSNR and MS-SSIM.
    rgb = metrics.image_metrics(*(np.repeat(a[..., None], 3, 2) for a in (gray, noisy)))
    assert m["psnr"] == pytest.approx(rgb["psnr"], abs=1e-4)
    assert m["ms_ssim"] == pytest.approx(rgb["ms_ssim"], abs=1e-6)
    other = np.clip(gray.astype(int) + 2 * noise, 0, 255).astype(np.uint8)
    stacked = metrics.image_metrics(gray, np.stack([noisy, other]))
    assert stacked["psnr"][0] == pytest.approx(m["psnr"], abs=1e-4)
    assert stacked["psnr"][1] == pytest.approx(_naive_psnr(gray, other), abs=1e-4)


def test_gray_evaluation_with_gray_and_colour_models(gray_dir, models, tmp_path):
    colour, gray = models
    result = runner.run_evaluation(
        [colour, gray], gray_dir, tmp_path, anchor_codecs=["jpeg"], show_progress=False, echo=None
    )
    assert "(2 images, grayscale, 168x176, 176x168)" in result.curves[0]["description"]
    by_name = {c["name"]: c for c in result.curves}
    assert set(by_name) == {"mracnn-small", "small-gray", "jpeg"}
    assert "grayscale coded as one component" in by_name["jpeg"]["description"]
    for path in (tmp_path / "bitstreams").rglob("*.mrac"):
        model = codec.LoadedModel.load(gray if "small-gray" in path.parts else colour)
        decoded = codec.decompress(path.read_bytes(), model)
        original = np.asarray(Image.open(gray_dir / f"{path.stem}.png"))
        assert decoded.shape == original.shape  # [H, W]: the decoder gives grayscale back
        rows = [r for r in _csv(tmp_path, path) if r["image"] == f"{path.stem}.png"]
        assert len(rows) == 1
        assert float(rows[0]["psnr"]) == pytest.approx(_naive_psnr(original, decoded), abs=1e-3)
        assert float(rows[0]["num_bytes"]) == path.stat().st_size
    # A colour model codes (g, g, g) and returns its luma; the converted gray model codes g once
    # and returns the mean of the three outputs: the same rate, nearly the same PSNR.
    assert by_name["mracnn-small"]["results"]["bpp"][0] == pytest.approx(
        by_name["small-gray"]["results"]["bpp"][0], rel=0.02
    )


def _csv(out, bitstream):
    import csv

    curve = "small-gray" if "small-gray" in bitstream.parts else "mracnn-small"
    with open(out / f"{curve}.csv") as f:
        return list(csv.DictReader(f))


def test_gray_model_refuses_colour_images_in_one_line(models, tmp_path):
    Image.fromarray(np.zeros((32, 32, 3), np.uint8) + 90).save(tmp_path / "colour.png")
    with pytest.raises(runner.EvaluationError, match=r"gray.mracnn is a grayscale model") as e:
        runner.run_evaluation([models[1]], tmp_path, tmp_path / "out", echo=None)
    assert "\n" not in str(e.value)


def test_published_colour_kodak_points_stay_out_for_gray_kodak(tmp_path, monkeypatch):
    monkeypatch.setattr(zoo, "BUNDLED_DIR", tmp_path / "no_models")
    data = tmp_path / "gray_kodak"
    data.mkdir()
    for i in range(1, 25):  # Kodak's names and sizes, gray
        h, w = (768, 512) if i in (4, 9, 10) else (512, 768)
        Image.fromarray(_gray_photo(h, w, i)).save(data / f"kodim{i:02d}.png", compress_level=1)

    def cheap_score(original, decoded):
        p = _naive_psnr(original, decoded)
        return {"psnr": p, "ms_ssim": 1 - 10 ** (-p / 20), "ms_ssim_db": p / 2}

    monkeypatch.setattr(anchors, "DEFAULT_QUALITIES", {**anchors.DEFAULT_QUALITIES, "jpeg": (20,)})

    def score(original, decoded):  # one quality: a stack of one
        return {k: np.array([v]) for k, v in cheap_score(original, decoded[0]).items()}

    monkeypatch.setattr(measure, "score", score)
    result = runner.run_evaluation(
        [], data, tmp_path / "out", anchor_codecs=["jpeg"], echo=None, show_progress=False
    )
    assert not [r for r in result.references if r["name"] == "WACNN"]
    assert any("grayscale; the published points are for colour Kodak" in n for n in result.notes)
    assert "(24 images, grayscale, 512x768, 768x512)" in result.curves[0]["dataset"]

"""Tests of mracnn_jax.images: the one reader and lister the codec, training and evaluation use."""

from __future__ import annotations

import math
import warnings
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from mracnn_jax import images
from mracnn_jax.evaluation import anchors, inputs, runner
from mracnn_jax.training import crops, data_order

# --------------------------------------------------------------------------- 16 bits


def test_16_bit_rule_on_every_value(tmp_path):
    v = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    # Independent: round-half-up of v / 257 in exact rational arithmetic.
    exact = [Fraction(int(x), 257) for x in range(65536)]
    assert all(q - math.floor(q) != Fraction(1, 2) for q in exact)  # no value is a tie
    want = np.array([math.floor(q + Fraction(1, 2)) for q in exact]).reshape(256, 256)
    # ... which is also NumPy's round-half-even (the training pipeline's former rule).
    np.testing.assert_array_equal(want, np.round(v / 257.0))
    Image.fromarray(v).save(tmp_path / "g16.png")
    sources = {
        "file": tmp_path / "g16.png",
        "I;16": Image.fromarray(v),
        "I": Image.fromarray(v.astype(np.int32), "I"),
    }
    for name, source in sources.items():
        with pytest.warns(UserWarning, match="16-bit"):
            rgb, mode = images.read_image(source)
        assert mode == "L" and rgb.dtype == np.uint8 and rgb.shape == (256, 256, 3), name
        for c in range(3):
            np.testing.assert_array_equal(rgb[:, :, c], want, err_msg=name)
    with pytest.warns(UserWarning, match="16-bit"):
        np.testing.assert_array_equal(crops.decode_rgb(str(tmp_path / "g16.png")), rgb)
    with pytest.raises(images.ImageError, match="outside 0..65535"):
        images.read_image(Image.fromarray(np.full((2, 2), 70000, np.int32), "I"))


def test_8bit_values_in_a_32bit_image_are_named(tmp_path):
    """A 32-bit integer TIFF holding 8-bit values reads as a nearly black 16-bit image: a warning
    says so, and how to fix the file; a 16-bit image's full range gives no such warning."""
    eight = np.arange(256, dtype=np.int32).reshape(16, 16)
    Image.fromarray(eight, "I").save(tmp_path / "i32.tif")
    with pytest.warns(UserWarning, match="values all lie in 0..255.*save it as an 8-bit image"):
        rgb, mode = images.read_image(tmp_path / "i32.tif", high_depth=True)
    assert mode == "L" and rgb.dtype == np.uint16
    np.testing.assert_array_equal(rgb[:, :, 0], eight)  # the values as stored, not rescaled
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        images.read_image(Image.fromarray(eight * 257, "I"), high_depth=True)


# --------------------------------------------------------------------------- alpha


def _alpha_files(folder):
    folder.mkdir()
    Image.new("RGBA", (8, 8), (1, 2, 3, 255)).save(folder / "rgba.png")
    Image.new("LA", (8, 8), (7, 255)).save(folder / "la.png")
    p = Image.new("P", (8, 8), 0)
    p.info["transparency"] = 0
    p.save(folder / "p.png", transparency=0)
    Image.new("RGB", (8, 8), (1, 2, 3)).save(folder / "rgb_key.png", transparency=(0, 0, 0))
    Image.new("L", (8, 8), 9).save(folder / "l_key.png", transparency=5)
    return sorted(folder.iterdir())


def _one_line_alpha(e: pytest.ExceptionInfo) -> None:
    message = str(e.value)
    assert "alpha" in message and "flatten it onto a background first" in message
    assert "\n" not in message


def test_alpha_refused_by_reader_codec_training_and_evaluation(tmp_path):
    from mracnn_jax import codec

    paths = _alpha_files(tmp_path / "alpha")
    arrays = [np.zeros((4, 4, 4), np.uint8), np.zeros((4, 4, 2), np.uint8)]
    for source in [*paths, *arrays]:
        with pytest.raises(images.ImageError) as e:
            images.read_image(source)
        _one_line_alpha(e)
    for path in paths:
        with pytest.raises(images.ImageError) as e:  # evaluation, where it used to drop alpha
            anchors.load_rgb(path)
        _one_line_alpha(e)
        with pytest.raises(images.ImageError):  # training: skipped like an undecodable file
            crops.decode_rgb(str(path))
        # The codec refuses before it looks at the model.
        with Image.open(path) as im, pytest.raises(codec.ImageError) as e:
            codec.compress(im, None)
        _one_line_alpha(e)
        assert isinstance(e.value, codec.CodecError) and isinstance(e.value, images.ImageError)
    with pytest.raises(runner.EvaluationError, match="alpha.*flatten"):
        runner.load_images(tmp_path / "alpha")


# --------------------------------------------------------------------------- listing


def test_one_suffix_list(tmp_path):
    rgb = np.zeros((4, 4, 3), np.uint8)
    Image.fromarray(rgb).save(tmp_path / "a.PNG", format="PNG")
    Image.fromarray(rgb).save(tmp_path / "b.jpg")
    Image.fromarray(rgb).save(tmp_path / "c.tif")
    Image.fromarray(rgb).save(tmp_path / ".hidden.png")
    (tmp_path / "notes.txt").write_text("not an image\n")
    (tmp_path / "sub").mkdir()
    Image.fromarray(rgb).save(tmp_path / "sub" / "d.png")
    (tmp_path / ".ipynb_checkpoints").mkdir()  # a hidden folder: copies, never read
    Image.fromarray(rgb).save(tmp_path / ".ipynb_checkpoints" / "a-checkpoint.png")
    (tmp_path / "folder.png").mkdir()  # a folder, not an image

    flat = ["a.PNG", "b.jpg", "c.tif"]
    deep = ["a.PNG", "b.jpg", "c.tif", "sub/d.png"]

    def rel(paths):
        return [Path(p).relative_to(tmp_path).as_posix() for p in paths]

    assert rel(images.list_images(tmp_path)) == flat
    assert rel(images.list_images(tmp_path, recursive=True)) == deep
    # Training lists recursively, evaluation one folder: the same suffixes and order.
    assert rel(data_order.list_images(tmp_path)) == deep
    assert rel(runner.image_files(tmp_path)) == flat
    names, arrays = anchors.load_image_dir(tmp_path)
    assert names == flat and all(a.shape == (4, 4, 3) for a in arrays)
    assert inputs.IMAGE_SUFFIXES is images.SUFFIXES
    assert all(s == s.lower() and s.startswith(".") for s in images.SUFFIXES)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        images.list_images(tmp_path / "nope")


# --------------------------------------------------------------------------- grayscale


def test_grayscale_round_trip(tmp_path):
    gray = np.random.default_rng(0).integers(0, 256, (5, 7), dtype=np.uint8)
    Image.fromarray(gray, "L").save(tmp_path / "g.png")
    sources = [tmp_path / "g.png", Image.fromarray(gray, "L"), gray, gray[:, :, None]]
    for source in sources:
        rgb, mode = images.read_image(source)
        assert mode == "L" and rgb.shape == (5, 7, 3) and rgb.flags.c_contiguous
        assert (rgb == gray[:, :, None]).all()
        back = images.restore_mode(rgb, mode)
        assert back.shape == (5, 7) and back.dtype == np.uint8
        np.testing.assert_array_equal(back, gray)
    # Bilevel images are grayscale too; RGB stays RGB.
    rgb, mode = images.read_image(Image.fromarray(gray > 127))
    assert mode == "L" and set(np.unique(rgb)) <= {0, 255}
    colour = np.random.default_rng(1).integers(0, 256, (5, 7, 3), dtype=np.uint8)
    rgb, mode = images.read_image(colour)
    assert mode == "RGB" and images.restore_mode(rgb, mode) is rgb
    np.testing.assert_array_equal(rgb, colour)


def test_refusals_are_one_line(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.png").write_text("not an image\n")
    Image.fromarray(np.ones((3, 3), np.float32), "F").save(tmp_path / "float.tif")
    cases = [
        (tmp_path / "empty.png", "empty"),
        (tmp_path / "text.png", "not an image Pillow can read"),
        (tmp_path / "float.tif", "unsupported image mode 'F'"),
        (tmp_path, "is a directory"),
        (np.zeros((4, 4, 3), np.float32), "must be uint8"),
        (np.zeros((0, 4, 3), np.uint8), "no pixels"),
        (object(), "expected a uint8 NumPy array or a PIL image"),
    ]
    for source, message in cases:
        with pytest.raises(images.ImageError, match=message) as e:
            images.read_image(source)
        assert "\n" not in str(e.value)
    with pytest.raises(FileNotFoundError, match="no such file"):
        images.read_image(tmp_path / "missing.png")


def test_exif_orientation_gives_the_image_as_viewers_show_it(tmp_path):
    """Orientation 6 (stored lying on its side, shown turned 90° clockwise) and 3 (upside down):
    the pixels come back turned, exactly (a PNG carrying EXIF); 1 and no EXIF are as stored."""
    rng = np.random.default_rng(0)
    stored = rng.integers(0, 256, (20, 40, 3), dtype=np.uint8)
    turned = {1: stored, 3: np.rot90(stored, 2), 6: np.rot90(stored, -1)}
    for orientation, expected in turned.items():
        exif = Image.Exif()
        exif[0x0112] = orientation
        path = tmp_path / f"o{orientation}.png"
        Image.fromarray(stored).save(path, exif=exif)
        rgb, mode = images.read_image(path)
        assert mode == "RGB" and np.array_equal(rgb, expected), orientation
    Image.fromarray(stored).save(tmp_path / "plain.png")
    assert np.array_equal(images.read_image(tmp_path / "plain.png")[0], stored)


def test_a_profile_other_than_srgb_is_warned_about(tmp_path):
    from PIL import ImageCms

    rgb = np.full((4, 4, 3), 90, np.uint8)
    profiles = {"srgb": ImageCms.createProfile("sRGB"), "xyz": ImageCms.createProfile("XYZ")}
    for name, profile in profiles.items():
        icc = ImageCms.ImageCmsProfile(profile).tobytes()
        Image.fromarray(rgb).save(tmp_path / f"{name}.png", icc_profile=icc)
    Image.fromarray(rgb).save(tmp_path / "none.png")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for name in ("srgb", "none"):
            assert np.array_equal(images.read_image(tmp_path / f"{name}.png")[0], rgb)
    with pytest.warns(UserWarning, match="colour profile 'XYZ identity built-in' not applied"):
        assert np.array_equal(images.read_image(tmp_path / "xyz.png")[0], rgb)

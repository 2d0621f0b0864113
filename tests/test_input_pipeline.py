"""The training input pipeline: batches of crops (shapes, seeds, flips, bad and small files,
sharding over processes, exact resume, grain and plain-Python backends agreeing), validation
images, and the grayscale pipeline of ``channels=1`` models (gray crops, gray eval images).
"""

from __future__ import annotations

import hashlib
import json
import logging

import ml_collections
import numpy as np
import pytest
from other_stack import needs_other_stack, run_in_other_stack  # sibling helper modules
from PIL import Image
from tiny_training import write_images

from mracnn_jax.training import crops, data_order, input_pipeline


def _iterator(paths, **kw):
    """A training iterator over ``paths``: batches of 4 crops of 64², seed 0, in this process."""
    args = {"batch_size": 4, "crop_size": 64, "seed": 0, "num_workers": 0, "backend": "auto"}
    return input_pipeline.TrainIterator([str(p) for p in paths], **{**args, **kw})


def test_gray_batches_are_the_luma_of_the_colour_crops(tmp_path):
    paths = write_images(tmp_path, 6)  # five colour, the first gray
    colour, gray = _iterator(paths, batch_size=3), _iterator(paths, batch_size=3, channels=1)
    for _ in range(3):
        c, g = next(colour), next(gray)
        assert c.shape == (3, 64, 64, 3) and g.shape == (3, 64, 64, 1) and g.dtype == np.uint8
        # the same crops (same positions, same draws), as Pillow's convert('L') makes them gray
        luma = [np.asarray(Image.fromarray(x).convert("L")) for x in c]
        np.testing.assert_array_equal(g[..., 0], np.stack(luma))
    colour.close()
    gray.close()


def test_gray_photos_stay_as_they_are(tmp_path):
    paths = write_images(tmp_path, 1, size=(64, 64))  # one gray 64x64 PNG: the crop is all of it
    (g,) = next(_iterator(paths, batch_size=1, channels=1, flip_lr=False))
    np.testing.assert_array_equal(g[..., 0], np.asarray(Image.open(paths[0])))


def test_gray_eval_images_and_config(tmp_path):
    paths = write_images(tmp_path, 3)  # the first gray
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


def test_pipeline_batches_shape_dtype_and_small_images(tmp_path):
    paths = write_images(tmp_path, 6, small=2)
    it = _iterator(paths, batch_size=8)
    for _ in range(3):
        b = next(it)
        assert b.shape == (8, 64, 64, 3) and b.dtype == np.uint8
    assert it.num_skipped == 0  # 'pad': the 40x50 images are reflect-padded, not skipped
    it.close()
    it = _iterator(paths, batch_size=8, small_images="skip")
    for _ in range(3):
        next(it)
    assert it.skipped["too_small"] > 0 and it.skipped["decode_error"] == 0
    it.close()


def test_pipeline_grayscale_becomes_rgb(tmp_path):
    (p,) = write_images(tmp_path, 1, gray=1)
    img = crops.decode_rgb(str(p))
    assert img.shape[-1] == 3 and (img[..., 0] == img[..., 1]).all()


def test_pipeline_seeded_determinism(tmp_path):
    paths = write_images(tmp_path, 8)
    a = [next(it) for it in [_iterator(paths, seed=3)] for _ in range(4)]
    b = [next(it) for it in [_iterator(paths, seed=3)] for _ in range(4)]
    c = [next(it) for it in [_iterator(paths, seed=4)] for _ in range(4)]
    assert all((x == y).all() for x, y in zip(a, b))
    assert not all((x == y).all() for x, y in zip(a, c))


def batches_digest(folder: str, seed: int = 7) -> str:
    """numpy version and the SHA-256 of the first 6 batches (4 crops of 64² each: 24 stream
    positions) that ``make_train_iterator`` reads from ``folder`` with ``seed``."""
    cfg = ml_collections.ConfigDict({"train_dirs": [folder], "backend": "python", "num_workers": 0})
    it = input_pipeline.make_train_iterator(cfg, crop_size=64, batch_size=4, seed=seed)
    digest = hashlib.sha256(b"".join(next(it).tobytes() for _ in range(6))).hexdigest()
    it.close()
    return f"{np.__version__} {digest}"


@needs_other_stack
def test_the_other_stack_reads_the_same_batches(tmp_path):
    """The same seed gives the same training batches in both stacks (numpy 1 and 2): the shuffled
    order, crop positions and flips come from ``default_rng``s seeded by integers, and the files
    decode to the same pixels (PNG and JPEG, colour and gray, small ones padded)."""
    write_images(tmp_path, 12, small=2, gray=2)  # 14 files: the 24 positions cross an epoch
    mine = batches_digest(str(tmp_path))
    other = run_in_other_stack(
        f"import test_input_pipeline as t; print(t.batches_digest({str(tmp_path)!r}))"
    ).split()[-2:]
    assert other[0] != np.__version__, "the other environment runs the same numpy"
    assert other[1] == mine.split()[1]
    assert batches_digest(str(tmp_path), seed=8) != mine  # the digest does see the seed


def test_pipeline_flips():
    img = np.arange(64 * 64 * 3, dtype=np.uint32).reshape(64, 64, 3).astype(np.uint8)
    seen_lr, seen_ud = set(), set()
    for s in range(32):
        out = crops.random_crop_flip(img, 64, np.random.default_rng(s), True, False)
        assert (out == img).all() or (out == img[:, ::-1]).all()
        seen_lr.add((out == img).all())
        out = crops.random_crop_flip(img, 64, np.random.default_rng(s), False, True)
        assert (out == img).all() or (out == img[::-1]).all()
        seen_ud.add((out == img).all())
        out = crops.random_crop_flip(img, 64, np.random.default_rng(s), False, False)
        assert (out == img).all()
    assert seen_lr == {True, False} and seen_ud == {True, False}


def test_pipeline_corrupted_file_skipped_and_counted(tmp_path, caplog):
    paths = write_images(tmp_path, 5, corrupt=1)
    (tmp_path / "truncated.jpg").write_bytes((tmp_path / "img_001.jpg").read_bytes()[:200])
    paths = data_order.list_images(tmp_path)
    assert len(paths) == 7
    it = _iterator(paths, batch_size=1)
    with caplog.at_level(logging.WARNING):
        batches = [next(it) for _ in range(5 * 3)]  # 3 epochs of the 5 good images
    assert len(batches) == 15
    # Every position read and not returned is a skipped bad file: 2 per epoch of 7.
    assert it.records_consumed == 15 + it.num_skipped
    assert it.skipped["decode_error"] == it.num_skipped >= 4
    assert "bad_0.png" in caplog.text and "truncated.jpg" in caplog.text
    it.close()


def test_pipeline_all_files_bad_raises(tmp_path):
    write_images(tmp_path, 0, corrupt=3, gray=0)
    it = _iterator(data_order.list_images(tmp_path))
    with pytest.raises(RuntimeError, match="none of the training images"):
        next(it)


def test_shard_pipeline_processes_read_disjoint_files(tmp_path):
    n = 11
    write_images(tmp_path, n, solid=True, size=(64, 64), gray=0)
    paths = data_order.list_images(tmp_path)
    seen = []
    for i in range(2):
        it = _iterator(paths, batch_size=1, process_index=i, process_count=2)
        ids = [int(next(it)[0, 0, 0, 0]) for _ in range(n // 2)]  # one epoch of this process
        it.close()
        assert len(set(ids)) == n // 2
        seen.append(set(ids))
    assert not seen[0] & seen[1]
    assert len(seen[0] | seen[1]) == n - n % 2


def test_resume_pipeline_position_exact(tmp_path):
    paths = write_images(tmp_path, 7)
    straight = [next(it) for it in [_iterator(paths)] for _ in range(6)]
    it = _iterator(paths)
    first = [next(it) for _ in range(2)]
    state = json.loads(json.dumps(it.get_state()))
    it.close()
    cfg = ml_collections.ConfigDict({"train_dirs": [str(tmp_path)], "num_workers": 0})
    it2 = input_pipeline.make_train_iterator(cfg, crop_size=64, batch_size=4, seed=0, state=state)
    rest = [next(it2) for _ in range(4)]
    for x, y in zip(straight, first + rest):
        np.testing.assert_array_equal(x, y)


@pytest.mark.skipif(not data_order.grain_available(), reason="grain not installed")
def test_pipeline_grain_and_python_backends_identical(tmp_path):
    paths = write_images(tmp_path, 7, corrupt=1)
    a = _iterator(paths, backend="python", num_workers=2)
    b = _iterator(paths, backend="grain", num_workers=0)
    for _ in range(5):
        np.testing.assert_array_equal(next(a), next(b))
    assert a.get_state()["records_consumed"] == b.get_state()["records_consumed"]
    a.close(), b.close()


@pytest.mark.skipif(not data_order.grain_available(), reason="grain not installed")
def test_pipeline_grain_worker_processes(tmp_path):
    paths = write_images(tmp_path, 6, corrupt=1)
    a = _iterator(paths, backend="python", num_workers=1, batch_size=2)
    b = _iterator(paths, backend="grain", num_workers=2, batch_size=2)
    for _ in range(4):
        np.testing.assert_array_equal(next(a), next(b))
    assert a.get_state() == {**b.get_state(), "backend": "python"}
    a.close(), b.close()


def test_pipeline_python_backend_without_grain(tmp_path, monkeypatch):
    monkeypatch.setattr(data_order, "GRAIN", None)
    paths = write_images(tmp_path, 4)
    it = _iterator(paths, backend="auto", num_workers=1)
    assert it.backend == "python" and next(it).shape == (4, 64, 64, 3)
    it.close()
    with pytest.raises(ImportError, match="grain is not installed"):
        _iterator(paths, backend="grain")


def test_pipeline_eval_images_centre_crops(tmp_path):
    write_images(tmp_path, 3, size=(100, 70))
    imgs, used = input_pipeline.load_eval_images(tmp_path, 64, 2)
    assert imgs.shape == (2, 64, 64, 3) and len(used) == 2
    full = crops.decode_rgb(used[1])
    np.testing.assert_array_equal(imgs[1], full[3:67, 18:82])
    imgs2, _ = input_pipeline.load_eval_images(tmp_path, 128, 1)  # smaller: padded
    assert imgs2.shape == (1, 128, 128, 3)


def test_pipeline_missing_folder_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data_order.list_images(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no .png"):
        data_order.list_images(tmp_path / "empty")

"""The ``mracnn`` command's output files: the permissions open() gives (not mkstemp's 0600),
atomic and crash-safe replacement, and output names that never overwrite an input or an image.

``compress`` and ``decompress`` run with the stand-in codec of cli_stand_in.py (the ``fake_codec``
fixture), so these tests check what the command line does with files and names, fast and without
JAX. The codec itself is tested in test_codec.py.
"""

from __future__ import annotations

import os
import stat

import numpy as np
import pytest
from cli_stand_in import MAGIC, error_line, file_mode  # a sibling helper module
from PIL import Image

from mracnn_jax import cli, fileio

IMAGE_EXTENSIONS = ("png", "PNG", "jpg", "jpeg", "webp", "bmp", "tif", "tiff", "gif", "ppm")


# -------------------------------------------------------------------------------------------------
# 1. Output files get the permissions open() gives, not mkstemp's 0600.


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_write_atomic_honours_the_umask(tmp_path, umask, mask, expected):
    umask(mask)
    assert fileio.current_umask() == mask
    out = tmp_path / "out.bin"
    fileio.write_atomic(out, lambda f: f.write(b"abc"))
    assert out.read_bytes() == b"abc"
    assert file_mode(out) == expected
    assert os.listdir(tmp_path) == ["out.bin"]  # no temporary file left


def test_write_atomic_keeps_an_existing_files_mode_and_is_atomic(tmp_path, umask):
    umask(0o022)
    out = tmp_path / "out.bin"
    out.write_bytes(b"old")
    out.chmod(0o640)
    fileio.write_atomic(out, lambda f: f.write(b"new"))
    assert out.read_bytes() == b"new" and file_mode(out) == 0o640

    def fail(f):
        f.write(b"partial")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        fileio.write_atomic(out, fail)
    assert out.read_bytes() == b"new"
    assert os.listdir(tmp_path) == ["out.bin"]


def test_write_atomic_flushes_the_file_before_the_rename_and_the_directory_after(
    tmp_path, monkeypatch
):
    """The order a crash-safe replacement needs: the data on the disk, then the rename, then the
    directory entry on the disk."""
    events, real_fsync, real_replace = [], os.fsync, os.replace

    def fsync(fd):
        events.append("dir" if stat.S_ISDIR(os.fstat(fd).st_mode) else "file")
        real_fsync(fd)

    def replace(src, dst):
        events.append("rename")
        real_replace(src, dst)

    monkeypatch.setattr(fileio.os, "fsync", fsync)
    monkeypatch.setattr(fileio.os, "replace", replace)
    fileio.write_atomic(tmp_path / "out.bin", lambda f: f.write(b"abc"))
    assert events == ["file", "rename", "dir"]
    assert (tmp_path / "out.bin").read_bytes() == b"abc"


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o077, 0o600)])
def test_compress_and_decompress_outputs_honour_the_umask(
    fake_codec, picture, tmp_path, umask, capsys, mask, expected
):
    umask(mask)
    mrac, png = tmp_path / "out.mrac", tmp_path / "out.png"
    assert cli.main(["compress", str(picture), str(mrac), "--model", "m.mracnn"]) == 0
    assert cli.main(["decompress", str(mrac), str(png), "--model", "m.mracnn"]) == 0
    assert file_mode(mrac) == expected and file_mode(png) == expected
    np.testing.assert_array_equal(np.asarray(Image.open(png)), np.asarray(Image.open(picture)))
    assert sorted(os.listdir(tmp_path)) == ["kodim23.png", "out.mrac", "out.png"]


# -------------------------------------------------------------------------------------------------
# 2. Output names: no bitstream under an image's name; OUT defaults to IN.mrac / IN.png.


@pytest.mark.parametrize("ext", IMAGE_EXTENSIONS + ("mracnn",))
def test_compress_refuses_an_image_or_model_name_for_its_output(picture, capsys, ext):
    out = picture.with_name(f"small_as.{ext}")
    assert cli.main(["compress", str(picture), str(out)]) == 1
    line = error_line(capsys)
    assert "compress writes an .mrac bitstream" in line
    assert f"name it '{picture.parent / 'small_as.mrac'}'" in line
    assert f"'{picture.with_suffix('.mrac')}'" in line  # what leaving the output out writes
    assert not out.exists()


def test_compress_writes_in_mrac_beside_the_input(
    fake_codec, picture, tmp_path, monkeypatch, capsys
):
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert cli.main(["compress", str(picture), "--model", "m.mracnn"]) == 0
    out = tmp_path / "kodim23.mrac"
    assert out.read_bytes().startswith(MAGIC)
    assert capsys.readouterr().out.startswith(f"{out}: ")
    assert os.listdir(elsewhere) == []
    # relative names too: the output sits beside the input, not in the working directory
    monkeypatch.chdir(tmp_path)
    out.unlink()
    assert cli.main(["compress", "kodim23.png", "--model", "m.mracnn"]) == 0
    assert out.is_file()


def test_compress_never_overwrites_its_input(fake_codec, tmp_path, capsys):
    src = tmp_path / "x.mrac"  # an image named .mrac: the default output would be the input
    Image.new("RGB", (4, 4)).save(src, format="PNG")
    before = src.read_bytes()
    assert cli.main(["compress", str(src), "--model", "m.mracnn"]) == 1
    assert "is the input itself" in error_line(capsys)
    assert cli.main(["compress", str(src), str(src), "--model", "m.mracnn"]) == 1
    assert "is the input itself" in error_line(capsys)
    assert src.read_bytes() == before


def test_a_default_output_never_replaces_a_file(fake_codec, picture, tmp_path, capsys):
    original = picture.read_bytes()
    assert cli.main(["compress", str(picture), "--model", "m"]) == 0
    mrac = tmp_path / "kodim23.mrac"
    bitstream = mrac.read_bytes()
    capsys.readouterr()
    # the round trip's default would be the original image: refused, the original untouched
    assert cli.main(["decompress", str(mrac), "--model", "m"]) == 1
    line = error_line(capsys)
    assert f"the default output '{picture}' already exists" in line, line
    assert "kodim23.decoded.png" in line and f"mracnn decompress {mrac} {picture}" in line
    assert picture.read_bytes() == original
    # compress again: refused too; naming the output replaces it
    assert cli.main(["compress", str(picture), "--model", "m"]) == 1
    assert f"the default output '{mrac}' already exists" in error_line(capsys)
    assert cli.main(["compress", str(picture), str(mrac), "--model", "m"]) == 0
    assert mrac.read_bytes() == bitstream
    decoded = tmp_path / "kodim23.decoded.png"
    assert cli.main(["decompress", str(mrac), str(decoded), "--model", "m"]) == 0
    assert np.array_equal(np.asarray(Image.open(decoded)), np.asarray(Image.open(picture)))
    assert sorted(os.listdir(tmp_path)) == ["kodim23.decoded.png", "kodim23.mrac", "kodim23.png"]


def test_decompress_writes_in_png_beside_the_input(fake_codec, picture, tmp_path, capsys):
    mrac = tmp_path / "x.mrac"
    assert cli.main(["compress", str(picture), str(mrac), "--model", "m.mracnn"]) == 0
    assert cli.main(["decompress", str(mrac), "--model", "m.mracnn"]) == 0
    out = tmp_path / "x.png"
    assert Image.open(out).format == "PNG"
    np.testing.assert_array_equal(np.asarray(Image.open(out)), np.asarray(Image.open(picture)))


def test_decompress_never_overwrites_its_input(fake_codec, picture, tmp_path, capsys):
    src = tmp_path / "x.png"  # a bitstream named .png: the default output would be the input
    assert cli.main(["compress", str(picture), str(tmp_path / "x.mrac"), "--model", "m"]) == 0
    (tmp_path / "x.mrac").rename(src)
    before = src.read_bytes()
    assert cli.main(["decompress", str(src), "--model", "m"]) == 1
    line = error_line(capsys)
    assert "is the input itself" in line and "x.decoded.png" in line
    assert cli.main(["decompress", str(src), str(src), "--model", "m"]) == 1
    assert "is the input itself" in error_line(capsys)
    assert src.read_bytes() == before
    # and an output named like a bitstream is no image
    assert cli.main(["decompress", str(src), str(tmp_path / "y.mrac"), "--model", "m"]) == 1
    assert "use .png" in error_line(capsys)

"""The batch form of ``mracnn compress`` / ``decompress`` (IN... -o OUTDIR), and the persistent
compilation cache the command turns on.

One test runs the real codec with a small model, against coding the same files one at a time; the
others use the stand-in codec of cli_stand_in.py (the ``fake_codec`` fixture).
"""

from __future__ import annotations

import os
import pathlib
import re
import types

import numpy as np
import pytest
from cli_stand_in import MAGIC, error_line  # a sibling helper module
from PIL import Image

from mracnn_jax import cli, cli_coding, compilation_cache


def _pictures(
    folder: pathlib.Path, sizes=((40, 50), (64, 64), (33, 61)), gray: int | None = None
) -> list[pathlib.Path]:
    """Small noise images in ``folder`` (number ``gray`` grayscale), of sizes that share one
    padded shape."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(7)
    paths = []
    for i, (h, w) in enumerate(sizes):
        pixels = rng.integers(0, 256, (h, w) if i == gray else (h, w, 3), dtype=np.uint8)
        paths.append(folder / f"img{i}.png")
        Image.fromarray(pixels).save(paths[-1])
    return paths


def test_batch_round_trip_is_exact_against_single_files(copy_of_small_model, tmp_path, capsys):
    """A folder of three images, compressed with -o and decompressed with -o in one process each
    (the real codec and a small model): the same bytes and pixels as one file at a time."""
    pictures = _pictures(tmp_path / "in", gray=1)
    model = ["--model", str(copy_of_small_model)]
    mrac, decoded, single = tmp_path / "mrac", tmp_path / "decoded", tmp_path / "single"
    assert cli.main(["compress", str(tmp_path / "in"), "-o", str(mrac), *model]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 4 and out[-1].startswith("mracnn: 3 files compressed: ")
    assert re.fullmatch(
        r"mracnn: 3 files compressed: \d+ bytes, mean \d+\.\d{4} bpp, [\d.]+ s", out[-1]
    )
    assert cli.main(["decompress", str(mrac), "-o", str(decoded), *model]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 4 and out[-1].startswith("mracnn: 3 files decompressed: ")
    assert sorted(os.listdir(mrac)) == [f"img{i}.mrac" for i in range(3)]
    assert sorted(os.listdir(decoded)) == [f"img{i}.png" for i in range(3)]
    single.mkdir()
    for picture in pictures:
        one_mrac, one_png = single / f"{picture.stem}.mrac", single / f"{picture.stem}.png"
        assert cli.main(["compress", str(picture), str(one_mrac), *model]) == 0
        assert cli.main(["decompress", str(one_mrac), str(one_png), *model]) == 0
        assert (mrac / one_mrac.name).read_bytes() == one_mrac.read_bytes()
        batch_image = Image.open(decoded / one_png.name)
        assert batch_image.mode == Image.open(one_png).mode == Image.open(picture).mode
        np.testing.assert_array_equal(np.asarray(batch_image), np.asarray(Image.open(one_png)))


def _dummy_model_file(folder: pathlib.Path) -> str:
    """A file for --model to name (the stand-in codec loads nothing from it)."""
    path = folder / "m.mracnn"
    path.write_bytes(b"")
    return str(path)


def test_batch_loads_the_model_once_and_reports_each_file(
    fake_codec, tmp_path, monkeypatch, capsys
):
    pictures = _pictures(tmp_path / "in")
    model = _dummy_model_file(tmp_path)
    loads = []

    def load(path, expect=None):
        loads.append(path)
        return types.SimpleNamespace(name="m")

    monkeypatch.setattr(cli_coding, "_load_model", load)
    out_dir = tmp_path / "new" / "mrac"  # created, parents too
    args = [
        "compress",
        str(pictures[0]),
        str(tmp_path / "in"),
        "-o",
        str(out_dir),
        "--model",
        model,
    ]
    assert cli.main(args) == 0  # img0 named twice: coded once
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines[:-1]] == [
        str(out_dir / f"img{i}.mrac") for i in range(3)
    ]
    assert lines[-1].startswith("mracnn: 3 files compressed: ") and loads == [model]
    # An existing output is not replaced without --overwrite (the others go on).
    (out_dir / "img1.mrac").write_bytes(b"keep")
    assert cli.main(["compress", str(tmp_path / "in"), "-o", str(out_dir), "--model", model]) == 1
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 3 and all("already exists (--overwrite replaces it)" in e for e in err)
    assert (out_dir / "img1.mrac").read_bytes() == b"keep"
    args = ["compress", str(tmp_path / "in"), "-o", str(out_dir), "--model", model, "--overwrite"]
    assert cli.main(args) == 0 and (out_dir / "img1.mrac").read_bytes().startswith(MAGIC)
    # decompress: every .mrac of the folder, one model load, the images back
    loads.clear()
    capsys.readouterr()
    assert (
        cli.main(["decompress", str(out_dir), "-o", str(tmp_path / "png"), "--model", model]) == 0
    )
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 4 and lines[-1].startswith("mracnn: 3 files decompressed: ")
    assert loads == [model]
    for picture in pictures:
        np.testing.assert_array_equal(
            np.asarray(Image.open(tmp_path / "png" / picture.name).convert("RGB")),
            np.asarray(Image.open(picture).convert("RGB")),
        )


def test_batch_a_broken_input_fails_alone(fake_codec, tmp_path, capsys):
    _pictures(tmp_path / "in")
    model = _dummy_model_file(tmp_path)
    (tmp_path / "in" / "broken.png").write_text("not an image\n")
    out_dir = tmp_path / "mrac"
    assert cli.main(["compress", str(tmp_path / "in"), "-o", str(out_dir), "--model", model]) == 1
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and "Traceback" not in captured.err, captured.err
    line = err[0]
    assert line.startswith(f"mracnn: error: {tmp_path / 'in' / 'broken.png'}: "), line
    assert "not an image Pillow can read" in line
    assert sorted(os.listdir(out_dir)) == ["img0.mrac", "img1.mrac", "img2.mrac"]
    out = captured.out.splitlines()
    assert len(out) == 4 and out[-1].startswith("mracnn: 3 of 4 files compressed (1 failed): ")
    # decompress: a damaged bitstream among good ones
    (out_dir / "img1.mrac").write_bytes(b"garbage")
    assert (
        cli.main(["decompress", str(out_dir), "-o", str(tmp_path / "png"), "--model", model]) == 1
    )
    captured = capsys.readouterr()
    err = captured.err.strip().splitlines()
    assert len(err) == 1 and err[0] == (
        f"mracnn: error: {out_dir / 'img1.mrac'}: not an .mrac file"
    ), captured.err
    assert sorted(os.listdir(tmp_path / "png")) == ["img0.png", "img2.png"]
    assert captured.out.splitlines()[-1].startswith("mracnn: 2 of 3 files decompressed (1 failed)")


def test_batch_refuses_ambiguous_usage(fake_codec, tmp_path, capsys):
    a, b, c = _pictures(tmp_path / "in")
    model = _dummy_model_file(tmp_path)
    out_dir = tmp_path / "out"
    cases = [
        (["compress", str(a), str(b), str(c)], "3 paths given without -o"),
        (["compress", str(tmp_path / "in")], "is a folder: compress its images into a folder"),
        (
            ["compress", str(a), str(tmp_path / "x.mrac"), "-o", str(out_dir)],
            "named like an output",
        ),
        (["compress", str(a), "-o", str(tmp_path / "x.mrac")], "-o names the folder"),
        (["decompress", str(a), str(b), str(c)], "3 paths given without -o"),
        (["decompress", str(tmp_path / "in")], "is a folder: decompress its .mrac files"),
        (
            ["decompress", str(tmp_path / "x.mrac"), str(a), "-o", str(out_dir)],
            "named like an output",
        ),
    ]
    for args, message in cases:
        assert cli.main([*args, "--model", model]) == 2, args
        line = error_line(capsys)
        assert message in line, (args, line)
        assert "-o OUTDIR" in line, line
    assert not out_dir.exists()
    # two inputs that would write one output: refused before anything is written
    other = tmp_path / "other"
    other.mkdir()
    Image.open(a).save(other / "img0.bmp")
    args = ["compress", str(tmp_path / "in"), str(other), "-o", str(out_dir), "--model", model]
    assert cli.main(args) == 1
    assert "would both be written to" in error_line(capsys)
    assert not out_dir.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main(["decompress", str(empty), "-o", str(out_dir), "--model", model]) == 1
    assert "holds no *.mrac file" in error_line(capsys)


def test_cache_folder_default_xdg_and_off(tmp_path, monkeypatch):
    monkeypatch.delenv("MRACNN_JAX_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    expected = str(tmp_path / "xdg" / "mracnn-jax" / "xla")
    assert (
        compilation_cache.default_cache_dir()
        == compilation_cache.compilation_cache_dir()
        == expected
    )
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    for xdg in ("", "relative/cache"):  # unset or not absolute: ~/.cache (the XDG rule)
        monkeypatch.setenv("XDG_CACHE_HOME", xdg)
        assert compilation_cache.compilation_cache_dir() == str(
            tmp_path / "home" / ".cache" / "mracnn-jax" / "xla"
        )
    monkeypatch.delenv("XDG_CACHE_HOME")
    assert compilation_cache.compilation_cache_dir() == str(
        tmp_path / "home" / ".cache" / "mracnn-jax" / "xla"
    )
    for off in ("off", "OFF", " off "):
        monkeypatch.setenv("MRACNN_JAX_CACHE_DIR", off)
        assert compilation_cache.compilation_cache_dir() is None
        assert (
            compilation_cache.compilation_cache_dir("chosen") == "chosen"
        )  # --cache-dir still wins
    monkeypatch.setenv("MRACNN_JAX_CACHE_DIR", str(tmp_path / "env"))
    assert compilation_cache.compilation_cache_dir() == str(tmp_path / "env")
    assert compilation_cache.compilation_cache_dir("chosen") == "chosen"
    assert compilation_cache.compilation_cache_dir("chosen", no_cache=True) is None


def test_compress_turns_the_default_cache_on(fake_codec, picture, tmp_path, monkeypatch, capsys):
    """On by default, in $XDG_CACHE_HOME; off with --no-cache or MRACNN_JAX_CACHE_DIR=off; a
    default folder that cannot be made is a warning, not an error."""
    monkeypatch.delenv("MRACNN_JAX_CACHE_DIR")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    mrac = tmp_path / "x.mrac"
    assert cli.main(["compress", str(picture), str(mrac), "--model", "m"]) == 0
    assert fake_codec.cache_calls == [str(tmp_path / "xdg" / "mracnn-jax" / "xla")]
    assert (tmp_path / "xdg" / "mracnn-jax" / "xla").is_dir()
    assert cli.main(["decompress", str(mrac), str(tmp_path / "x.png"), "--model", "m"]) == 0
    assert fake_codec.cache_calls[-1] == str(tmp_path / "xdg" / "mracnn-jax" / "xla")
    fake_codec.cache_calls.clear()
    assert cli.main(["compress", str(picture), str(mrac), "--model", "m", "--no-cache"]) == 0
    monkeypatch.setenv("MRACNN_JAX_CACHE_DIR", "off")
    assert cli.main(["compress", str(picture), str(mrac), "--model", "m"]) == 0
    assert fake_codec.cache_calls == []
    args = ["compress", str(picture), str(mrac), "--model", "m", "--cache-dir", str(tmp_path / "c")]
    assert cli.main(args) == 0 and fake_codec.cache_calls == [str(tmp_path / "c")]
    with pytest.raises(SystemExit):  # both: a usage error
        cli.main([*args, "--no-cache"])
    capsys.readouterr()
    monkeypatch.delenv("MRACNN_JAX_CACHE_DIR")
    (tmp_path / "file").write_text("")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "file"))  # no folder can be made there
    assert cli.main(["compress", str(picture), str(mrac), "--model", "m"]) == 0
    err = capsys.readouterr().err
    assert (
        err.startswith("mracnn: warning: no compilation cache (cannot use ")
        and len(err.splitlines()) == 1
    ), err

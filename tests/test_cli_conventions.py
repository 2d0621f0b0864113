"""The ``mracnn`` command line against the field's conventions (output permissions, file names,
one-line errors, ``--version``, help texts), and the packaging metadata behind them.

The codec itself is tested in test_codec.py. Here ``compress`` and ``decompress`` run with a
stand-in codec (``fake_codec``: the image's bytes are the "bitstream"), so these tests check what
the command line does with files and names, fast and without JAX; one batch test runs the real
codec with a small model, against coding the same files one at a time.
"""

from __future__ import annotations

import importlib.metadata
import os
import pathlib
import pickle
import re
import stat
import types
import warnings

import numpy as np
import pytest
from load_script import load_script  # a sibling helper module
from PIL import Image

import mracnn_jax
import mracnn_jax.codec.tiles  # imported now: a first import in a test would undo fake_codec
import mracnn_jax.coding
from mracnn_jax import cli, cli_coding, compilation_cache, fileio, zoo

REPO = pathlib.Path(__file__).resolve().parents[1]
IMAGE_EXTENSIONS = ("png", "PNG", "jpg", "jpeg", "webp", "bmp", "tif", "tiff", "gif", "ppm")


@pytest.fixture
def umask():
    """``umask(m)`` sets the process umask for the test; the old one is put back after it."""
    old = os.umask(0o022)
    os.umask(old)
    yield os.umask
    os.umask(old)


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _error_line(capsys) -> str:
    """The one line a failed command wrote on stderr (and checks that it is one line)."""
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("mracnn: error: "), lines[0]
    return lines[0]


# -------------------------------------------------------------------------------------------------
# A stand-in codec: "compress" stores the pixels, "decompress" gives them back.

MAGIC = b"FAKE"


def _fake_compress(image, model, **options):
    h, w = image.shape[:2]
    data = MAGIC + h.to_bytes(2, "big") + w.to_bytes(2, "big") + image.tobytes()
    return types.SimpleNamespace(data=data, tiling=None, refinement=None)


def _fake_unpack(data):
    if not data.startswith(MAGIC):
        raise ValueError("not an .mrac file")
    h, w = int.from_bytes(data[4:6], "big"), int.from_bytes(data[6:8], "big")
    image = np.frombuffer(data[8:], np.uint8).reshape(h, w, 3)
    return types.SimpleNamespace(height=h, width=w, colour_mode="RGB", bits=8, image=image)


@pytest.fixture
def fake_codec(monkeypatch):
    """The stand-in codec; ``cache_calls`` records the folders the CLI turned the compilation
    cache on in (none: the cache is off here, as in every test, unless a test says otherwise)."""
    cache_calls = []

    def enable_compilation_cache(path):
        if path is not None:
            os.makedirs(path, exist_ok=True)  # as the real one does
        cache_calls.append(None if path is None else os.fspath(path))

    codec = types.SimpleNamespace(
        compress_with_info=_fake_compress,
        decompress_with_info=lambda bs, model, **kw: types.SimpleNamespace(
            image=bs.image, tiling=None
        ),
        enable_compilation_cache=enable_compilation_cache,
        cache_calls=cache_calls,
    )
    monkeypatch.setattr(mracnn_jax, "codec", codec, raising=False)
    monkeypatch.setattr(mracnn_jax.coding, "container", types.SimpleNamespace(unpack=_fake_unpack))
    monkeypatch.setattr(
        cli_coding, "_load_model", lambda path, expect=None: types.SimpleNamespace(name="m")
    )
    monkeypatch.setenv("MRACNN_JAX_CACHE_DIR", "off")
    return codec


@pytest.fixture
def picture(tmp_path) -> pathlib.Path:
    pixels = np.random.default_rng(0).integers(0, 256, (6, 10, 3), dtype=np.uint8)
    path = tmp_path / "kodim23.png"
    Image.fromarray(pixels).save(path)
    return path


# -------------------------------------------------------------------------------------------------
# 1. Output files get the permissions open() gives, not mkstemp's 0600.


@pytest.mark.parametrize("mask, expected", [(0o022, 0o644), (0o077, 0o600), (0o002, 0o664)])
def test_write_atomic_honours_the_umask(tmp_path, umask, mask, expected):
    umask(mask)
    assert fileio.current_umask() == mask
    out = tmp_path / "out.bin"
    fileio.write_atomic(out, lambda f: f.write(b"abc"))
    assert out.read_bytes() == b"abc"
    assert _mode(out) == expected
    assert os.listdir(tmp_path) == ["out.bin"]  # no temporary file left


def test_write_atomic_keeps_an_existing_files_mode_and_is_atomic(tmp_path, umask):
    umask(0o022)
    out = tmp_path / "out.bin"
    out.write_bytes(b"old")
    out.chmod(0o640)
    fileio.write_atomic(out, lambda f: f.write(b"new"))
    assert out.read_bytes() == b"new" and _mode(out) == 0o640

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
    assert _mode(mrac) == expected and _mode(png) == expected
    np.testing.assert_array_equal(np.asarray(Image.open(png)), np.asarray(Image.open(picture)))
    assert sorted(os.listdir(tmp_path)) == ["kodim23.png", "out.mrac", "out.png"]


# -------------------------------------------------------------------------------------------------
# 2. Output names: no bitstream under an image's name; OUT defaults to IN.mrac / IN.png.


@pytest.mark.parametrize("ext", IMAGE_EXTENSIONS + ("mracnn",))
def test_compress_refuses_an_image_or_model_name_for_its_output(picture, capsys, ext):
    out = picture.with_name(f"small_as.{ext}")
    assert cli.main(["compress", str(picture), str(out)]) == 1
    line = _error_line(capsys)
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
    assert "is the input itself" in _error_line(capsys)
    assert cli.main(["compress", str(src), str(src), "--model", "m.mracnn"]) == 1
    assert "is the input itself" in _error_line(capsys)
    assert src.read_bytes() == before


def test_a_default_output_never_replaces_a_file(fake_codec, picture, tmp_path, capsys):
    original = picture.read_bytes()
    assert cli.main(["compress", str(picture), "--model", "m"]) == 0
    mrac = tmp_path / "kodim23.mrac"
    bitstream = mrac.read_bytes()
    capsys.readouterr()
    # the round trip's default would be the original image: refused, the original untouched
    assert cli.main(["decompress", str(mrac), "--model", "m"]) == 1
    line = _error_line(capsys)
    assert f"the default output '{picture}' already exists" in line, line
    assert "kodim23.decoded.png" in line and f"mracnn decompress {mrac} {picture}" in line
    assert picture.read_bytes() == original
    # compress again: refused too; naming the output replaces it
    assert cli.main(["compress", str(picture), "--model", "m"]) == 1
    assert f"the default output '{mrac}' already exists" in _error_line(capsys)
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
    line = _error_line(capsys)
    assert "is the input itself" in line and "x.decoded.png" in line
    assert cli.main(["decompress", str(src), str(src), "--model", "m"]) == 1
    assert "is the input itself" in _error_line(capsys)
    assert src.read_bytes() == before
    # and an output named like a bitstream is no image
    assert cli.main(["decompress", str(src), str(tmp_path / "y.mrac"), "--model", "m"]) == 1
    assert "use .png" in _error_line(capsys)


# -------------------------------------------------------------------------------------------------
# 3. One-line errors that say what to do; help texts that are whole.


def test_export_with_an_image_for_config_says_what_a_config_is(picture, tmp_path, capsys):
    out = tmp_path / "x.mracnn"
    assert cli.main(["export", "--config", str(picture), str(out)]) == 1
    line = _error_line(capsys)
    assert "is not a Python config file" in line and "a preset (mracnn" in line, line
    assert "AttributeError" not in line and not out.exists()


def test_convert_an_image_says_what_convert_takes(picture, tmp_path, capsys):
    """Needs no torch: an image is told apart before torch is imported."""
    out = tmp_path / "out.mracnn"
    assert cli.main(["convert", str(picture), str(out)]) == 1
    line = _error_line(capsys)
    assert f"'{picture}' is a PNG image, not a PyTorch checkpoint" in line, line
    assert "CompressAI / STF layout" in line and line.endswith("under 'state_dict')")
    assert not out.exists()


def test_convert_refuses_to_write_over_its_checkpoint(tmp_path, capsys):
    """Checked before JAX or torch is imported: the checkpoint is left as it was."""
    checkpoint = tmp_path / "w.pth"
    checkpoint.write_bytes(b"PK\x03\x04 weights")
    assert cli.main(["convert", str(checkpoint), str(tmp_path / "." / "w.pth")]) == 1
    assert "is the checkpoint itself: name another file" in _error_line(capsys)
    assert checkpoint.read_bytes() == b"PK\x03\x04 weights"


def test_model_and_quality_together_are_a_usage_error(picture, tmp_path, capsys):
    args = ["compress", str(picture), str(tmp_path / "x.mrac"), "--model", "m", "--quality", "1"]
    with pytest.raises(SystemExit) as e:
        cli.main(args)
    assert e.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
    assert not (tmp_path / "x.mrac").exists()


class _NotATensor:
    pass


def test_convert_cleans_up_torchs_message(tmp_path, capsys):
    pytest.importorskip("torch")
    out = tmp_path / "out.mracnn"
    cases = {
        "zip.pth": b"PK\x03\x04 not a zip at all",
        "object.pth": pickle.dumps({"weight": [_NotATensor]}, protocol=4),
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        assert cli.main(["convert", str(tmp_path / name), str(out)]) == 1
        line = _error_line(capsys)
        match = re.search(r"is not a PyTorch checkpoint torch can read \(([^()]+)\): convert", line)
        assert match, line
        reason = match.group(1)
        # torch's reason only: none of its advice on weights_only, no sentence cut in two
        assert "weights_only" not in line and "Check the documentation" not in line, line
        assert len(reason) < 120 and ". " not in reason, reason
        assert not out.exists()


def test_evaluate_help_has_a_whole_description():
    evaluate = load_script(REPO / "evaluate.py", "evaluate_script")
    description = evaluate.build_parser().description
    assert description.endswith("BD-rates, plots."), description
    first_paragraph = evaluate.__doc__.split("\n\n")[0]
    assert description == " ".join(first_paragraph.split())


def _compress_help(capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["compress", "--help"])
    assert exit_info.value.code == 0
    return " ".join(capsys.readouterr().out.split())


def test_quality_help_lists_the_bundled_qualities_and_lambdas(capsys, bundled_quality_lambdas):
    text = _compress_help(capsys)
    lambdas = bundled_quality_lambdas
    assert len(lambdas) >= 2
    middle = sorted(lambdas)[(len(lambdas) - 1) // 2]  # the default: no model file names one
    listed = ", ".join(
        f"{q} (lambda {lmbda:g}{', the default' if q == middle else ''})"
        for q, lmbda in sorted(lambdas.items())
    )
    assert f"--quality Q choose a bundled model by its quality: {listed};" in text, text


def test_quality_help_reads_the_model_files(tmp_path, monkeypatch, capsys):
    """The λ come from the model files' metadata (no copy of the numbers in the CLI)."""
    from mracnn_jax import model_file

    params = {"w": np.zeros(1, np.float32)}
    model_file.save_model(
        tmp_path / "a-q1.mracnn", {"name": "a"}, params, metadata={"lmbda": 0.123}
    )
    model_file.save_model(
        tmp_path / "a-q4.mracnn", {"name": "a"}, params, metadata={"lmbda": 7e-4, "default": True}
    )
    model_file.save_model(tmp_path / "a-q9.mracnn", {"name": "a"}, params)  # no λ recorded
    monkeypatch.setattr(zoo, "BUNDLED_DIR", tmp_path)
    text = _compress_help(capsys)
    assert "quality: 1 (lambda 0.123), 4 (lambda 0.0007, the default), 9;" in text, text
    monkeypatch.setattr(zoo, "BUNDLED_DIR", tmp_path / "none")
    assert "(no model with a quality is bundled)" in _compress_help(capsys)


# -------------------------------------------------------------------------------------------------
# 4. The version, and the packaging metadata.


def test_version(capsys):
    assert re.fullmatch(r"\d+\.\d+\.\d+(\.?(a|b|rc|dev|post)\d+)*", mracnn_jax.__version__)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"mracnn {mracnn_jax.__version__}\n"


def test_pyproject_reads_the_version_and_has_an_spdx_license():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    dynamic = project["tool"]["setuptools"]["dynamic"]
    assert dynamic["version"] == {"attr": "mracnn_jax.__version__"}
    assert project["project"]["license"] == "Apache-2.0"
    assert "setuptools>=77" in project["build-system"]["requires"]  # SPDX strings need 77


def test_pyproject_configures_setuptools_without_deprecation_warnings(monkeypatch):
    setuptools = pytest.importorskip("setuptools")
    if int(setuptools.__version__.split(".")[0]) < 77:
        pytest.skip(f"setuptools {setuptools.__version__} is older than the build requires (77)")
    from setuptools.config.pyprojecttoml import apply_configuration
    from setuptools.dist import Distribution

    monkeypatch.chdir(REPO)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dist = apply_configuration(Distribution(), REPO / "pyproject.toml")
    assert dist.get_version() == mracnn_jax.__version__
    assert dist.metadata.license_expression == "Apache-2.0"


def test_the_installed_metadata_agrees():
    try:
        installed = importlib.metadata.version("mracnn-jax")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("mracnn-jax is not installed (pip install -e .)")
    assert installed == mracnn_jax.__version__


# -------------------------------------------------------------------------------------------------
# 5. The batch form (IN... -o OUTDIR) and the persistent compilation cache.


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
        line = _error_line(capsys)
        assert message in line, (args, line)
        assert "-o OUTDIR" in line, line
    assert not out_dir.exists()
    # two inputs that would write one output: refused before anything is written
    other = tmp_path / "other"
    other.mkdir()
    Image.open(a).save(other / "img0.bmp")
    args = ["compress", str(tmp_path / "in"), str(other), "-o", str(out_dir), "--model", model]
    assert cli.main(args) == 1
    assert "would both be written to" in _error_line(capsys)
    assert not out_dir.exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert cli.main(["decompress", str(empty), "-o", str(out_dir), "--model", model]) == 1
    assert "holds no *.mrac file" in _error_line(capsys)


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

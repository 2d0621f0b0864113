"""``mracnn export-xla``: the codec's networks as ``jax.export`` artefacts, run without mracnn-jax.

One small model (the ``small`` preset, random initialisation, seed 0, rescaled by conftest's
``make_latents_informative`` so that y carries real symbols) is exported for a 120x100 image
(padded to 128x128) and with symbolic shapes. A fresh Python process runs the script of
docs/export_xla.md (it imports jax, numpy and json, and checks at the end that neither mracnn_jax
nor flax was imported): it follows the manifest's programs to encode the image and decode its
symbols. Its z and y symbols, scale indexes, y^ and reconstruction are compared with the codec's
(``codec.compress_with_info``), for the fixed export and for the symbolic one at two image sizes.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pytest

from mracnn_jax import cli, codec, export_xla

REPO = pathlib.Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "export_xla.md"
SIZES = [(120, 100), (64, 150)]  # image sizes: padded to 128x128 and 64x192

needs_serialisation = pytest.mark.skipif(
    importlib.util.find_spec("flatbuffers") is None,
    reason="jax.export's serialisation needs the 'flatbuffers' package",
)


# -------------------------------------------------------------------------------------------------
# Fixtures.


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> list[tuple[np.ndarray, pathlib.Path]]:
    """Images of ``SIZES`` (gradients and noise), each with its ``.npy`` file."""
    folder = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(1)
    out = []
    for h, w in SIZES:
        yy, xx = np.mgrid[0:h, 0:w]
        noise = rng.integers(0, 256, xx.shape)
        image = np.stack([(xx * 1.3 + yy) % 256, (yy * 0.9) % 256, noise], -1).astype(np.uint8)
        path = folder / f"image_{h}x{w}.npy"
        np.save(path, image)
        out.append((image, path))
    return out


@pytest.fixture(scope="module")
def references(rich_model, images):
    """The codec's view of each image, computed in one tile as the artefacts compute it."""
    return [codec.compress_with_info(image, rich_model, tile=None) for image, _ in images]


@pytest.fixture(scope="module")
def runner(tmp_path_factory) -> pathlib.Path:
    """docs/export_xla.md's script, as a file."""
    blocks = re.findall(r"```python\n(# run_exported\.py.*?)```", DOC.read_text(), re.DOTALL)
    assert len(blocks) == 1, f"{DOC} should hold one python block starting '# run_exported.py'"
    path = tmp_path_factory.mktemp("runner") / "run_exported.py"
    path.write_text(blocks[0])
    return path


def _export(rich_model_path, outdir, *options) -> str:
    """``mracnn export-xla MODEL OUTDIR OPTIONS``; returns what it printed."""
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert cli.main(["export-xla", str(rich_model_path), str(outdir), *options]) == 0
    return printed.getvalue()


@pytest.fixture(scope="module")
def fixed(rich_model_path, tmp_path_factory):
    outdir = tmp_path_factory.mktemp("xla") / "fixed"
    h, w = SIZES[0]
    printed = _export(rich_model_path, outdir, "--height", str(h), "--width", str(w))
    return outdir, printed


@pytest.fixture(scope="module")
def symbolic(rich_model_path, tmp_path_factory):
    outdir = tmp_path_factory.mktemp("xla") / "symbolic"
    printed = _export(rich_model_path, outdir, "--symbolic", "--platforms", "cpu,cuda")
    return outdir, printed


def _run_fresh(runner, outdir, images, tmp_path) -> list[dict]:
    """Runs the script on ``images`` in a new Python process; its saved values per image."""
    jobs, results = [], []
    for k, (_, path) in enumerate(images):
        results.append(tmp_path / f"result_{k}.npz")
        jobs += [str(path), str(results[-1])]
    proc = subprocess.run(
        [sys.executable, str(runner), str(outdir), *jobs],
        check=False, cwd=tmp_path, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    return [dict(np.load(r)) for r in results]


def _compare(got: dict, ref) -> None:
    """The fresh process's values against the codec's (``CompressionResult``)."""
    np.testing.assert_array_equal(got["z_symbols"].astype(np.int32), ref.z_symbols)
    np.testing.assert_array_equal(got["y_symbols"].astype(np.int32), ref.y_symbols)
    k = np.clip(np.round(got["scale_index"]), 0, 63).astype(np.int32)
    np.testing.assert_array_equal(k, ref.scale_indexes)  # the encoder's own rounding
    np.testing.assert_allclose(got["y_hat"], ref.y_hat, rtol=0, atol=1e-4)
    diff = np.abs(got["reconstruction"].astype(int) - ref.reconstruction.astype(int))
    assert got["reconstruction"].dtype == np.uint8 and diff.max() <= 1, diff.max()
    np.testing.assert_array_equal(got["decoded"], got["reconstruction"])  # exported decoder


# -------------------------------------------------------------------------------------------------
# The artefacts, run without mracnn-jax.


@needs_serialisation
def test_the_fixed_export_reproduces_the_codec(runner, fixed, images, references, tmp_path):
    outdir, _ = fixed
    (got,) = _run_fresh(runner, outdir, images[:1], tmp_path)
    ref = references[0]
    assert np.count_nonzero(ref.y_symbols) > 100, "the test model's y should carry symbols"
    assert got["reconstruction"].shape == images[0][0].shape
    _compare(got, ref)


@needs_serialisation
def test_the_symbolic_export_reproduces_the_codec_at_two_sizes(
    runner, symbolic, images, references, tmp_path
):
    outdir, _ = symbolic
    results = _run_fresh(runner, outdir, images, tmp_path)
    assert [r["reconstruction"].shape[:2] for r in results] == SIZES
    for got, ref in zip(results, references):
        _compare(got, ref)


@needs_serialisation
def test_a_symbolic_artefact_refuses_a_canvas_not_of_64s(symbolic):
    from jax import export

    outdir, _ = symbolic
    analysis = export.deserialize(bytearray((outdir / "analysis.jaxexport").read_bytes()))
    with pytest.raises(Exception, match="(?i)shape"):
        analysis.call(np.zeros((1, 100, 64, 3), np.float32))


# -------------------------------------------------------------------------------------------------
# The manifest and the command line.


def _manifest(outdir) -> dict:
    return json.loads((pathlib.Path(outdir) / "manifest.json").read_text())


@needs_serialisation
def test_the_manifest_describes_pieces_order_and_identity(fixed, symbolic, rich_model):
    import jax

    info = _manifest(fixed[0])
    assert info["model"]["name"] == rich_model.name
    assert info["model"]["params_digest"] == rich_model.params_digest
    assert info["model"]["identity"] == rich_model.identity.hex()
    assert info["model"]["num_support"] == list(rich_model.pieces.num_support)
    assert info["jax"]["version"] == jax.__version__ and info["jax"]["platforms"] == ["cpu"]
    assert _manifest(symbolic[0])["jax"]["platforms"] == ["cpu", "cuda"]
    assert info["image"] | {"input": None} == {
        "multiple": 64, "peak": 255, "channels": 3, "symbolic": False, "height": 120,
        "width": 100, "padded": [128, 128], "top": 4, "left": 14, "input": None,
    }  # fmt: skip
    np.testing.assert_array_equal(np.asarray(info["z_offsets"], np.float32), rich_model.offsets)
    assert info["entropy_coding"]["included"] is False
    assert "coding/z_cdf.npy" in info["entropy_coding"]["z"]  # the model file holds the tables
    names = {"analysis", "hyper_analysis", "hyper_synthesis", "synthesis"}
    names |= {f"{kind}_{i}" for kind in ("slice", "refine") for i in range(rich_model.num_slices)}
    assert set(info["pieces"]) == names
    assert sorted(os.listdir(fixed[0])) == sorted(
        ["manifest.json"] + [p["file"] for p in info["pieces"].values()]
    )
    pieces = info["pieces"]
    assert pieces["analysis"]["inputs"] == [{"name": "x", "shape": [1, 128, 128, 3],
                                             "dtype": "float32"}]  # fmt: skip
    assert pieces["synthesis"]["outputs"][0]["dtype"] == "uint8"
    symbolic_x = _manifest(symbolic[0])["pieces"]["analysis"]["inputs"][0]["shape"]
    assert symbolic_x == [1, "64*a", "64*b", 3]
    for program, given in (("encode", {"x"}), ("decode", {"z_symbols"})):
        known = set(given) | {f"s_{i}" for i in range(rich_model.num_slices) if program == "decode"}
        for step in info["programs"][program]:
            assert set(step["in"]) <= known, (program, step)
            if step["op"] == "call":
                spec = pieces[step["piece"]]
                assert step["in"] == [v["name"] for v in spec["inputs"]]
                assert step["out"] == [v["name"] for v in spec["outputs"]]
            else:
                assert step["op"] in info["host_ops"]
            known |= set(step["out"])
        assert "x_hat" in known


@needs_serialisation
def test_the_command_prints_what_it_wrote(fixed):
    outdir, printed = fixed
    lines = printed.strip().splitlines()
    for name in os.listdir(outdir):
        assert any(str(outdir / name) in line for line in lines[:-1]), name
    assert lines[-1].startswith(f"{outdir}: 14 pieces of model mracnn-small")
    assert "120x100 images (padded to 128x128)" in lines[-1]


@pytest.mark.parametrize(
    "options, status, message",
    [
        (["--height", "64", "--width", "64"], 1, "does not exist"),  # no model file (below)
        ([], 2, "give the image size (--height H --width W) or --symbolic"),
        (["--height", "64"], 2, "give the image size"),
        (["--symbolic", "--width", "64"], 2, "without --height/--width"),
        (["--height", "0", "--width", "64"], 1, "image size 0x64 outside 1..65535"),
        (["--height", "64", "--width", "70000"], 1, "image size 64x70000 outside 1..65535"),
        (["--symbolic", "--platforms", "cpu,gpu"], 1, "unknown platform 'gpu'"),
    ],
)  # fmt: skip
def test_wrong_usage_is_one_line(tmp_path, capsys, options, status, message):
    model_file = tmp_path / "m.mracnn"
    if message != "does not exist":
        model_file.write_bytes(b"not read before the options are checked")
    if "platform" in message and importlib.util.find_spec("flatbuffers") is None:
        pytest.skip("the platforms are checked after the flatbuffers package")
    assert cli.main(["export-xla", str(model_file), str(tmp_path / "out"), *options]) == status
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mracnn: error: ") and message in err[0], err
    assert not (tmp_path / "out").exists()


def test_a_non_empty_output_folder_is_refused(tmp_path, capsys):
    (tmp_path / "m.mracnn").write_bytes(b"x")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("mine")
    argv = ["export-xla", str(tmp_path / "m.mracnn"), str(tmp_path / "out"), "--symbolic"]
    assert cli.main(argv) == 1
    err = capsys.readouterr().err
    assert "exists and is not an empty folder" in err and len(err.strip().splitlines()) == 1
    assert os.listdir(tmp_path / "out") == ["keep.txt"]


def test_a_window_attention_model_is_refused_a_symbolic_export(rich_model):
    """WAM's shifted windows need their mask built for one size: refused in one line, before any
    tracing (the config decides; the parameters are never read)."""
    config = rich_model.config.as_configdict()
    config.attention = "wam"
    wam = codec.LoadedModel(config, rich_model.params, {})
    with pytest.raises(ValueError, match=r"^a window-attention \(WAM\) model exports for one"):
        export_xla.export_pieces(wam, symbolic=True)

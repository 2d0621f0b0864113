"""Seamless tiles: g_a and g_s computed tile by tile with halos, the latent coded as one.

One small model (mracnn_jax/configs/small.py, random initialisation, seed 0, exported with ``mracnn export``
and rescaled by conftest's ``make_latents_informative`` so that y carries real symbols) codes a
200x130 image in 64-pixel tiles. The geometry tests need no model. The export itself is
conftest's, shared by every module of a test session.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from mracnn_jax import cli, codec
from mracnn_jax.codec import latents, tiles
from mracnn_jax.coding import container
from mracnn_jax.models import presets

REPO = pathlib.Path(__file__).resolve().parents[1]
HALO = (64, 64)  # the small model: tiles equal one tile up to 2e-3 of y (test below)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return np.inf if mse == 0 else 10 * np.log10(255.0**2 / mse)


# -------------------------------------------------------------------------------------------------
# Fixtures.


@pytest.fixture(scope="module")
def image(request):
    try:
        kodak = request.getfixturevalue("kodak_dir")
        img = np.asarray(Image.open(kodak / "kodim23.png").convert("RGB"))
        return np.ascontiguousarray(img[100:300, 200:330])
    except pytest.skip.Exception:
        yy, xx = np.mgrid[0:200, 0:130]
        rng = np.random.default_rng(1)
        noise = rng.integers(0, 256, xx.shape)
        img = np.stack([(xx * 1.3 + yy) % 256, (yy * 0.9) % 256, noise], -1)
        return img.astype(np.uint8)


@pytest.fixture(scope="module")
def whole(rich_model, image):
    return codec.compress_with_info(image, rich_model, tile=None)


@pytest.fixture(scope="module")
def tiled(rich_model, image):
    return codec.compress_with_info(image, rich_model, tile=64, halo=HALO)


# -------------------------------------------------------------------------------------------------
# Geometry (no model).


@pytest.mark.parametrize("n, tile, halo, align", [(256, 64, 16, 1), (192, 64, 64, 1), (64, 64, 16, 1),
                                                  (640, 512, 64, 1), (4096, 512, 96, 1), (1024, 64, 0, 1),
                                                  (4096, 512, 96, 64), (1024, 64, 16, 64), (96, 32, 1, 4),
                                                  (4096, 512, 96, 128)])  # fmt: skip
def test_spans_partition_the_axis(n, tile, halo, align):
    spans = tiles.spans(n, tile, halo, align)
    lead = -(-halo // align) * align  # the halo rounded up to the alignment
    owned = np.zeros(n, int)
    for s in spans:
        owned[s.own_start : s.own_stop] += 1
        assert s.length == min(tile + 2 * lead, n) and 0 <= s.start <= s.start + s.length <= n
        assert s.start % align == 0  # the window sees the untiled grid of the model's windows
        # the window holds the tile and, on each side inside the canvas, at least the halo
        assert s.start <= max(s.own_start - halo, 0)
        assert s.start + s.length >= min(s.own_stop + halo, n)
    assert owned.min() == owned.max() == 1
    assert len(spans) == -(-n // tile)


def test_alignment_follows_the_window_attention():
    """ELAM models need g_a's stride (16 pixels); WAM cuts a map at stride r into windows of w
    from its origin, so windows must start on multiples of r w: WACNN's 8 at 1/4 and 4 at 1/16
    make 64, a window of 8 at 1/16 128."""
    assert tiles.alignment(presets.mracnn()) == tiles.alignment(presets.wacnn_elam()) == 16
    assert tiles.alignment(presets.wacnn()) == tiles.alignment(presets.wacnn_mracb()) == 64
    cfg = presets.wacnn_mracb()
    cfg.third_elam, cfg.wam.window_n = True, 16  # window 16 at 1/8 in g_s: 128 pixels
    assert tiles.alignment(cfg) == 128
    cfg = presets.wacnn()
    cfg.wam.window_m = 8
    assert tiles.alignment(cfg) == 128
    plan = codec.tile_plan(2000, 3000, 512, (96, 16), tiles.alignment(presets.wacnn()))
    assert plan.describe()["halo_analysis"] == 128 and plan.describe()["halo_synthesis"] == 64
    assert all(r.start % 64 == 0 and c.start % 64 == 0 for r, c in plan.analysis_tiles())
    assert all(r.start % 4 == 0 and c.start % 4 == 0 for r, c in plan.synthesis_tiles())
    assert {r.length for r, _ in plan.analysis_tiles()} == {512 + 2 * 128}
    assert {r.length for r, _ in plan.synthesis_tiles()} == {32 + 2 * 4}
    # The bundled (ELAM) geometry is unchanged: the default halos as given.
    elam = codec.tile_plan(2000, 3000, 512, None, tiles.alignment(presets.mracnn()))
    assert elam.describe()["halo_analysis"] == 96
    assert [r.start for r, _ in elam.analysis_tiles()][::6] == [0, 416, 928, 1344]


def test_plan_windows_are_the_padded_canvas():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (200, 130, 3)).astype(np.uint8)
    plan = codec.tile_plan(200, 130, 64, (32, 16))
    assert plan.canvas == (256, 192) and plan.offset == (28, 31)
    assert plan.describe() == {"tile": 64, "rows": 4, "cols": 3, "halo_analysis": 32,
                               "halo_synthesis": 16}  # fmt: skip
    assert len(plan.synthesis_tiles()) == plan.num_tiles == 12
    canvas = np.pad(img.astype(np.float32) / 255, ((28, 28), (31, 31), (0, 0)))
    for rows, cols in plan.analysis_tiles():
        x = plan.window(img, rows, cols)
        assert x.shape == (1, 128, 128, 3) and x.dtype == np.float32
        win = canvas[rows.start : rows.start + rows.length, cols.start : cols.start + cols.length]
        np.testing.assert_array_equal(x[0], win)
    one = codec.tile_plan(200, 130, None)
    assert one.num_tiles == 1 and one.analysis_tiles()[0][0].length == 256


def test_auto_tiles_only_large_images():
    assert codec.tile_plan(1000, 1000).tile is None
    assert codec.tile_plan(2000, 2000).tile == codec.DEFAULT_TILE
    assert codec.tile_plan(2000, 2000, None).tile is None


@pytest.mark.parametrize("bad", [0, 100, -64, 63, 65536, "big", 64.0])
def test_bad_tile_sizes(bad):
    with pytest.raises(codec.CodecError) as e:
        codec.tile_plan(100, 100, bad)
    assert "\n" not in str(e.value)
    with pytest.raises(codec.CodecError, match="halo"):
        codec.tile_plan(100, 100, 64, (8, 0))


@pytest.mark.parametrize("halo", [(96,), (96, 64, 0), [96, 64, 64], 96, "96,64", (-16, 0),
                                  (96, 8), (96, 64.0), (True, 64), (4112, 0)])  # fmt: skip
def test_bad_halos(halo):
    """A halo is exactly two integers (analysis, synthesis), multiples of 16 in 0..4096."""
    with pytest.raises(codec.CodecError, match="halo") as e:
        codec.tile_plan(100, 100, 64, halo)
    assert "\n" not in str(e.value)


def test_tile_size_must_hold_the_models_windows():
    with pytest.raises(codec.CodecError, match="alignment .*try 128") as e:
        codec.tile_plan(1000, 1000, 64, None, 128)
    assert "\n" not in str(e.value)
    assert codec.tile_plan(1000, 1000, 128, None, 128).describe()["halo_analysis"] == 128


# -------------------------------------------------------------------------------------------------
# Coding.


def test_tiles_compute_the_untiled_latent(rich_model, image):
    """g_a and g_s in tiles with halos agree with the untiled transforms; without halos they do
    not (the check can fail). A random model's influence does not decay with distance as a trained
    one's does, and its saturated outputs amplify what remains, hence bounds far looser than the
    trained model's (``test_bundled_model_tiles_make_the_same_file``)."""
    clock = latents.Clock()
    bar = type("Bar", (), {"update": lambda self, n: None})()
    plan = codec.tile_plan(*image.shape[:2], None)
    y = tiles.analyse(rich_model, image, plan, clock, bar)
    x = tiles.synthesise(rich_model, y, plan, clock, bar).astype(int)
    errors = {}
    for halo in ((0, 0), HALO):
        tiled_plan = codec.tile_plan(*image.shape[:2], 64, halo)
        y_t = tiles.analyse(rich_model, image, tiled_plan, clock, bar)
        x_t = tiles.synthesise(rich_model, y, tiled_plan, clock, bar).astype(int)
        errors[halo] = (np.abs(y_t - y).max() / np.abs(y).max(), _psnr(x_t, x))
    assert errors[(0, 0)][0] > 0.1 and errors[(0, 0)][1] < 30, errors
    assert errors[HALO][0] < 2e-3 and errors[HALO][1] > 40, errors


def test_wacnn_tiles_see_the_untiled_windows():
    """WACNN's window attention partitions each feature map from its origin, so a tile window
    that starts off the model's 64-pixel grid computes other windows than the untiled g_a: with
    the analysis halo 96 (windows at 64k - 96) y differed by 1e-4 of its range, a halo of 16 in
    g_s failed inside jit. Rounded up to the grid, tiled g_a is the untiled g_a to float noise,
    and tiled g_s (on a random model, whose influence does not fade) is within one grey level."""
    model = codec.LoadedModel.from_config(presets.small(presets.wacnn()), seed=0)
    align = tiles.alignment(model.config)
    assert align == 64
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (384, 448, 3)).astype(np.uint8)
    clock = latents.Clock()
    bar = type("Bar", (), {"update": lambda self, n: None})()
    whole = codec.tile_plan(*image.shape[:2], None, None, align)
    y = tiles.analyse(model, image, whole, clock, bar)
    x = tiles.synthesise(model, y, whole, clock, bar).astype(int)
    plan = codec.tile_plan(*image.shape[:2], 64, (96, 16), align)
    assert plan.num_tiles == 42 and {r.start for r, _ in plan.analysis_tiles()} == {0, 64}
    y_t = tiles.analyse(model, image, plan, clock, bar)
    assert np.abs(y_t - y).max() < 1e-5 * np.abs(y).max()
    x_t = tiles.synthesise(model, y, plan, clock, bar).astype(int)
    assert np.abs(x_t - x).max() <= 1


def test_tiled_file_is_the_untiled_file(whole, tiled, rich_model_path, image, monkeypatch, capsys):
    assert tiled.tiling == {"tile": 64, "rows": 4, "cols": 3, "halo_analysis": 64,
                            "halo_synthesis": 64}  # fmt: skip
    assert whole.tiling is None and tiled.bits["tiles"] == 12
    assert np.abs(whole.y_symbols).max() > 5  # real symbols were coded
    # One latent, the same integers (up to a float-noise flip), the same file.
    assert np.mean(tiled.y_symbols != whole.y_symbols) <= 1e-4
    assert abs(len(tiled.data) - len(whole.data)) <= 0.005 * len(whole.data)
    # A separately loaded model decodes in tiles exactly what the tiled encoder predicted.
    monkeypatch.setattr(codec.image_codec, "PROGRESS_DELAY_S", 0.0)
    other = codec.LoadedModel.load(rich_model_path)
    out = codec.decompress_with_info(tiled.data, other, tile=64, halo=HALO, progress=True)
    assert "mracnn decompress" in capsys.readouterr().err  # the progress bar over tiles
    np.testing.assert_array_equal(out.image, tiled.reconstruction)
    for name in ("z_symbols", "y_symbols", "z_hat", "y_tilde", "y_hat", "scale_indexes"):
        assert getattr(out, name).tobytes() == getattr(tiled, name).tobytes(), name
    # Any tile size decodes any file: the untiled decode, up to the random model's halo error.
    untiled = codec.decompress(tiled.data, other, tile=None)
    assert _psnr(untiled, out.image) > 40


def test_grayscale_and_compress_bytes(rich_model, image):
    gray = np.ascontiguousarray(image[:, :, 1])
    r = codec.compress_with_info(gray, rich_model, tile=64, halo=(64, 32))
    decoded = codec.decompress(r.data, rich_model, tile=64, halo=(64, 32))
    assert decoded.shape == gray.shape and decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded, r.reconstruction)
    # compress() skips the encoder's prediction but writes the same bytes.
    assert codec.compress(gray, rich_model, tile=64, halo=(64, 32)) == r.data


def test_tiled_file_survives_a_perturbed_decoder(tiled, rich_model):
    """The portability contract with g_s in tiles: relative noise 1e-4 on the decoder-side
    entropy parameters, the same integers, the image up to float noise."""
    from mracnn_jax.coding import perturbation

    perturbed = perturbation.perturbed(rich_model, 1e-4, seed=5)
    r = codec.decompress_with_info(tiled.data, perturbed, tile=64)
    np.testing.assert_array_equal(r.y_symbols, tiled.y_symbols)
    np.testing.assert_array_equal(r.z_symbols, tiled.z_symbols)
    assert _psnr(r.image, tiled.reconstruction) > 40


@pytest.mark.slow
def test_bundled_model_tiles_make_the_same_file(kodak_dir):
    """A trained model with the default halos: g_a in 64-pixel tiles gives the file of g_a in one
    piece, byte for byte, and g_s in tiles the same image within one grey level (no seams)."""
    from mracnn_jax import zoo

    rich_model = codec.LoadedModel.load(zoo.by_quality(1).path)
    image = np.asarray(Image.open(kodak_dir / "kodim05.png").convert("RGB"))[:192, :320]
    one = codec.compress_with_info(image, rich_model, tile=None)
    tiled = codec.compress_with_info(image, rich_model, tile=64)
    assert tiled.tiling["rows"] * tiled.tiling["cols"] == 15
    assert tiled.data == one.data
    np.testing.assert_array_equal(tiled.y_symbols, one.y_symbols)
    assert np.abs(tiled.reconstruction.astype(int) - one.reconstruction).max() <= 1


# -------------------------------------------------------------------------------------------------
# Command line.


def test_cli_tile_flags(rich_model, rich_model_path, image, whole, tmp_path, monkeypatch, capsys):
    src, out = tmp_path / "in.png", tmp_path / "out.mrac"
    Image.fromarray(image).save(src)
    base = ["compress", str(src), str(out), "--model", str(rich_model_path)]

    assert cli.main(base + ["--tile", "100"]) == 1
    err = capsys.readouterr().err
    assert "tile size 100 is not a positive multiple of 64" in err and len(err.splitlines()) == 1
    assert not out.exists()
    with pytest.raises(SystemExit) as e:
        cli.main(base + ["--tile", "64", "--no-tile"])
    assert e.value.code == 2
    capsys.readouterr()

    assert cli.main(base + ["--tile", "64"]) == 0
    assert "computed in 4x3 tiles of 64" in capsys.readouterr().out
    tiled_bytes = out.read_bytes()
    assert container.unpack(tiled_bytes).version == container.VERSION
    assert cli.main(base + ["--no-tile"]) == 0
    assert "tiles" not in capsys.readouterr().out
    assert abs(len(out.read_bytes()) - len(tiled_bytes)) <= 0.005 * len(tiled_bytes)

    # Automatic: above the threshold the transforms run in tiles.
    monkeypatch.setattr(tiles, "AUTO_TILE_PIXELS", 100 * 100)
    monkeypatch.setattr(tiles, "DEFAULT_TILE", 128)
    assert cli.main(base) == 0
    assert "computed in 2x2 tiles of 128" in capsys.readouterr().out

    png = tmp_path / "out.png"
    assert (
        cli.main(
            ["decompress", str(out), str(png), "--model", str(rich_model_path), "--tile", "64"]
        )
        == 0
    )
    assert "computed in 4x3 tiles of 64" in capsys.readouterr().out
    expected = codec.decompress(out.read_bytes(), rich_model, tile=64)
    np.testing.assert_array_equal(np.asarray(Image.open(png)), expected)


@pytest.mark.slow
def test_fresh_process_decodes_in_tiles(rich_model_path, cache_dir, tmp_path, tiled):
    """Another process (compiled anew, or from the persistent cache) decodes the same image."""
    (tmp_path / "t.mrac").write_bytes(tiled.data)
    np.save(tmp_path / "pred.npy", tiled.reconstruction)
    code = (
        "import sys, numpy as np; from mracnn_jax import codec;"
        f"codec.enable_compilation_cache({str(cache_dir)!r});"
        f"m = codec.LoadedModel.load({str(rich_model_path)!r});"
        f"img = codec.decompress(open({str(tmp_path / 't.mrac')!r}, 'rb').read(), m, tile=64);"
        f"sys.exit(0 if np.array_equal(img, np.load({str(tmp_path / 'pred.npy')!r})) else 3)"
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=300, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]

"""Tiled coding: version-4 .mrac files, tile geometry, the CLI's tiling flags.

One small model (configs/small.py, random initialisation, seed 0, exported with ``mracnn export``
and rescaled by conftest's ``make_latents_informative`` so that y carries real symbols) codes
200x130 images in 64-pixel tiles. Most tests use no halo (the default), whose network shapes (64x64 tiles) are also
those of the 40x50 untiled (version-3) image, so the file compiles two shape sets in all: that one
and the one with halos (64 pixels for g_a, 32 for g_s). The export itself is conftest's, shared
by every module of a test session (its eager initialisation alone takes about half a minute on a
2-core machine).
"""

from __future__ import annotations

import os
import pathlib
import struct
import subprocess
import sys
import zlib

import jax
import numpy as np
import pytest
from PIL import Image

from mracnn_jax import cli, codec
from mracnn_jax.coding import container, tiling
from mracnn_jax.coding.container import Bitstream, ContainerError, TileCode, Tiling

REPO = pathlib.Path(__file__).resolve().parents[1]
NO_HALO = (0, 0)


# -------------------------------------------------------------------------------------------------
# Fixtures.


@pytest.fixture(scope="module")
def model_path(exported, tmp_path_factory, make_latents_informative):
    base = codec.LoadedModel.load(exported)
    params = make_latents_informative(base.params)
    rich = codec.LoadedModel(base.config, params, {"test": "rescaled"})
    path = tmp_path_factory.mktemp("models") / "rich.mracnn"
    rich.save(path)
    return path


@pytest.fixture(scope="module")
def model(model_path):
    return codec.LoadedModel.load(model_path)


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
def tiled(model, image):
    return codec.compress_with_info(image, model, tile=64, halo=NO_HALO)


# -------------------------------------------------------------------------------------------------
# Geometry (no model).


@pytest.mark.parametrize(
    "h, w, tile, grid, tile_shape",
    [
        (200, 130, 64, (4, 3), (64, 64)),
        (200, 130, 128, (2, 2), (128, 128)),
        (200, 130, 512, (1, 1), (256, 192)),  # a small image is not padded beyond 64
        (4096, 4096, 512, (8, 8), (512, 512)),
        (1, 1, 64, (1, 1), (64, 64)),
        (65, 3000, 256, (1, 12), (128, 256)),
    ],
)
def test_grid(h, w, tile, grid, tile_shape):
    g = tiling.TileGrid(h, w, tile, 64, 32)
    assert g.shape == grid and g.tile_shape == tile_shape
    assert g.num_tiles == grid[0] * grid[1] == len(list(g.tiles()))
    ch, cw = g.canvas
    assert ch >= h and cw >= w and ch % 64 == 0 and cw % 64 == 0


def test_windows_cover_the_image_once():
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (200, 130, 3)).astype(np.uint8)
    for halo in (0, 16, 64):
        g = tiling.TileGrid(200, 130, 64, halo, halo)
        th, tw = g.tile_shape
        out = np.zeros_like(img)
        count = np.zeros(img.shape[:2], int)
        for r, c in g.tiles():
            x = g.analysis_input(img, r, c)[0]
            assert x.shape == (th + 2 * halo, tw + 2 * halo, 3) and x.dtype == np.float32
            # With equal halos, pasting the analysis window back writes the tile's own pixels.
            g.paste(out, np.round(x * 255).astype(np.uint8), r, c)
            mark = np.zeros_like(img)
            g.paste(mark, np.ones(x.shape, np.uint8), r, c)
            count += mark[:, :, 0]
        np.testing.assert_array_equal(out, img)
        assert count.min() == count.max() == 1


def test_synthesis_window_takes_the_neighbours():
    g = tiling.TileGrid(200, 130, 64, 0, 32)
    lh, lw = g.latent_shape
    y = np.arange(lh * lw, dtype=np.float32).reshape(1, lh, lw, 1)
    win = g.synthesis_input(y, 1, 1)[0, :, :, 0]
    assert win.shape == (4 + 4, 4 + 4)
    np.testing.assert_array_equal(win, y[0, 2:10, 2:10, 0])  # block (1,1) is rows 4..8, +-2
    corner = g.synthesis_input(y, 0, 0)[0, :, :, 0]
    np.testing.assert_array_equal(corner[2:, 2:], y[0, :6, :6, 0])
    np.testing.assert_array_equal(corner[:2], corner[3:1:-1])  # mirrored beyond the canvas
    np.testing.assert_array_equal(corner[:, :2], corner[:, 3:1:-1])


def test_analysis_window_mirrors_the_canvas():
    img = np.arange(3 * 5 * 3, dtype=np.uint8).reshape(3, 5, 3)
    g = tiling.TileGrid(3, 5, 64, 16, 0)  # one 64x64 tile, the image at (30, 29)
    x = np.round(g.analysis_input(img, 0, 0)[0] * 255).astype(np.uint8)
    assert x.shape == (96, 96, 3) and g.offset == (30, 29)
    np.testing.assert_array_equal(x[16 + 30 : 16 + 33, 16 + 29 : 16 + 34], img)
    assert not x[:46].any() and not x[49:].any()  # zeros of the canvas, mirrored
    with pytest.raises(ValueError, match="wider than"):
        tiling.TileGrid(3, 5, 64, 128, 0)


@pytest.mark.parametrize("bad", [0, 100, -64, 63, 65536])
def test_bad_tile_sizes(bad):
    with pytest.raises(ValueError, match="multiple of 64"):
        tiling.check_tiling(bad)
    with pytest.raises(codec.CodecError, match="multiple of 64"):
        codec.resolve_tiling(bad)
    with pytest.raises(ValueError, match="halo"):
        tiling.check_tiling(64, 8, 0)


# -------------------------------------------------------------------------------------------------
# The version-4 container (no model).


def _tiled_bitstream(h=200, w=130, tile=64, slices=3):
    rows, cols, _, _ = tiling.grid_shape(h, w, tile)
    rng = np.random.default_rng(7)
    tiles = tuple(
        TileCode(
            rng.bytes(int(rng.integers(1, 9))),
            tuple(rng.bytes(int(n)) for n in rng.integers(0, 20, slices)),
        )
        for _ in range(rows * cols)
    )
    return Bitstream(
        height=h, width=w, colour_mode="RGB", model_name="mracnn-small",
        params_digest=bytes(16), symbol_digest=bytes(range(16)), index_digest=bytes(range(16, 32)),
        tiling=Tiling(tile, 64, 32), tiles=tiles,
    )  # fmt: skip


def test_container_v2_layout():
    bs = _tiled_bitstream()
    data = container.pack(bs)
    assert data[4] == 4 and container.unpack(data) == bs
    assert struct.unpack_from("<HHHHH", data, 64) == (64, 64, 32, 4, 3)
    k, s = 12, 3
    lengths = struct.unpack_from(f"<{k * (s + 1)}I", data, 74)
    assert list(lengths[:4]) == [len(bs.tiles[0].z_string), *map(len, bs.tiles[0].y_strings)]
    name_at = 74 + 4 * k * (s + 1)
    assert data[name_at : name_at + 12] == b"mracnn-small"
    assert bs.header_bytes() == 78 + 4 * k * (s + 1) + 12 == len(data) - bs.payload_bytes()
    info = container.describe(bs, len(data))
    assert info["format_version"] == 4
    assert info["tiling"]["rows"] == 4 and info["tiling"]["halo_synthesis"] == 32
    assert info["bits"]["z"] == 8 * sum(len(t.z_string) for t in bs.tiles)


def test_container_v2_defects():
    data = container.pack(_tiled_bitstream())
    for n in range(len(data)):
        with pytest.raises(ContainerError):
            container.unpack(data[:n])
    # A grid that does not match H, W and T, with a valid checksum: written wrongly.
    bad = bytearray(data)
    struct.pack_into("<H", bad, 70, 5)
    bad[-4:] = struct.pack("<I", zlib.crc32(bytes(bad[:-4])))
    with pytest.raises(ContainerError, match="announces|tiles"):
        container.unpack(bytes(bad))
    bad = bytearray(data)
    struct.pack_into("<H", bad, 64, 96)  # tile size not a multiple of 64
    bad[-4:] = struct.pack("<I", zlib.crc32(bytes(bad[:-4])))
    with pytest.raises(ContainerError, match="multiple of 64"):
        container.unpack(bytes(bad))
    with pytest.raises(ValueError, match="grid needs"):
        bs = _tiled_bitstream()
        container.pack(Bitstream(**{**bs.__dict__, "tiles": bs.tiles[:-1]}))


# -------------------------------------------------------------------------------------------------
# Coding.


def test_tiled_round_trip_exact(tiled, model_path, image, monkeypatch, capsys):
    bs = container.unpack(tiled.data)
    assert bs.version == 4 and bs.tiling == Tiling(64, 0, 0)
    assert len(bs.tiles) == 12 and tiled.tiling["rows"] == 4 and tiled.tiling["cols"] == 3
    assert tiled.reconstruction.shape == image.shape
    # A separately loaded model decodes exactly what the encoder predicted, latents bit for bit.
    monkeypatch.setattr(codec, "PROGRESS_DELAY_S", 0.0)
    out = codec.decompress_with_info(tiled.data, codec.LoadedModel.load(model_path), progress=True)
    assert "mracnn decompress" in capsys.readouterr().err  # the progress bar over tiles
    np.testing.assert_array_equal(out.image, tiled.reconstruction)
    for name in ("z_symbols", "y_symbols", "z_hat", "y_tilde", "y_hat"):
        assert getattr(out, name).tobytes() == getattr(tiled, name).tobytes(), name
    assert np.abs(tiled.y_symbols).max() > 5  # real symbols were coded
    # Rate: the payload is the tiles' strings, within a few bytes per string of the tables.
    bits = tiled.bits
    assert bits["file"] == 8 * len(tiled.data) == bits["payload"] + bits["header"]
    strings = len(bs.tiles) * (1 + bs.num_slices)
    assert bits["table"] * 0.999 <= bits["payload"] <= bits["table"] * 1.01 + 8 * 4 * strings
    assert codec.decompress(tiled.data, codec.LoadedModel.load(model_path)).shape == image.shape


def test_halo_grayscale_round_trip(model, image):
    gray = np.ascontiguousarray(image[:, :, 1])
    r = codec.compress_with_info(gray, model, tile=64, halo=(64, 32))
    assert container.unpack(r.data).tiling == Tiling(64, 64, 32)
    decoded = codec.decompress(r.data, model)
    assert decoded.shape == gray.shape and decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded, r.reconstruction)
    # compress() skips the encoder's prediction but writes the same bytes.
    assert codec.compress(gray, model, tile=64, halo=(64, 32)) == r.data


def test_untiled_files_decode(model):
    rng = np.random.default_rng(2)
    img = rng.integers(0, 256, (40, 50, 3)).astype(np.uint8)
    r = codec.compress_with_info(img, model)  # untiled: the version-3 writer
    assert r.data[4] == 3 and r.tiling is None
    bs = container.unpack(r.data)
    assert bs.version == 3 and bs.tiling is None and not bs.tiles
    np.testing.assert_array_equal(codec.decompress(r.data, model), r.reconstruction)
    # The same 64x64 tile as one tile of a version-4 file: same latents, other container.
    t = codec.compress_with_info(img, model, tile=64, halo=NO_HALO)
    assert t.data[4] == 4 and t.y_symbols.tobytes() == r.y_symbols.tobytes()
    np.testing.assert_array_equal(t.reconstruction, r.reconstruction)


def test_guard_covers_tiles(tiled, model):
    params = jax.tree_util.tree_map(np.array, model.params)
    params["entropy"]["cc_scale_0"]["conv_2"]["bias"] += np.float32(1.0)
    other = codec.LoadedModel(model.config, params)
    with pytest.raises(codec.ModelMismatchError):
        codec.decompress(tiled.data, other)
    with pytest.raises(codec.LatentMismatchError) as e:
        codec.decompress_with_info(tiled.data, other, check_model=False)
    assert "\n" not in str(e.value)
    # Tiles swapped (CRC recomputed): the decoder's latents are in another order.
    bs = container.unpack(tiled.data)
    swapped = Bitstream(**{**bs.__dict__, "tiles": (bs.tiles[1], bs.tiles[0], *bs.tiles[2:])})
    with pytest.raises(codec.LatentMismatchError):
        codec.decompress(container.pack(swapped), model)


def test_tiled_file_survives_a_perturbed_decoder(tiled, model):
    """The portability contract on a tiled file: relative noise 1e-4 on every tile's decoder-side
    entropy parameters, the same integers, the image up to float noise."""
    from mracnn_jax.coding import perturbation

    r = codec.decompress_with_info(tiled.data, perturbation.perturbed(model, 1e-4, seed=5))
    np.testing.assert_array_equal(r.y_symbols, tiled.y_symbols)
    np.testing.assert_array_equal(r.z_symbols, tiled.z_symbols)
    assert np.abs(r.image.astype(int) - tiled.reconstruction.astype(int)).max() <= 2


# -------------------------------------------------------------------------------------------------
# Command line.


def test_cli_tiling_flags(model, model_path, image, tmp_path, monkeypatch, capsys):
    src, out = tmp_path / "in.png", tmp_path / "out.mrac"
    Image.fromarray(image).save(src)
    small = tmp_path / "small.png"
    noise = np.random.default_rng(2).integers(0, 256, (40, 50, 3)).astype(np.uint8)
    Image.fromarray(noise).save(small)
    base = ["compress", str(src), str(out), "--model", str(model_path)]

    assert cli.main(base + ["--tile", "100"]) == 1
    err = capsys.readouterr().err
    assert "tile size 100 is not a positive multiple of 64" in err and len(err.splitlines()) == 1
    assert not out.exists()
    with pytest.raises(SystemExit) as e:
        cli.main(base + ["--tile", "64", "--no-tile"])
    assert e.value.code == 2
    capsys.readouterr()

    assert cli.main(base + ["--tile", "64"]) == 0
    assert "4x3 tiles of 64" in capsys.readouterr().out
    bs = container.unpack(out.read_bytes())
    assert bs.version == 4 and bs.tiling == Tiling(64, *codec.DEFAULT_HALO) and len(bs.tiles) == 12

    # Automatic: above the threshold it tiles and says so; --no-tile refuses.
    monkeypatch.setattr(codec, "AUTO_TILE_PIXELS", 100 * 100)
    monkeypatch.setattr(codec, "DEFAULT_TILE", 64)
    assert cli.main(base) == 0
    err = capsys.readouterr().err
    assert "200x130 image is above 10000 pixels" in err and "--no-tile" in err
    assert container.unpack(out.read_bytes()).tiling.tile == 64
    small_base = ["compress", str(small), str(out), "--model", str(model_path)]
    assert cli.main(small_base + ["--no-tile"]) == 0
    assert "tiles" not in capsys.readouterr().err and out.read_bytes()[4] == 3
    monkeypatch.setattr(codec, "AUTO_TILE_PIXELS", 4096)  # 40x50 = 2000: not tiled
    assert cli.main(small_base) == 0
    assert capsys.readouterr().err == "" and out.read_bytes()[4] == 3

    # decompress and info read version 4.
    assert cli.main(base + ["--tile", "64"]) == 0
    png = tmp_path / "out.png"
    assert cli.main(["decompress", str(out), str(png), "--model", str(model_path)]) == 0
    assert "12 tiles of 64" in capsys.readouterr().out
    expected = codec.decompress(out.read_bytes(), model)
    np.testing.assert_array_equal(np.asarray(Image.open(png)), expected)
    assert cli.main(["info", str(out)]) == 0
    assert '"tiling": {' in capsys.readouterr().out


@pytest.mark.slow
def test_fresh_process_decodes_tiled_file(model_path, cache_dir, tmp_path, tiled):
    """Another process (compiled anew, or from the persistent cache) decodes the same image."""
    (tmp_path / "t.mrac").write_bytes(tiled.data)
    np.save(tmp_path / "pred.npy", tiled.reconstruction)
    code = (
        "import sys, numpy as np; from mracnn_jax import codec;"
        f"codec.enable_compilation_cache({str(cache_dir)!r});"
        f"m = codec.LoadedModel.load({str(model_path)!r});"
        f"img = codec.decompress(open({str(tmp_path / 't.mrac')!r}, 'rb').read(), m);"
        f"sys.exit(0 if np.array_equal(img, np.load({str(tmp_path / 'pred.npy')!r})) else 3)"
    )
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                          cwd=REPO, timeout=300, check=False)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]

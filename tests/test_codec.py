"""End-to-end codec tests: real bitstreams (mracnn_jax.codec, cli), in both environments.

One small model (mracnn_jax/configs/small.py's ``presets.small()``, random initialisation, seed 0) serves
every test. A random model codes almost everything to zero (y is tiny and sigma sits at the table's
floor), which would leave the y coder untested, so the fixture scales g_a's last convolution by 30
and adds 3 to the last bias of every cc_scale: y then spreads over about +-20 with sigma ~ 3
(scale index ~27), some values escape the tables, and the rates are those of a real codec
(~4 bits per y element).

Four padded shapes are compiled once per session (1x1 -> 64x64, 17x300 -> 64x320, 100x37 ->
128x64, a 256x256 Kodak crop); every other test reuses them. A persistent compilation cache in
a temporary directory lets the fresh decoding process load the executables instead of compiling.
"""

from __future__ import annotations

import json
import os
import pathlib
import struct
import subprocess
import sys
import time
import zlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from mracnn_jax import cli, codec, model_file, zoo
from mracnn_jax import images as image_io
from mracnn_jax.coding import container
from mracnn_jax.models import presets

REPO = pathlib.Path(__file__).resolve().parents[1]
SIZES = {"tiny": (1, 1), "wide": (17, 300), "tall": (100, 37), "kodak": (256, 256)}


def _run(args, timeout=300, **kw):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    return subprocess.run(
        [sys.executable, *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=REPO,
        env=env,
        **kw,
    )


def _cli(*args, timeout=120):
    return _run(["-m", "mracnn_jax.cli", *map(str, args)], timeout=timeout)


def _one_line_error(proc):
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-2000:])
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("mracnn: error: "), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    return lines[0]


# -------------------------------------------------------------------------------------------------
# Fixtures (module scope: every network piece is compiled once).


@pytest.fixture(scope="module")
def base_model(exported):
    return codec.LoadedModel.load(exported)


@pytest.fixture(scope="module")
def model(base_model, make_latents_informative):
    params = make_latents_informative(base_model.params)
    return codec.LoadedModel(base_model.config, params, {"test": "rescaled"})


@pytest.fixture(scope="module")
def model_files(tmp_path_factory, model, base_model):
    d = tmp_path_factory.mktemp("models")
    assert model.save(d / "rich.mracnn") == model.params_digest
    base_model.save(d / "base.mracnn")
    return {"rich": d / "rich.mracnn", "base": d / "base.mracnn"}


@pytest.fixture(scope="module")
def images(request):
    try:
        kodak = request.getfixturevalue("kodak_dir")
        img = np.asarray(Image.open(kodak / "kodim23.png").convert("RGB"))
    except pytest.skip.Exception:  # no Kodak here: a synthetic photograph-like image
        yy, xx = np.mgrid[0:512, 0:768]
        rng = np.random.default_rng(1)
        img = np.stack(
            [(xx * 0.3 + yy * 0.1) % 256, (yy * 0.4) % 256, rng.integers(0, 256, xx.shape)], -1
        )
        img = img.astype(np.uint8)
    rng = np.random.default_rng(0)
    tall = img[200:300, 400:437]
    return {
        "tiny": rng.integers(0, 256, (1, 1, 3)).astype(np.uint8),
        "wide": img[100:117, 200:500],
        "tall": (tall.astype(np.float64) @ [0.299, 0.587, 0.114]).round().astype(np.uint8),  # L
        "kodak": img[128:384, 256:512],
    }


@pytest.fixture(scope="module")
def encoded(model, images):
    return {key: codec.compress_with_info(img, model) for key, img in images.items()}


# -------------------------------------------------------------------------------------------------
# Tables against the JAX densities.


def test_z_tables_match_jax_prior(model):
    zc = model.z_coder()
    minima = zc.table.cdf_offset
    lengths = zc.table.num_bins - 1  # symbols, without the escape bin
    width = int(lengths.max())
    grid = np.arange(width, dtype=np.float32)[:, None] + minima[None, :] + model.offsets[None, :]
    p_jax = np.asarray(
        model.module.apply(
            {"params": model.params}, jnp.asarray(grid), method=lambda m, z: m.z_likelihood(z)
        ),
        np.float64,
    )
    for c in range(zc.channels):
        q = zc.table.pmf(c)
        assert len(q) == lengths[c] + 1  # symbols, then the escape bin
        p = p_jax[: lengths[c], c]
        assert np.all(np.abs(q[:-1] - p) <= 2.0**-11 + 0.02 * p), c
        kl = np.sum(p * np.log2(np.maximum(p, 1e-12) / q[:-1]))
        assert kl < 5e-3, (c, kl)
        assert abs(q[-1] - max(1 - p.sum(), 0)) < 2.0**-10  # escape mass ~ the tails
    # The coder transmits round(z - m) with m the model's offsets (the medians).
    medians = model.module.apply({"params": model.params}, method=lambda m: m.z_offsets())
    np.testing.assert_array_equal(model.offsets, np.asarray(medians, np.float32))


def test_y_tables_match_jax_gaussian():
    from mracnn_jax.coding import coders
    from mracnn_jax.entropy import gaussian

    yc = coders.y_coder()
    num_bins = yc.table.num_bins  # symbols + escape, per scale index
    width = int(num_bins.max()) - 1
    s = yc.table.cdf_offset[:, None] + np.arange(width)[None, :]
    sigma = np.broadcast_to(gaussian.scale_table()[:, None], s.shape)
    p_all = np.asarray(
        gaussian.gaussian_likelihood(
            jnp.asarray(s, jnp.float32), jnp.float32(0), jnp.asarray(sigma, jnp.float32)
        ),
        np.float64,
    )
    for k in range(gaussian.NUM_SCALES):
        q = yc.table.pmf(k)
        p = p_all[k, : num_bins[k] - 1]
        assert np.all(np.abs(q[:-1] - p) <= 2.0**-11 + 0.02 * p), k
        # 12-bit tables give every bin at least 2^-12: the widest scales (sigma ~ 256, ~1500
        # bins) pay up to ~0.06 bits per symbol for it (0.6 % of their ~10 bits).
        kl = np.sum(p * np.log2(np.maximum(p, 1e-12) / q[:-1]))
        entropy = -np.sum(p * np.log2(np.maximum(p, 1e-300)))
        assert kl < 0.01 * max(entropy, 1.0), (k, kl, entropy)


def test_coders_escape_extreme_values(model):
    from mracnn_jax.coding import coders

    rng = np.random.default_rng(0)
    zc = model.z_coder()
    z = rng.integers(-3, 4, (1, 2, 3, zc.channels)).astype(np.int32)
    z[0, 0, 0, :4] = [100_000, -100_000, 5000, -77]
    np.testing.assert_array_equal(zc.decompress(zc.compress(z), (2, 3)), z)
    yc = coders.y_coder()
    idx = rng.integers(0, 64, (1, 3, 2, 8))
    y = rng.integers(-30, 31, idx.shape).astype(np.int32)
    y[0, 0, 0, :3] = [1_000_000, -1_000_000, 0]
    string = yc.compress(y, idx)
    np.testing.assert_array_equal(yc.decompress(string, idx), y)
    # The ideal code length counts the escapes; the coder is within a few bytes of it.
    assert abs(8 * len(string) - yc.table_bits(y, idx)) < 40


# -------------------------------------------------------------------------------------------------
# Exact round trip in a fresh process.

_DECODE = r"""
import sys
import numpy as np
from mracnn_jax import cli, codec
cache, model_path, png_job, *jobs = sys.argv[1:]
codec.enable_compilation_cache(cache)
model = codec.LoadedModel.load(model_path)
for job in jobs:
    src, dst = job.split("=")
    with open(src, "rb") as f:
        r = codec.decompress_with_info(f.read(), model)
    np.savez(dst, image=r.image, y_tilde=r.y_tilde, y_hat=r.y_hat, z_hat=r.z_hat,
             y_symbols=r.y_symbols, z_symbols=r.z_symbols)
src, dst = png_job.split("=")
sys.exit(cli.main(["decompress", src, dst, "--model", model_path, "--cache-dir", cache]))
"""


def test_round_trip_in_fresh_process(encoded, images, model_files, cache_dir, tmp_path):
    jobs = []
    for key, result in encoded.items():
        (tmp_path / f"{key}.mrac").write_bytes(result.data)
        jobs.append(f"{tmp_path / key}.mrac={tmp_path / key}.npz")
    png_job = f"{tmp_path / 'wide'}.mrac={tmp_path / 'wide'}.png"
    proc = _run(
        ["-c", _DECODE, str(cache_dir), str(model_files["rich"]), png_job, *jobs], timeout=600
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    for key, result in encoded.items():
        h, w = SIZES[key]
        out = np.load(tmp_path / f"{key}.npz")
        assert out["image"].shape == images[key].shape == ((h, w) if key == "tall" else (h, w, 3))
        np.testing.assert_array_equal(out["image"], result.reconstruction)
        np.testing.assert_array_equal(out["z_symbols"], result.z_symbols)
        np.testing.assert_array_equal(out["y_symbols"], result.y_symbols)
        for name in ("z_hat", "y_tilde", "y_hat"):  # bit for bit
            assert out[name].tobytes() == getattr(result, name).tobytes(), (key, name)
    png = np.asarray(Image.open(tmp_path / "wide.png"))
    np.testing.assert_array_equal(png, encoded["wide"].reconstruction)
    # y is not trivially zero: the round trip exercised real symbols and escapes.
    kodak = encoded["kodak"]
    assert np.abs(kodak.y_symbols).mean() > 1 and np.abs(kodak.y_symbols).max() > 10
    assert len(np.unique(kodak.scale_indexes)) > 1


def test_coder_agrees_with_inference_forward_pass(model, images, encoded):
    """Trap 2: the transmitted z^ and y^ are those of model.apply(x, train=False)."""
    from mracnn_jax.models.padding import pad_to_multiple

    result = encoded["tiny"]
    x = pad_to_multiple(jnp.asarray(images["tiny"][None], jnp.float32) / 255.0)

    def forward(p, x):
        out = model.module.apply({"params": p}, x, train=False)
        return out["z_hat"], out["y_hat"], out["likelihoods"]

    z_hat, y_hat, lik = jax.jit(forward)(model.params, x)
    z_sym = np.round(np.asarray(z_hat) - model.offsets)
    np.testing.assert_array_equal(z_sym, result.z_symbols)
    np.testing.assert_allclose(np.asarray(z_hat), result.z_hat, rtol=0, atol=1e-5)
    np.testing.assert_allclose(np.asarray(y_hat), result.y_hat, rtol=0, atol=1e-4)
    # The model's estimate (unsnapped sigma) is close to the ideal code length under the tables.
    model_bits = sum(float(np.sum(-np.log2(np.asarray(v)))) for v in lik.values())
    assert abs(model_bits - result.bits["table"]) < 0.05 * result.bits["table"]


def test_rate_matches_coding_tables(encoded):
    bits = encoded["kodak"].bits
    coded, table = bits["payload"] - bits["agreement"], bits["table"]
    print(f"256x256: range-coded {coded} bits, tables {table:.1f} bits, ratio {coded / table:.5f}")
    assert table > 10_000  # a real rate, not a file of zeros
    assert table * 0.999 <= coded <= table * 1.005
    # The scale-index agreement costs about a bit per ambiguous index: well under 1 %.
    assert 0 < bits["agreement"] < 0.01 * bits["payload"]
    assert bits["file"] == bits["payload"] + bits["header"]
    assert bits["header"] == 8 * (container.FIXED_OVERHEAD + 4 * 5 + len("mracnn-small"))


def test_no_recompilation_at_the_same_padded_size(model, encoded, images):
    before = model.compilations()
    per_piece = model.pieces.compilations()
    assert per_piece["analysis"] >= 4 and before > 0
    for img in (images["tiny"], np.zeros((64, 64, 3), np.uint8), np.full((50, 3), 7, np.uint8)):
        data = codec.compress(img, model)
        codec.decompress(data, model)
    assert model.compilations() == before
    # A second model of the same architecture shares the compiled pieces.
    other = codec.LoadedModel(model.config, model.params)
    assert other.pieces is model.pieces


# -------------------------------------------------------------------------------------------------
# The guard, bad files, bad images.


def test_compress_runs_no_synthesis_and_writes_the_same_bytes(model, images):
    # 1x130 pads to a 64x192 canvas that no other test of this module codes.
    img = images["wide"][:1, :130]
    before = model.pieces.compilations()
    data = codec.compress(img, model)
    after = model.pieces.compilations()
    assert after["analysis"] == before["analysis"] + 1  # a new padded shape was compiled...
    assert after["synthesis"] == before["synthesis"]  # ...but the synthesis never ran
    predicted = codec.compress_with_info(img, model, reconstruct=True)
    assert predicted.data == data
    np.testing.assert_array_equal(codec.decompress(data, model), predicted.reconstruction)


def test_guard_perturbed_parameters(model, encoded):
    rng = np.random.default_rng(0)
    perturbed = jax.tree_util.tree_map(
        lambda a: np.asarray(a) * (1 + 1e-3 * rng.standard_normal(np.shape(a))).astype(np.float32),
        model.params,
    )
    other = codec.LoadedModel(model.config, perturbed)
    data = encoded["kodak"].data
    with pytest.raises(codec.ModelMismatchError, match="written by model"):
        codec.decompress(data, other)
    t = time.perf_counter()
    with pytest.raises(codec.LatentMismatchError) as e:
        codec.decompress_with_info(data, other, check_model=False)
    assert "\n" not in str(e.value) and time.perf_counter() - t < 60
    # The decoder's scales moved far beyond the tolerance: an error, never a wrong image.
    params = jax.tree_util.tree_map(np.array, model.params)
    params["entropy"]["cc_scale_0"]["conv_2"]["bias"] += np.float32(1.0)
    with pytest.raises(codec.LatentMismatchError):
        codec.decompress_with_info(data, codec.LoadedModel(model.config, params), check_model=False)
    # The decoder's means moved a little (another machine's float noise, much enlarged): the
    # same integers, and an image that differs by float noise only.
    params = jax.tree_util.tree_map(np.array, model.params)
    params["entropy"]["cc_mean_0"]["conv_2"]["bias"] += np.float32(1e-4)
    r = codec.decompress_with_info(data, codec.LoadedModel(model.config, params), check_model=False)
    np.testing.assert_array_equal(r.y_symbols, encoded["kodak"].y_symbols)
    assert np.abs(r.image.astype(int) - encoded["kodak"].reconstruction).max() <= 1


def test_perturbed_decoder_gives_the_same_integers(model, encoded):
    """The portability contract on the rich model: the decoder's mu, sigma, h_s outputs and LRP
    outputs carry relative noise 1e-4; every file still decodes to the encoder's integers."""
    from mracnn_jax.coding import perturbation

    for key, result in encoded.items():
        for seed in range(2):
            noisy = perturbation.perturbed(model, 1e-4, seed=seed)
            r = codec.decompress_with_info(result.data, noisy)
            np.testing.assert_array_equal(r.y_symbols, result.y_symbols)
            np.testing.assert_array_equal(r.z_symbols, result.z_symbols)
            diff = r.image.astype(float) - result.reconstruction.astype(float)
            # Float noise through g_s (this model's y is scaled x30): a few pixel values move by a
            # few levels, the image as a whole stays far above any coding error.
            psnr = 10 * np.log10(255.0**2 / max(np.mean(diff**2), 1e-12))
            assert psnr > 50 and np.abs(diff).mean() < 0.02, (key, psnr, np.abs(diff).max())


def test_fuzzed_files_exact_or_clear_error(model, encoded):
    result = encoded["tiny"]
    data = result.data
    header_end = len(data) - result.bits["payload"] // 8 - 4
    rng = np.random.default_rng(123)
    outcomes = {"exact": 0, "error": 0}

    def check(bad: bytes):
        t = time.perf_counter()
        try:
            image = codec.decompress(bad, model)
        except (container.ContainerError, codec.CodecError) as e:
            assert "\n" not in str(e)
            outcomes["error"] += 1
        else:
            np.testing.assert_array_equal(image, result.reconstruction)
            outcomes["exact"] += 1
        assert time.perf_counter() - t < 15

    for n in range(240):
        bad = bytearray(data)
        kind = n % 3
        if kind == 0:
            for _ in range(rng.integers(1, 4)):
                bad[rng.integers(len(bad))] ^= 1 << int(rng.integers(8))
        elif kind == 1:
            del bad[rng.integers(len(bad)) :]
        else:
            pos = rng.integers(len(bad) + 1)
            bad[pos:pos] = rng.bytes(int(rng.integers(1, 6)))
        check(bytes(bad))
    # Past the checksum: payload bytes changed and the CRC recomputed, so the range decoder sees
    # garbage; the latent digests must catch it.
    for _ in range(12):
        bad = bytearray(data)
        bad[rng.integers(header_end, len(data) - 4)] ^= 1 << int(rng.integers(8))
        bad[-4:] = struct.pack("<I", zlib.crc32(bytes(bad[:-4])))
        check(bytes(bad))
    assert outcomes["error"] >= 240


def test_cli_bad_files(encoded, model_files, tmp_path):
    data = encoded["tiny"].data
    flipped = bytearray(data)
    flipped[len(data) - 6] ^= 0x10  # in the payload
    wrong_version = bytearray(data)
    wrong_version[4] = 9
    cases = {
        "empty": (b"", "empty"),
        "magic": (b"\x89PNG\r\n\x1a\n" + data[8:], "not an .mrac file"),
        "version": (bytes(wrong_version), "version 9"),
        "truncated": (data[: len(data) - 7], "truncated"),
        "flipped": (bytes(flipped), "checksum"),
    }
    for name, (content, message) in cases.items():
        src, out = tmp_path / f"{name}.mrac", tmp_path / f"{name}.png"
        src.write_bytes(content)
        line = _one_line_error(_cli("decompress", src, out, "--model", model_files["rich"]))
        assert message in line, (name, line)
        assert not out.exists()
    # Written by another model: refused from the model file's header, before any decoding.
    src, out = tmp_path / "ok.mrac", tmp_path / "other.png"
    src.write_bytes(data)
    line = _one_line_error(_cli("decompress", src, out, "--model", model_files["base"]))
    assert "not the model that wrote this file" in line and not out.exists()
    line = _one_line_error(_cli("decompress", tmp_path / "missing.mrac", out))
    assert "no such file" in line
    info = _cli("info", src)
    assert info.returncode == 0, info.stderr
    summary = json.loads(info.stdout)
    assert summary["model"]["name"] == "mracnn-small" and summary["file_bytes"] == len(data)
    assert summary["header_bytes"] + summary["payload_bytes"] == len(data)


def test_cli_bad_images(model_files, tmp_path):
    out = tmp_path / "out.mrac"
    (tmp_path / "text.png").write_text("not an image\n")
    (tmp_path / "empty.jpg").write_bytes(b"")
    Image.new("RGBA", (8, 8), (1, 2, 3, 4)).save(tmp_path / "alpha.png")
    Image.fromarray(np.ones((8, 8), np.float32), "F").save(tmp_path / "float.tif")
    cases = {
        "text.png": "not an image",
        "empty.jpg": "empty",
        "alpha.png": "alpha",
        "float.tif": "unsupported image mode",
        "missing.png": "no such file",
    }
    for name, message in cases.items():
        line = _one_line_error(
            _cli("compress", tmp_path / name, out, "--model", model_files["rich"])
        )
        assert message in line, (name, line)
        assert not out.exists()
        assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp")]
    line = _one_line_error(_cli("compress", tmp_path / "alpha.png", tmp_path / "no" / "x.mrac"))
    assert "does not exist" in line


def test_image_modes_in_process(model, tmp_path):
    rng = np.random.default_rng(5)
    gray16 = rng.integers(0, 65536, (40, 50)).astype(np.uint16)
    Image.fromarray(gray16).save(tmp_path / "g16.png")
    with pytest.warns(UserWarning, match="16-bit"):
        rgb, mode = image_io.read_image(tmp_path / "g16.png")
    assert mode == "L" and rgb.shape == (40, 50, 3)
    np.testing.assert_array_equal(
        rgb[:, :, 0], ((gray16.astype(np.int64) + 128) // 257).astype(np.uint8)
    )
    result = codec.compress_with_info(Image.fromarray(rgb[:, :, 0], "L"), model)
    image = codec.decompress(result.data, model)
    assert image.shape == (40, 50) and image.dtype == np.uint8
    np.testing.assert_array_equal(image, result.reconstruction)
    palette = Image.fromarray(rng.integers(0, 256, (9, 11, 3)).astype(np.uint8)).convert("P")
    arr, mode = image_io.to_rgb_array(palette)
    assert mode == "RGB" and arr.shape == (9, 11, 3)
    # The codec's refusals are ImageErrors of both modules (and CodecErrors).
    with pytest.raises(codec.ImageError, match="alpha.*flatten"):
        codec.compress(np.zeros((4, 4, 4), np.uint8), model)
    with pytest.raises(image_io.ImageError, match="uint8"):
        codec.compress(np.zeros((4, 4, 3), np.float32), model)
    with pytest.raises(codec.CodecError, match="outside 1..65535"):
        codec.compress(np.zeros((1, 65536), np.uint8), model)


def test_export(exported, base_model):
    header = model_file.read_header(exported)
    assert header["params_digest"] == base_model.params_digest
    assert header["model_config"]["name"] == "mracnn-small"
    assert header["metadata"]["seed"] == 0
    small = presets.small()
    assert (base_model.config.N, base_model.config.M, base_model.config.Z) == (
        small.N,
        small.M,
        small.Z,
    )


def test_cli_bundled_models(model, base_model, tmp_path, monkeypatch, capsys):
    bundled = tmp_path / "bundled"
    bundled.mkdir()
    base_model.save(bundled / "mracnn-small-q1.mracnn")
    model.save(bundled / "mracnn-small-q2.mracnn", {"quality": 2})
    monkeypatch.setattr(zoo, "BUNDLED_DIR", bundled)
    rng = np.random.default_rng(3)
    Image.fromarray(rng.integers(0, 256, (20, 30, 3)).astype(np.uint8)).save(tmp_path / "in.png")
    out, png = tmp_path / "out.mrac", tmp_path / "out.png"
    assert cli.main(["compress", str(tmp_path / "in.png"), str(out), "--quality", "2"]) == 0
    assert cli.main(["decompress", str(out), str(png)]) == 0  # finds the writer by its digest
    np.testing.assert_array_equal(
        np.asarray(Image.open(png)), codec.decompress(out.read_bytes(), model)
    )
    assert cli.main(["compress", str(tmp_path / "in.png"), str(out), "--quality", "7"]) == 1
    assert "no bundled model has quality 7 (bundled: 1, 2)" in capsys.readouterr().err


def test_a_grayscale_model_codes_one_channel(tmp_path):
    """A model with ``channels = 1`` codes an L image as one channel (16-bit too) and gives it back
    as ``[H, W]``; an RGB image is refused in one line."""
    from mracnn_jax.config_files import load_config

    cfg = load_config("small")
    cfg.model.channels = 1
    gray_model = codec.LoadedModel.from_config(cfg, seed=0)
    assert gray_model.channels == 1
    g = (np.arange(64 * 80).reshape(64, 80) % 251).astype(np.uint8)
    r = codec.compress_with_info(g, gray_model)
    assert r.data[5] == 1 and r.y_hat is not None
    decoded = codec.decompress(r.data, gray_model)
    assert decoded.shape == g.shape and decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded, r.reconstruction)
    g16 = g.astype(np.uint16) * 251
    assert codec.decompress(codec.compress(g16, gray_model), gray_model).dtype == np.uint16
    rgb = np.stack([g, g // 2, g // 3], axis=-1)
    with pytest.raises(codec.ImageError, match="codes grayscale images; this one is RGB") as e:
        codec.compress(rgb, gray_model)
    assert "\n" not in str(e.value)

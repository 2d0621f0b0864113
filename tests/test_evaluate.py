"""End-to-end tests of evaluate.py (mracnn_jax.evaluation.runner): real bitstreams on disk, the
rates and qualities it reports, and its result files.

One evaluation serves most tests: two models of mracnn_jax/configs/small.py (the random seed-0 export, and
a copy rescaled so that its latents carry information, as in test_codec) are two points of one
curve, on two Kodak crops of opposite orientation (168x176 and 176x168: one padded shape,
192x192, so the networks compile once; both above MS-SSIM's 161-pixel minimum), with the JPEG
anchor as the BD-rate reference. The tests then read what evaluate.py wrote: file sizes from the
file system, images with Pillow, decoding with the codec.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
import sys
from fractions import Fraction
from pathlib import Path

import numpy as np
import pytest
from load_script import load_script  # a sibling helper module
from PIL import Image

from mracnn_jax import codec, zoo
from mracnn_jax.coding import container
from mracnn_jax.evaluation import bd_rate, inputs, measure, results, runner

REPO = Path(__file__).resolve().parents[1]
KODAK = REPO.parent / "shared" / "data" / "kodak"
CURVE = "mracnn-small"


evaluate = load_script(REPO / "evaluate.py", "evaluate_script")


@pytest.fixture(scope="module")
def model_files(tmp_path_factory, small_model_export, make_latents_informative):
    d = tmp_path_factory.mktemp("models")
    base = d / "small-seed0.mracnn"
    shutil.copyfile(small_model_export, base)  # mracnn export --config small --seed 0
    model = codec.LoadedModel.load(base)
    rich = codec.LoadedModel(model.config, make_latents_informative(model.params), {"lmbda": 0.05})
    rich.save(d / "small-rescaled.mracnn")
    return [base, d / "small-rescaled.mracnn"]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("images")
    if (KODAK / "kodim23.png").exists():
        img = np.asarray(Image.open(KODAK / "kodim23.png").convert("RGB"))
    else:  # a synthetic photograph-like image
        yy, xx = np.mgrid[0:512, 0:768]
        noise = np.random.default_rng(1).integers(0, 256, xx.shape)
        img = np.stack([(xx * 0.3 + yy * 0.1) % 256, (yy * 0.4) % 256, noise], -1).astype(np.uint8)
    Image.fromarray(img[100:268, 200:376]).save(d / "wide.png")  # 168x176
    Image.fromarray(img[200:376, 400:568]).save(d / "tall.png")  # 176x168
    return d


@pytest.fixture(scope="module")
def out_dir(model_files, data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("eval")
    argv = ["--model", *map(str, model_files), "--data", str(data_dir), "--out", str(out)]
    assert evaluate.main([*argv, "--anchors", "jpeg", "--no-progress"]) == 0
    return out


def _rows(out, curve):
    return results.read_records_csv(out / f"{curve}.csv")


def test_bpp_is_file_size_over_original_pixels_exactly(out_dir, data_dir, model_files):
    rows = _rows(out_dir, CURVE)
    assert len(rows) == 2 * 2  # two models x two images
    points = {row["point"] for row in rows}
    assert points == {"small-seed0", "lambda=0.05"}
    seen = set()
    for row in rows:
        point_dir = out_dir / "bitstreams" / CURVE / measure.slug(row["point"])
        path = point_dir / (Path(row["image"]).stem + ".mrac")
        assert Path(row["bitstream"]) == path
        size = os.path.getsize(path)
        with Image.open(data_dir / row["image"]) as im:
            w, h = im.size
        assert (row["height"], row["width"]) == (h, w)
        assert row["num_bytes"] == size
        assert row["bpp"] == 8 * size / (h * w) == float(Fraction(8 * size, h * w))
        assert 0 < row["est_bpp"] < row["bpp"]  # the file adds a header to the coded symbols
        # CompressAI's count: the z and y strings only, without the header and the CRC.
        header = container.unpack(path.read_bytes()).header_bytes()
        assert 0 < header < size
        assert row["payload_bpp"] == 8 * (size - header) / (h * w)
        assert row["payload_bpp"] == float(Fraction(8 * (size - header), h * w))
        assert 0 < row["payload_bpp"] < row["bpp"]
        seen.add(path)
    assert seen == set((out_dir / "bitstreams").rglob("*.mrac"))


def test_written_files_decode_to_the_reported_quality(out_dir, data_dir, model_files):
    # The rescaled model's files (the random one codes nearly nothing); one model load.
    model = codec.LoadedModel.load(model_files[1])
    rows = [r for r in _rows(out_dir, CURVE) if r["model"] == model_files[1].name]
    assert len(rows) == 2
    for row in rows:
        original = np.asarray(Image.open(data_dir / row["image"]).convert("RGB"))
        decoded = codec.decompress(Path(row["bitstream"]).read_bytes(), model)
        assert decoded.shape == original.shape
        mse = np.mean((original.astype(np.float64) - decoded.astype(np.float64)) ** 2)
        assert row["psnr"] == pytest.approx(10 * math.log10(255.0**2 / mse), abs=1e-3)
        assert row["ms_ssim_db"] == pytest.approx(-10 * math.log10(1 - row["ms_ssim"]), rel=1e-9)
        assert row["encode_s"] > 0 and row["decode_s"] > 0


@pytest.mark.parametrize("curve, key", [(CURVE, "point"), ("jpeg", "quality")])
def test_csv_and_json_agree(out_dir, curve, key):
    result = results.read_result_json(out_dir / f"{curve}.json")
    assert result["name"] == curve and result["description"]
    res = result["results"]
    for k in ("psnr-rgb", "ms-ssim-rgb", "bpp", "encoding_time", "decoding_time"):
        assert k in res
    rows = _rows(out_dir, curve)
    assert "payload_bpp" in rows[0] and "payload_bpp" in res
    if curve == CURVE:
        assert all(p < b for p, b in zip(res["payload_bpp"], res["bpp"]))
    else:  # anchors have no header/payload split
        assert all(r["payload_bpp"] == r["bpp"] for r in rows)
    labels = res[key]
    assert sorted(map(str, labels)) == sorted({str(r[key]) for r in rows})
    assert res["bpp"] == sorted(res["bpp"])
    columns = {
        "bpp": "bpp",
        "payload_bpp": "payload_bpp",
        "psnr-rgb": "psnr",
        "ms-ssim-rgb": "ms_ssim",
        "encoding_time": "encode_s",
        "decoding_time": "decode_s",
    }
    if curve == CURVE:
        columns["est_bpp"] = "est_bpp"
    for i, label in enumerate(labels):
        group = [r for r in rows if str(r[key]) == str(label)]
        assert len(group) == 2
        for json_key, column in columns.items():
            assert res[json_key][i] == pytest.approx(np.mean([r[column] for r in group]), rel=1e-12)


def test_summary_bd_rates_and_plot(out_dir):
    summary = (out_dir / "summary.md").read_text()
    curves = [results.read_result_json(out_dir / f"{c}.json") for c in (CURVE, "jpeg")]
    assert "BD-rate against jpeg" in summary
    table = bd_rate.bd_rate_table([curves[0]], curves[1], min_overlap=0.0)[CURVE]
    cells = ["–" if math.isnan(v) else format(v, "+.2f") for v in table.values()]
    assert any(line.startswith(f"| {CURVE} | {cells[0]}") for line in summary.splitlines())
    for point in ("small-seed0", "lambda=0.05"):
        assert f"| {CURVE} | {point} |" in summary
    assert "| bpp | payload bpp |" in summary
    assert (out_dir / "rd.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_an_interrupted_evaluation_resumes_without_coding_finished_images(
    out_dir, model_files, data_dir, tmp_path, monkeypatch
):
    # The state a run killed while journalling its fourth (last) record leaves behind: three
    # complete lines, half of the fourth, every bitstream; moved to another folder.
    out = tmp_path / "moved"
    shutil.copytree(out_dir, out)
    journal_path = out / "completed.jsonl"
    lines = journal_path.read_text().splitlines(keepends=True)
    assert len(lines) == 2 * 2
    last = json.loads(lines[3])
    # The first line as a journal written before payload_bpp existed: filled from the bitstream.
    old = json.loads(lines[0])
    del old["record"]["payload_bpp"]
    lines[0] = json.dumps(old) + "\n"
    journal_path.write_text("".join(lines[:3]) + lines[3][: len(lines[3]) // 2])

    coded = []
    compress = codec.compress_with_info

    def counting_compress(rgb, model, *args, **kwargs):
        coded.append(rgb.shape)
        return compress(rgb, model, *args, **kwargs)

    monkeypatch.setattr(codec, "compress_with_info", counting_compress)
    argv = ["--model", *map(str, model_files), "--data", str(data_dir), "--out", str(out)]
    assert evaluate.main([*argv, "--anchors", "jpeg", "--no-progress"]) == 0
    # Only the unfinished image was coded: a warm-up call on its shape and the timed call.
    with Image.open(data_dir / last["image"]) as im:
        shape = (im.height, im.width, 3)
    assert coded == [shape, shape]
    before, after = _rows(out_dir, CURVE), _rows(out, CURVE)
    assert len(after) == 4
    for a, b in zip(before, after):
        keys = ("point", "image", "num_bytes", "bpp", "payload_bpp", "est_bpp", "psnr", "ms_ssim")
        for key in keys:
            assert a[key] == b[key]
        assert Path(b["bitstream"]).parent.is_relative_to(out)  # the moved folder's files
    summary = (out / "summary.md").read_text()
    assert "2 of 2 images from an earlier run" in summary  # the first model
    assert "1 of 2 images from an earlier run" in summary  # the second
    entries = [json.loads(line) for line in journal_path.read_text().splitlines()]
    assert sorted((e["record"]["model"], e["image"]) for e in entries) == sorted(
        (r["model"], r["image"]) for r in before
    )

    # A bitstream that is gone is coded again; --fresh codes everything again.
    coded.clear()
    os.remove(after[0]["bitstream"])
    assert evaluate.main([*argv, "--no-progress"]) == 0
    with Image.open(data_dir / after[0]["image"]) as im:
        assert coded == [(im.height, im.width, 3)] * 2
    coded.clear()
    assert evaluate.main([*argv, "--no-progress", "--fresh"]) == 0
    assert len(coded) == 1 + 4  # one warm-up (one config, one padded shape), four images
    assert len(journal_path.read_text().splitlines()) == 4


def test_missing_model_folder_is_one_clear_line(tmp_path, data_dir):
    missing = tmp_path / "no_models_here"
    argv = ["--model", str(missing), "--data", str(data_dir), "--out", str(tmp_path / "out")]
    proc = subprocess.run(
        [sys.executable, str(REPO / "evaluate.py"), *argv],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        check=False,
    )
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "no such model file or folder" in lines[0]
    assert str(missing) in lines[0]
    assert not (tmp_path / "out").exists()

    missing.mkdir()
    assert evaluate.main(["--model", str(missing), "--data", str(data_dir)]) == 1


def test_no_bundled_model(tmp_path, data_dir, monkeypatch, capsys):
    monkeypatch.setattr(zoo, "BUNDLED_DIR", tmp_path / "models")
    out = tmp_path / "out"
    assert evaluate.main(["--data", str(data_dir), "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no model is bundled" in err[0] and str(tmp_path / "models") in err[0]
    # Only anchors asked for: that runs without a model.
    argv = ["--data", str(data_dir), "--out", str(out), "--anchors", "jpeg", "--no-progress"]
    assert evaluate.main(argv) == 0
    assert sorted(p.name for p in out.glob("*.json")) == ["jpeg.json"]
    assert json.loads((out / "jpeg.json").read_text())["num_images"] == 2


def test_small_images_have_no_ms_ssim():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)
    y = np.clip(x.astype(int) + rng.integers(-3, 4, x.shape), 0, 255).astype(np.uint8)
    m = measure.score(x, y)
    mse = np.mean((x.astype(float) - y) ** 2)
    assert m["psnr"] == pytest.approx(10 * math.log10(255.0**2 / mse), abs=1e-3)
    assert math.isnan(m["ms_ssim"])


# ------------------------------------------------------------------------------------------------
# Reference curves: --compare, and the published Kodak points only on Kodak. Anchors only (no
# bundled model), so that each run takes a few seconds.


@pytest.fixture
def anchors_only(tmp_path, monkeypatch):
    """No bundled model, and the arguments rd.png was drawn with (plots.plot_rd's)."""
    monkeypatch.setattr(zoo, "BUNDLED_DIR", tmp_path / "no_models")
    drawn = {}
    plot_rd = runner.plots.plot_rd

    def recording_plot_rd(curves, path, **kwargs):
        drawn.update(kwargs, curves=curves)
        return plot_rd(curves, path, **kwargs)

    monkeypatch.setattr(runner.plots, "plot_rd", recording_plot_rd)
    return drawn


def _photo_like(h, w, seed):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:h, 0:w]
    base = np.stack([xx * 200 / w, yy * 200 / h, (xx + yy) * 100 / (h + w)], -1) + 20
    return np.clip(base + rng.normal(0, 12, (h, w, 3)), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def fake_kodak(tmp_path_factory):
    """24 images named and sized as Kodak's (not its pixels)."""
    d = tmp_path_factory.mktemp("fake_kodak")
    for i in range(1, 25):
        h, w = (768, 512) if i in (4, 9, 10) else (512, 768)
        Image.fromarray(_photo_like(h, w, i)).save(d / f"kodim{i:02d}.png", compress_level=1)
    return d


@pytest.fixture(scope="module")
def crops(tmp_path_factory):
    d = tmp_path_factory.mktemp("crops")
    for i in (1, 2):  # under MS-SSIM's 161 pixels: PSNR only, fast
        Image.fromarray(_photo_like(64, 96, i)).save(d / f"kodim{i:02d}.png")
    return d


def _cheap_score(original, decoded):
    """PSNR, and an MS-SSIM that rises with it: cheap on 768x512 images."""
    diff = original.astype(np.float64) - decoded.astype(np.float64)
    p = 10 * np.log10(255.0**2 / np.mean(diff**2, axis=(-3, -2, -1)))
    m = 1.0 - 10.0 ** (-p / 20.0)
    return {"psnr": p, "ms_ssim": m, "ms_ssim_db": -10 * np.log10(1 - m)}


def _published_rows(summary):
    return [line for line in summary.splitlines() if "(published, Kodak)" in line]


@pytest.mark.filterwarnings("ignore:.*under 161 pixels")
def test_published_points_only_on_kodak(anchors_only, fake_kodak, crops, tmp_path, monkeypatch):
    argv = ["--anchors", "jpeg", "--no-progress", "--out", str(tmp_path / "crops")]
    assert evaluate.main([*argv, "--data", str(crops)]) == 0
    summary = (tmp_path / "crops" / "summary.md").read_text()
    assert _published_rows(summary) == [] and anchors_only["published"] == []
    left_out = [line for line in summary.splitlines() if "Kodak points" in line]
    assert len(left_out) == 1 and "left out" in left_out[0] and "2 images" in left_out[0]

    monkeypatch.setattr(measure, "score", _cheap_score)
    argv = ["--anchors", "jpeg", "--no-progress", "--out", str(tmp_path / "kodak")]
    assert evaluate.main([*argv, "--data", str(fake_kodak)]) == 0
    summary = (tmp_path / "kodak" / "summary.md").read_text()
    rows = _published_rows(summary)
    # their points, their BD-rates against jpeg, and their points against jpeg at their rates
    assert len(rows) == 6 + 3 + 2 + 6 + 3
    assert {row.split("|")[1].strip() for row in rows} == {
        "WACNN (published, Kodak)",
        "MRACNN (paper Table 3) (published, Kodak)",
    }
    assert [p["name"] for p in anchors_only["published"]] == ["WACNN", "MRACNN (paper Table 3)"]
    assert "left out" not in summary and "was measured on" not in summary


@pytest.mark.filterwarnings("ignore:.*under 161 pixels")
def test_compare_draws_and_bd_rates_any_curve(anchors_only, crops, tmp_path, capsys):
    vtm = json.loads((results.published_dir() / "vtm.json").read_text())
    res = vtm["results"]
    faster = {  # VTM's quality at 0.9x its rate: BD-rate -10 % on both metrics
        "name": "fake-0.9x",
        "description": "a test curve",
        "results": {**res, "bpp": [0.9 * b for b in res["bpp"]]},
    }
    (tmp_path / "faster.json").write_text(json.dumps(faster))
    psnr_only = {
        "name": "psnr-only",
        "dataset": "CLIC (30 images)",
        "results": {"bpp": [0.9 * b for b in res["bpp"]], "psnr-rgb": res["psnr-rgb"]},
    }
    (tmp_path / "psnr_only.json").write_text(json.dumps(psnr_only))
    out = tmp_path / "out"
    argv = ["--data", str(crops), "--out", str(out), "--anchors", "jpeg", "--no-progress"]
    compared = ["vtm", str(tmp_path / "faster.json"), str(tmp_path / "psnr_only.json")]
    assert evaluate.main([*argv, "--compare", *compared, "--anchor-for-bd", "vtm"]) == 0
    summary = (out / "summary.md").read_text()
    assert "BD-rate against VTM" in summary
    assert "| fake-0.9x | -10.00 | -10.00 |" in summary
    assert "| psnr-only | -10.00 | – |" in summary
    assert any(line.startswith("| jpeg | ") for line in summary.splitlines())
    assert [c["name"] for c in anchors_only["compared"]] == ["VTM", "fake-0.9x", "psnr-only"]
    notes = [line for line in summary.splitlines() if "was measured on" in line]
    assert len(notes) == 2  # VTM (Kodak) and psnr-only (CLIC); fake-0.9x states no data set
    assert "'VTM' was measured on Kodak" in notes[0] and "CLIC (30 images)" in notes[1]
    assert sorted(p.name for p in out.glob("*.json")) == ["jpeg.json"]  # nothing rewritten
    capsys.readouterr()

    # Shipped published points given explicitly are drawn on any data, once.
    assert evaluate.main([*argv, "--compare", "wacnn", "--anchor-for-bd", "none"]) == 0
    assert [c["name"] for c in anchors_only["compared"]] == ["WACNN"]
    assert anchors_only["published"] == []


def test_compare_errors_are_one_line(anchors_only, crops, tmp_path, capsys):
    (tmp_path / "list.json").write_text("[1, 2]")
    (tmp_path / "nopsnr.json").write_text(json.dumps({"name": "x", "results": {"bpp": [0.1]}}))
    (tmp_path / "clash.json").write_text(
        json.dumps({"name": "jpeg", "results": {"bpp": [0.1], "psnr-rgb": [30.0]}})
    )
    argv = ["--data", str(crops), "--out", str(tmp_path / "out"), "--anchors", "jpeg"]
    for name, message in [
        ("missing.json", "no such curve file"),
        ("list.json", "is not a CompressAI results JSON"),
        ("nopsnr.json", "has no bpp and psnr-rgb points"),
        ("clash.json", "has the name of another curve"),
    ]:
        assert evaluate.main([*argv, "--compare", str(tmp_path / name)]) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and message in err[0] and err[0].startswith("evaluate.py: error:")
    assert not (tmp_path / "out").exists()  # refused before any work


def test_a_point_is_labelled_by_lambda_then_quality_then_file_name(small_model_export, tmp_path):
    """A run's export (λ only) and the bundled file made from it (λ and quality) are one point."""
    model = codec.LoadedModel.load(small_model_export)
    metadata = {"run": {"lmbda": 0.013}, "bundled": {"lmbda": 0.013, "quality": 2}}
    metadata |= {"quality-only": {"quality": 3}, "bare": {}}
    for name, meta in metadata.items():
        codec.LoadedModel(model.config, model.params, meta).save(tmp_path / f"{name}.mracnn")
    labels = {}
    for name in metadata:
        (spec,) = inputs.describe_models([tmp_path / f"{name}.mracnn"])
        labels[name] = spec.point
    assert labels == {
        "run": "lambda=0.013",
        "bundled": "lambda=0.013",
        "quality-only": "q3",
        "bare": "bare",
    }

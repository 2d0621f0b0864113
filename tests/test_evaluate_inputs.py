"""The evaluation's inputs name its artefacts apart: two model files of one curve are two points
(two bitstream folders) even when their λ and file names match, two images of one name but
the suffix are refused, and ``--anchor-for-bd`` takes a curve's name in any case.

Model files here are tiny headers-and-one-parameter files (no JAX); the one evaluation runs
anchors only, on two small images.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from load_script import load_script  # a sibling helper module
from PIL import Image

from mracnn_jax import model_file, zoo
from mracnn_jax.evaluation import inputs, measure, results

REPO = Path(__file__).resolve().parents[1]


def _model(path: Path, **metadata) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    params = {"g_a": {"kernel": np.ones((2, 2), np.float32)}}
    model_file.save_model(
        path,
        {"name": "m"},
        params,
        metadata={"loss_metric": "mse", **metadata},
        coding_tables=False,
    )
    return path


def _point_dirs(specs) -> set[Path]:
    return {Path(measure.slug(s.curve)) / measure.slug(s.point) for s in specs}


def test_models_of_one_lambda_and_one_file_name_are_two_points(tmp_path):
    """train.py exports every run as model.mracnn: two runs at one λ are still two points."""
    a = _model(tmp_path / "runA" / "model.mracnn", lmbda=0.013)
    b = _model(tmp_path / "runB" / "model.mracnn", lmbda=0.013)
    specs = inputs.describe_models(inputs.resolve_model_files([a, b]))
    assert [s.point for s in specs] == ["runA/model.mracnn", "runB/model.mracnn"]
    assert len(_point_dirs(specs)) == 2  # bitstreams/<curve>/<point>/ apart, summaries apart
    runs = [{"point": s.point, **dict.fromkeys(measure.MEAN_KEYS, 1.0)} for s in specs]
    assert len(measure.summarize(runs, "point")) == 2

    # Deeper and uneven folders: the paths below the folder the files share.
    c = _model(tmp_path / "sweep" / "lr" / "model.mracnn", lmbda=0.013)
    specs = inputs.describe_models([a, c])
    assert [s.point for s in specs] == ["runA/model.mracnn", "sweep/lr/model.mracnn"]


def test_labels_fall_back_only_as_far_as_needed(tmp_path):
    a = _model(tmp_path / "one" / "model.mracnn", lmbda=0.013)
    b = _model(tmp_path / "two" / "other.mracnn", lmbda=0.013)
    c = _model(tmp_path / "two" / "model.mracnn", lmbda=0.05)
    assert [s.point for s in inputs.describe_models([a, c])] == ["lambda=0.013", "lambda=0.05"]
    assert [s.point for s in inputs.describe_models([a, b])] == ["model", "other"]
    by_curve = inputs.describe_models([a, b], name="one-curve")
    assert {s.curve for s in by_curve} == {"one-curve"}


def test_points_that_would_share_a_folder_are_refused_in_one_line(tmp_path):
    """'a b/m.mracnn' and 'a_b/m.mracnn' would both write bitstreams/<curve>/a_b_m.mracnn/."""
    a = _model(tmp_path / "a b" / "m.mracnn", lmbda=0.013)
    b = _model(tmp_path / "a_b" / "m.mracnn", lmbda=0.013)
    with pytest.raises(inputs.EvaluationError, match="rename one of the files") as e:
        inputs.describe_models([a, b])
    assert "\n" not in str(e.value) and "a b" in str(e.value) and "a_b" in str(e.value)


def test_images_of_one_name_but_the_suffix_are_refused_in_one_line(tmp_path):
    image = np.zeros((8, 8, 3), np.uint8)
    Image.fromarray(image).save(tmp_path / "kodim01.png")
    Image.fromarray(image).save(tmp_path / "kodim02.png")
    names, _ = inputs.load_images(tmp_path)
    assert names == ["kodim01.png", "kodim02.png"]
    Image.fromarray(image).save(tmp_path / "kodim01.jpg")
    with pytest.raises(inputs.EvaluationError, match="kodim01.jpg and kodim01.png") as e:
        inputs.load_images(tmp_path)
    assert "\n" not in str(e.value) and "rename or move one" in str(e.value)


@pytest.fixture
def crops(tmp_path):
    rng = np.random.default_rng(0)
    d = tmp_path / "crops"
    d.mkdir()
    for i in (1, 2):  # under MS-SSIM's 161 pixels: PSNR only, fast
        yy, xx = np.mgrid[0:64, 0:96]
        base = np.stack([xx * 2.0, yy * 3.0, (xx + yy) * 1.5], -1) + 20
        noisy = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
        Image.fromarray(noisy).save(d / f"kodim{i:02d}.png")
    return d


@pytest.mark.filterwarnings("ignore:.*under 161 pixels")
@pytest.mark.parametrize(
    "given, anchor",
    [("JPEG", "jpeg"), ("Vtm", "VTM"), ("MRACNN-Paper-Table3", "MRACNN (paper Table 3)")],
)
def test_anchor_for_bd_in_any_case(crops, tmp_path, monkeypatch, capsys, given, anchor):
    monkeypatch.setattr(zoo, "BUNDLED_DIR", tmp_path / "no_models")
    evaluate = load_script(REPO / "evaluate.py", "evaluate_script")
    out = tmp_path / "out"
    argv = ["--data", str(crops), "--out", str(out), "--anchors", "webp", "--no-progress"]
    compared = ["--compare", "vtm", "mracnn-paper-table3"]
    assert evaluate.main([*argv, *compared, "--anchor-for-bd", given]) == 0
    summary = (out / "summary.md").read_text()
    assert f"BD-rate against {anchor}" in summary and "none computed" not in capsys.readouterr().out
    if anchor == "jpeg":  # the anchor was run for it
        assert results.read_result_json(out / "jpeg.json")["name"] == "jpeg"
    assert json.loads((out / "webp.json").read_text())["name"] == "webp"

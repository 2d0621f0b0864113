"""Encoder-side latent refinement (mracnn_jax.codec.latent_refinement).

The small model with informative latents (conftest's ``rich_model``) with a λ in its metadata
codes a 60x100 crop of kodim23 (padded to 64x128, so the crop to the image matters). Checked:
the loss refinement tracks is the inference forward pass's rate-distortion loss, computed
independently through ``ImageCompressor.__call__``; refinement lowers it and the real file's
ideal code length plus distortion with it; the refined file decodes to the encoder's prediction;
the evaluation journal keeps refined and plain results apart; bad requests are one-line errors.
"""

from __future__ import annotations

import json
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest
from PIL import Image

from mracnn_jax import codec
from mracnn_jax.codec import latent_refinement
from mracnn_jax.models.padding import crop, pad_to_multiple

LMBDA = 0.01


@pytest.fixture(scope="module")
def model(rich_model):
    return codec.LoadedModel(
        rich_model.config, rich_model.params, {"lmbda": LMBDA, "loss_metric": "mse"}
    )


@pytest.fixture(scope="module")
def image(kodak_dir):
    return np.asarray(Image.open(kodak_dir / "kodim23.png").convert("RGB"))[200:260, 300:400]


def _analysis(model, image):
    x = pad_to_multiple(jnp.asarray(image[None], jnp.float32) / 255.0)
    return x, np.asarray(model.analysis(x))


def test_tracked_loss_is_the_inference_forward_pass_loss(model, image):
    x, y0 = _analysis(model, image)
    ref = latent_refinement.refine_latent(model, image, 255, y0, steps=0)
    out = model.module.apply({"params": model.params}, x, train=False)
    x_hat = jnp.clip(crop(out["x_hat"], *image.shape[:2]), 0.0, 1.0)
    bits = sum(float(-jnp.log2(p).sum()) for p in out["likelihoods"].values())
    mse = float(jnp.mean((x_hat - image[None] / 255.0) ** 2))
    expected = bits / (image.shape[0] * image.shape[1]) + LMBDA * 255.0**2 * mse
    assert ref.losses == pytest.approx([expected], rel=1e-5)
    assert ref.best_step == 0 and np.array_equal(ref.y, y0)


def test_refinement_lowers_the_coded_files_rate_distortion_cost(model, image):
    plain = codec.compress_with_info(image, model)
    refined = codec.compress_with_info(image, model, refine_steps=6, refine_learning_rate=0.05)
    ref = refined.refinement
    assert len(ref.losses) == 7 and ref.best_step > 0
    assert ref.losses[ref.best_step] == min(ref.losses) < ref.losses[0]

    def cost(result):
        mse = np.mean((result.reconstruction / 255.0 - image / 255.0) ** 2)
        return result.bits["table"] / image[..., 0].size + LMBDA * 255.0**2 * mse

    assert cost(refined) < cost(plain)
    assert cost(refined) == pytest.approx(ref.losses[ref.best_step], rel=0.02)
    assert refined.data != plain.data
    assert np.array_equal(codec.decompress(refined.data, model), refined.reconstruction)


def test_refusals_are_one_line(rich_model, model, image):
    _, y0 = _analysis(model, image)
    with pytest.raises(latent_refinement.RefinementError, match="does not record the lambda"):
        codec.compress_with_info(image, rich_model, refine_steps=1)
    with pytest.raises(latent_refinement.RefinementError, match="whole number"):
        latent_refinement.refine_latent(model, image, 255, y0, steps=-1)
    with pytest.raises(latent_refinement.RefinementError, match="learning rate"):
        latent_refinement.refine_latent(model, image, 255, y0, steps=1, learning_rate=0.0)
    ms_ssim_model = codec.LoadedModel(
        model.config, model.params, {"lmbda": 8.73, "loss_metric": "ms-ssim"}
    )
    with pytest.raises(
        latent_refinement.RefinementError, match="161 pixels a side; the image is 60x100"
    ):
        latent_refinement.refine_latent(ms_ssim_model, image, 255, y0, steps=1)


def test_cli_refusals(rich_model_path, tmp_path, image):
    src = tmp_path / "crop.png"
    Image.fromarray(image).save(src)
    base = [sys.executable, "-m", "mracnn_jax.cli", "compress", str(src), str(tmp_path / "o.mrac")]
    for extra, status, text in (
        (["--refine", "-1"], 2, "--refine: must be a whole number >= 0, got '-1'"),
        (["--refine", "1", "--model", str(rich_model_path)], 1, "does not record the lambda"),
    ):
        proc = subprocess.run(
            [*base, *extra], check=False, capture_output=True, text=True, timeout=120
        )
        lines = proc.stderr.strip().splitlines()
        assert proc.returncode == status and text in lines[-1]
        assert status == 2 or len(lines) == 1  # argparse prints its usage lines first
    assert not (tmp_path / "o.mrac").exists()


def test_cli_refines_as_the_library_does(model, image, tmp_path):
    model_path, src, out = tmp_path / "lambda.mracnn", tmp_path / "crop.png", tmp_path / "c.mrac"
    model.save(model_path)
    Image.fromarray(image).save(src)
    args = ["compress", src, out, "--model", model_path, "--refine", "3", "--no-cache"]
    proc = subprocess.run(
        [sys.executable, "-m", "mracnn_jax.cli", *map(str, args)],
        check=False, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "latent refined in 3 steps: rate-distortion loss -" in proc.stdout
    loaded = codec.LoadedModel.load(model_path)
    assert out.read_bytes() == codec.compress(image, loaded, refine_steps=3)


def test_learning_rate_decays_on_a_cosine_to_zero():
    rates = [latent_refinement.learning_rate_at(k, 4, 0.01) for k in range(5)]
    assert rates == pytest.approx(
        [0.01, 0.5 * 0.01 * (1 + 2**-0.5), 0.005, 0.5 * 0.01 * (1 - 2**-0.5), 0.0]
    )


def test_evaluation_keeps_refined_and_plain_results_apart(model, image, tmp_path):
    from mracnn_jax.evaluation import runner

    model_path = tmp_path / "lambda.mracnn"
    model.save(model_path)
    data = tmp_path / "images"
    data.mkdir()
    Image.fromarray(image).save(data / "crop.png")
    out = tmp_path / "eval"
    kwargs = {"bd_anchor": None, "show_progress": False, "echo": None}
    refined = runner.run_evaluation([model_path], data, out, refine_steps=2, **kwargs)
    plain = runner.run_evaluation([model_path], data, out, **kwargs)
    again = runner.run_evaluation([model_path], data, out, refine_steps=2, **kwargs)
    names = [c["name"] for c in refined.curves]
    assert len(names) == 1 and names[0].endswith("+refine2")
    assert [c["name"] for c in plain.curves] == [names[0].removesuffix("+refine2")]
    assert again.curves[0]["results"] == refined.curves[0]["results"]  # resumed, times included
    lines = (out / "completed.jsonl").read_text().splitlines()
    keys = sorted(json.loads(line)["params_digest"] for line in lines)
    assert keys == [model.params_digest, model.params_digest + "+refine2"]

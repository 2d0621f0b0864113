"""Grayscale models initialised from colour ones (models/grayscale.py,
scripts/make_grayscale_model.py): exact on gray images; the provenance scripts/bundle_finetuned.py
writes."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from load_script import load_script  # a sibling helper module

from mracnn_jax import model_file
from mracnn_jax.models import build_model, init_params, presets
from mracnn_jax.models.grayscale import OUTPUT_WEIGHTS, grayscale_from_colour
from mracnn_jax.training import run_start


def _load_script(repo_root, name):
    return load_script(repo_root / "scripts" / f"{name}.py")


def _script(repo_root):
    return _load_script(repo_root, "make_grayscale_model")


@pytest.fixture(scope="module")
def colour_file(tmp_path_factory):
    cfg = presets.small()
    params = init_params(build_model(cfg), jax.random.PRNGKey(3))
    path = tmp_path_factory.mktemp("colour") / "colour.mracnn"
    config = cfg.to_dict()
    del config["channels"]  # as in model files written before the field existed
    model_file.save_model(path, config, params, metadata={"lmbda": 0.013, "eval": {"psnr": 1.0}})
    return path


@pytest.fixture(scope="module")
def gray_image():
    """A smooth gray ramp with a disc and mild noise, ``[1, 128, 128, 1]`` in [0, 1]."""
    rng = np.random.default_rng(5)
    yy, xx = np.mgrid[0:128, 0:128] / 128
    img = 0.2 + 0.5 * xx + 0.2 * yy
    img[(yy - 0.4) ** 2 + (xx - 0.6) ** 2 < 0.05] = 0.9
    img = np.clip(img + rng.normal(0, 0.02, img.shape), 0, 1)
    return jnp.asarray(img[None, :, :, None], jnp.float32)


def _apply(config, params, x, **kw):
    model = build_model(config)
    return model, model.apply({"params": params}, x, **kw)


@pytest.mark.parametrize("output", sorted(OUTPUT_WEIGHTS))
def test_gray_model_computes_the_colour_model_on_equal_channels(colour_file, gray_image, output):
    config, params, _ = model_file.load_model(colour_file)
    gray_config, gray_params = grayscale_from_colour(config, params, output)
    assert gray_config.channels == 1 and gray_config.name == f"{config.name}-gray"
    rgb = jnp.repeat(gray_image, 3, axis=-1)

    _, y_rgb = _apply(config, params, rgb, method="analysis")
    _, y_gray = _apply(gray_config, gray_params, gray_image, method="analysis")
    scale = float(jnp.max(jnp.abs(y_rgb)))
    np.testing.assert_allclose(np.asarray(y_gray), np.asarray(y_rgb), atol=1e-5 * scale)

    _, out_rgb = _apply(config, params, rgb, train=False)
    _, out_gray = _apply(gray_config, gray_params, gray_image, train=False)
    np.testing.assert_array_equal(np.asarray(out_gray["y_hat"]), np.asarray(out_rgb["y_hat"]))
    np.testing.assert_allclose(float(out_gray["bpp"]), float(out_rgb["bpp"]), rtol=1e-5)
    w = np.asarray(OUTPUT_WEIGHTS[output], np.float32)
    expected = np.asarray(out_rgb["x_hat"]) @ w
    assert out_gray["x_hat"].shape == (1, 128, 128, 1)
    np.testing.assert_allclose(np.asarray(out_gray["x_hat"])[..., 0], expected, atol=1e-5)
    if output == "mean":
        mean = np.mean(np.asarray(out_rgb["x_hat"]), axis=-1)
        np.testing.assert_allclose(np.asarray(out_gray["x_hat"])[..., 0], mean, atol=1e-5)


def test_script_writes_a_gray_model_file(colour_file, gray_image, tmp_path, repo_root):
    out = tmp_path / "gray.mracnn"
    assert _script(repo_root).main([str(colour_file), str(out)]) == 0
    config, params, metadata = model_file.load_model(out)
    assert config.channels == 1 and config.name.endswith("-gray")
    assert metadata["lmbda"] == 0.013 and "eval" not in metadata  # the colour scores do not apply
    assert (
        metadata["initialised_from"]["params_digest"]
        == model_file.read_header(colour_file)["params_digest"]
    )
    assert model_file.read_header(out)["storage_dtype"] == "float32"
    tables, colour_tables = (
        model_file.load_coding_tables(out),
        model_file.load_coding_tables(colour_file),
    )
    for name in model_file.CODING_ARRAYS:
        np.testing.assert_array_equal(tables[name], colour_tables[name])
    # only the image layers changed
    flat, colour = (
        model_file.flatten_params(params),
        model_file.flatten_params(model_file.load_model(colour_file)[1]),
    )
    changed = sorted(k for k in flat if flat[k].shape != colour[k].shape)
    assert changed == [
        "g_a/mracd_0/down/kernel", "g_a/mracd_0/skip/kernel", "g_s/deconv_5/bias",
        "g_s/deconv_5/kernel",
    ]  # fmt: skip
    assert all(np.array_equal(flat[k], colour[k]) for k in flat if k not in changed)
    _, out_gray = _apply(config, params, gray_image, train=False)
    assert out_gray["x_hat"].shape == (1, 128, 128, 1)


def test_refuses_a_gray_model(colour_file):
    config, params, _ = model_file.load_model(colour_file)
    gray_config, gray_params = grayscale_from_colour(config, params)
    with pytest.raises(ValueError, match="expected a colour"):
        grayscale_from_colour(gray_config, gray_params)
    with pytest.raises(ValueError, match="output must be one of"):
        grayscale_from_colour(config, params, "max")


def _fake_run(
    workdir,
    model_path,
    steps,
    losses,
    lmbda=0.013,
    exported_step=None,
    started_from=None,
    first_eval=True,
):
    """A work directory as train.py leaves it: model.mracnn (the model, exported at
    ``exported_step``, default the last, with the last validation), config.json, metrics.jsonl
    with a validation at the start (unless not ``first_eval``) and the end, and
    ``started_from.json`` naming ``started_from`` (a model file) if given. An existing
    ``workdir`` is a run trained on."""
    workdir.mkdir(exist_ok=True)
    config, params, metadata = model_file.load_model(model_path)
    if started_from is not None:
        run_start.save_start(
            str(workdir), str(started_from), model_file.read_header(started_from)["params_digest"]
        )
    last_eval = {"loss": losses[1], "bpp": 0.6, "psnr": 31.0}
    exported = dict(metadata or {}, step=steps if exported_step is None else exported_step)
    exported["eval"] = last_eval
    model_file.save_model(workdir / "model.mracnn", config, params, metadata=exported)
    (workdir / "config.json").write_text(
        json.dumps({"train": {"batch_size": 2, "crop_size": 256, "lmbda": lmbda}})
    )
    records = [{"step": 0, "split": "eval", "loss": losses[0], "bpp": 0.7, "psnr": 30.0}]
    records = records if first_eval else []
    records += [{"step": s, "split": "train", "loss": 1.0} for s in range(10, steps + 1, 10)]
    records += [{"step": steps, "split": "eval", **last_eval}]
    (workdir / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))


def test_bundle_continues_a_bundled_model(colour_file, tmp_path, repo_root):
    """A sitting started from an already bundled gray model (its work directory gone) adds its
    steps to the bundled ones and keeps the first run's validation before."""
    init = tmp_path / "init.mracnn"
    assert _script(repo_root).main([str(colour_file), str(init)]) == 0
    bundle = _load_script(repo_root, "bundle_finetuned")
    first, second = tmp_path / "first", tmp_path / "second"
    _fake_run(tmp_path / "run1", init, 40, (2.0, 1.5))
    assert bundle.main(["2", str(tmp_path / "run1"), str(init), "--out", str(first)]) == 0
    bundled = first / "mracnn-bundled-gray-q2.mracnn"
    meta = model_file.read_header(bundled)["metadata"]
    assert meta["fine_tuned"]["steps"] == 40 and "continued" not in meta["fine_tuned"]

    _fake_run(tmp_path / "run2", bundled, 30, (1.6, 1.4))
    assert bundle.main(["2", str(tmp_path / "run2"), str(bundled), "--out", str(second)]) == 0
    meta2 = model_file.read_header(second / "mracnn-bundled-gray-q2.mracnn")["metadata"]
    tuned = meta2["fine_tuned"]
    assert tuned["steps"] == 70 and meta2["step"] == 70
    assert tuned["eval_before"]["loss"] == 2.0 and tuned["eval_after"]["loss"] == 1.4
    assert tuned["continued"] == [
        {
            "from_params_digest": model_file.read_header(bundled)["params_digest"],
            "at_step": 40,
            "steps": 30,
            "optimiser": "fresh",
        }
    ]
    assert meta2["initialised_from"] == meta["initialised_from"]


def _perturbed(path, out, seed):
    """A copy of the model at ``path`` with other parameters: another training's result."""
    config, params, metadata = model_file.load_model(path)
    rng = np.random.default_rng(seed)
    params = jax.tree_util.tree_map(
        lambda a: np.asarray(a) + rng.normal(0, 1e-3, np.shape(a)).astype(np.asarray(a).dtype),
        params,
    )
    model_file.save_model(out, config, params, metadata=metadata)
    return out


@pytest.mark.parametrize("recorded", [True, False], ids=["started_from.json", "older run"])
def test_bundling_a_run_again_does_not_count_its_steps_twice(
    colour_file, tmp_path, repo_root, recorded
):
    """A run bundled, trained on and bundled again replaces its own earlier export's steps
    instead of adding to them, whether its start was recorded (started_from.json) or is known
    by its first validation (a run from before the record); a run that continued a bundled model
    and is bundled again keeps the earlier continuations."""
    bundle = _load_script(repo_root, "bundle_finetuned")
    out = tmp_path / "bundled"
    bundled = out / "mracnn-bundled-q2.mracnn"
    start = colour_file if recorded else None
    p0 = _perturbed(colour_file, tmp_path / "p0.mracnn", 0)
    _fake_run(tmp_path / "run", p0, 40, (2.0, 1.5), started_from=start)
    assert bundle.main(["2", str(tmp_path / "run"), str(colour_file), "--out", str(out)]) == 0
    first = model_file.read_header(bundled)["metadata"]
    # The same run trained on to step 70 and exported other parameters (its start record, if
    # any, stays as train.py wrote it).
    _fake_run(tmp_path / "run", _perturbed(colour_file, tmp_path / "p1.mracnn", 1), 70, (2.0, 1.3))
    assert bundle.main(["2", str(tmp_path / "run"), str(bundled), "--out", str(out)]) == 0
    again = model_file.read_header(bundled)["metadata"]
    assert again["fine_tuned"]["steps"] == 70 and again["step"] == 70
    assert "continued" not in again["fine_tuned"]
    assert again["fine_tuned"]["eval_before"]["loss"] == 2.0
    assert again["fine_tuned"]["eval_after"]["loss"] == 1.3
    assert again["initialised_from"] == first["initialised_from"]
    if not recorded:
        return  # a continued model's eval_before is its first run's: only the record tells
    # A second run continues the bundled model for 30 steps and is bundled (70 + 30), then
    # trains on to 50 and is bundled again: 70 + 50, one continuation.
    base_digest = model_file.read_header(bundled)["params_digest"]
    p3 = _perturbed(bundled, tmp_path / "p3.mracnn", 3)
    _fake_run(tmp_path / "run2", p3, 30, (1.35, 1.25), started_from=bundled)
    assert bundle.main(["2", str(tmp_path / "run2"), str(bundled), "--out", str(out)]) == 0
    assert model_file.read_header(bundled)["metadata"]["fine_tuned"]["steps"] == 100
    _fake_run(
        tmp_path / "run2", _perturbed(colour_file, tmp_path / "p2.mracnn", 2), 50, (1.35, 1.2)
    )
    assert bundle.main(["2", str(tmp_path / "run2"), str(bundled), "--out", str(out)]) == 0
    meta = model_file.read_header(bundled)["metadata"]
    tuned = meta["fine_tuned"]
    assert tuned["steps"] == 120 and meta["step"] == 120 and tuned["eval_before"]["loss"] == 2.0
    assert tuned["continued"] == [
        {"from_params_digest": base_digest, "at_step": 70, "steps": 50, "optimiser": "fresh"}
    ]


def test_a_grayscale_run_is_bundled_again_from_its_own_start(colour_file, tmp_path, repo_root):
    """A grayscale model's first run starts from the converted model, not from the colour model
    its metadata names: bundled, trained on and bundled again, its steps are counted once."""
    init = tmp_path / "init.mracnn"
    assert _script(repo_root).main([str(colour_file), str(init)]) == 0
    bundle = _load_script(repo_root, "bundle_finetuned")
    out = tmp_path / "bundled"
    bundled = out / "mracnn-bundled-gray-q2.mracnn"
    _fake_run(
        tmp_path / "run",
        _perturbed(init, tmp_path / "p0.mracnn", 0),
        40,
        (2.0, 1.5),
        started_from=init,
    )
    assert bundle.main(["2", str(tmp_path / "run"), str(init), "--out", str(out)]) == 0
    tuned = model_file.read_header(bundled)["metadata"]["fine_tuned"]
    assert tuned["from_params_digest"] == model_file.read_header(init)["params_digest"]
    _fake_run(tmp_path / "run", _perturbed(init, tmp_path / "p1.mracnn", 1), 70, (2.0, 1.3))
    assert bundle.main(["2", str(tmp_path / "run"), str(bundled), "--out", str(out)]) == 0
    meta = model_file.read_header(bundled)["metadata"]
    assert meta["fine_tuned"]["steps"] == 70 and "continued" not in meta["fine_tuned"]


def test_runs_without_a_first_validation_are_continuations(colour_file, tmp_path, repo_root):
    """Runs from before started_from.json are known as a re-bundled run only by their first
    validation: two runs without one (train.eval_at_start off) are not taken for the same run."""
    bundle = _load_script(repo_root, "bundle_finetuned")
    out = tmp_path / "bundled"
    bundled = out / "mracnn-bundled-q2.mracnn"
    _fake_run(
        tmp_path / "run1",
        _perturbed(colour_file, tmp_path / "p0.mracnn", 0),
        40,
        (2.0, 1.5),
        first_eval=False,
    )
    assert bundle.main(["2", str(tmp_path / "run1"), str(colour_file), "--out", str(out)]) == 0
    _fake_run(
        tmp_path / "run2",
        _perturbed(colour_file, tmp_path / "p1.mracnn", 1),
        30,
        (2.0, 1.4),
        first_eval=False,
    )
    assert bundle.main(["2", str(tmp_path / "run2"), str(bundled), "--out", str(out)]) == 0
    tuned = model_file.read_header(bundled)["metadata"]["fine_tuned"]
    assert tuned["steps"] == 70 and len(tuned["continued"]) == 1


def test_bundle_refuses_a_run_from_another_start(colour_file, tmp_path, repo_root):
    """A run whose recorded start is neither INIT nor what INIT's last run started from is not
    INIT's continuation: refused, the bundled file unchanged."""
    bundle = _load_script(repo_root, "bundle_finetuned")
    other = _perturbed(colour_file, tmp_path / "other.mracnn", 3)
    _fake_run(tmp_path / "run", colour_file, 40, (2.0, 1.5), started_from=other)
    with pytest.raises(SystemExit, match="the run started from params .* name the model"):
        bundle.main(["2", str(tmp_path / "run"), str(colour_file), "--out", str(tmp_path)])
    assert not (tmp_path / "mracnn-bundled-q2.mracnn").exists()


def test_bundle_names_a_colour_model_after_its_start(colour_file, tmp_path, repo_root):
    """A colour model continued from a bundled colour file (not fine-tuned before) becomes
    mracnn-bundled-q<N> and names that file as its start; a start of the wrong channel count is
    refused."""
    bundle = _load_script(repo_root, "bundle_finetuned")
    _fake_run(tmp_path / "run", colour_file, 50, (1.9, 1.8), lmbda=0.0932)
    assert bundle.main(["4", str(tmp_path / "run"), str(colour_file), "--out", str(tmp_path)]) == 0
    header = model_file.read_header(tmp_path / "mracnn-bundled-q4.mracnn")
    meta, start = header["metadata"], model_file.read_header(colour_file)
    assert meta["quality"] == 4 and meta["fine_tuned"]["steps"] == 50
    assert "gray" not in meta["fine_tuned"]["batch"]
    assert meta["initialised_from"] == {
        "file": colour_file.name,
        "params_digest": start["params_digest"],
        "step": None,
        "eval": {"psnr": 1.0},
    }
    gray = tmp_path / "gray.mracnn"
    assert _script(repo_root).main([str(colour_file), str(gray)]) == 0
    with pytest.raises(SystemExit, match="not the model the run started from"):
        bundle.main(["4", str(tmp_path / "run"), str(gray), "--out", str(tmp_path)])


def test_bundle_refuses_a_run_that_did_not_export_or_a_wrong_quality(
    colour_file, tmp_path, repo_root, monkeypatch
):
    """Nothing is written over the bundled file: a run whose metrics go past its export (stopped
    before it, or still training), or trained at another quality's λ, is refused."""
    bundle = _load_script(repo_root, "bundle_finetuned")
    target = tmp_path / "mracnn-bundled-q2.mracnn"
    target.write_bytes(b"the bundled file")
    _fake_run(tmp_path / "stopped", colour_file, 50, (1.9, 1.8), exported_step=40)
    with pytest.raises(SystemExit, match="step 40's export, the run's metrics reach step 50"):
        bundle.main(["2", str(tmp_path / "stopped"), str(colour_file), "--out", str(tmp_path)])
    _fake_run(tmp_path / "q3run", colour_file, 50, (1.9, 1.8), lmbda=0.05)
    with pytest.raises(SystemExit, match="λ 0.05, quality 2's λ is 0.013"):
        bundle.main(["2", str(tmp_path / "q3run"), str(colour_file), "--out", str(tmp_path)])
    # Tables that do not match the run's: checked on the staged copy, which is then removed.
    _fake_run(tmp_path / "run", colour_file, 50, (1.9, 1.8))
    real = bundle.model_file.load_coding_tables

    def other_tables(path):
        tables = real(path)
        if path.parent.name == "run":  # the run's file, not the staged one
            tables = {**tables, "z_cdf": tables["z_cdf"] + 1}
        return tables

    monkeypatch.setattr(bundle.model_file, "load_coding_tables", other_tables)
    with pytest.raises(SystemExit, match="differ from the run's: use .venv; .* is unchanged"):
        bundle.main(["2", str(tmp_path / "run"), str(colour_file), "--out", str(tmp_path)])
    assert target.read_bytes() == b"the bundled file"
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []

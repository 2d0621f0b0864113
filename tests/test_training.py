"""The training loop (resume, time limit, NaN stop, init_from, logging, sharding) and its config.

The loop tests use ``TinyCodec`` (tiny_training.py), a stand-in with the model's interface (a few
convolutions and a Gaussian likelihood), so that each compiles in seconds;
``test_small_config_*`` runs the real small preset's model for two steps. Run as a script, this file is the child process of the
multi-device test (``python tests/test_training.py shard_child OUT_JSON``).
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from tiny_training import TinyCodec, assert_trees_equal, tiny_config  # a sibling helper module

from mracnn_jax.training import defaults, input_pipeline, train_state

REPO = Path(__file__).resolve().parents[1]


def test_defaults_document_paper_grids():
    c = defaults.training_config()
    assert c.mse_lambdas == (0.0018, 0.0035, 0.0067, 0.0130, 0.025, 0.05)
    assert c.ms_ssim_lambdas == (3, 5, 8, 16, 32, 60)
    assert c.lmbda == 0.0130 and c.batch_size == 8 and c.crop_size == 256
    assert defaults.PAPER_LEARNING_RATE == 1e-5
    d = defaults.data_config()
    assert isinstance(d.train_dirs, list) and d.backend in defaults.DATA_BACKENDS


# -------------------------------------------------------------------------------------------------
# The training loop (TinyCodec).


def _train(config, workdir):
    from mracnn_jax.training.train_lib import train_and_evaluate

    return train_and_evaluate(config, str(workdir), model=TinyCodec())


def test_train_loop_writes_metrics_config_checkpoints_and_model(tmp_path):
    from mracnn_jax.model_file import load_model

    config = tiny_config(
        tmp_path, num_steps=6, checkpoint_every=3, log_every=2, eval_every=3, keep_checkpoints=1
    )
    state = _train(config, tmp_path / "wd")
    wd = tmp_path / "wd"
    assert int(state.step) == 6
    recs = [json.loads(line) for line in (wd / "metrics.jsonl").read_text().splitlines()]
    train_recs = [r for r in recs if r["split"] == "train"]
    eval_recs = [r for r in recs if r["split"] == "eval"]
    assert [r["step"] for r in train_recs] == [2, 3, 4, 6]
    assert {"loss", "bpp", "mse", "psnr", "steps_per_sec", "lr", "grad_norm"} <= set(train_recs[0])
    assert [r["step"] for r in eval_recs] == [3, 6] and {"bpp", "psnr"} <= set(eval_recs[0])
    assert json.loads((wd / "config.json").read_text())["train"]["num_steps"] == 6
    assert sorted(os.listdir(wd / "checkpoints")) == ["6"]  # keep_checkpoints=1
    cfg, params, meta = load_model(wd / "model.mracnn")
    assert cfg.name == "tiny-stand-in" and meta["step"] == 6
    assert_trees_equal(params, jax.device_get(state.params))


def test_eval_at_start_writes_a_step_0_record_with_the_rd_loss(tmp_path):
    def records(workdir):
        return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]

    config = tiny_config(tmp_path, num_steps=2, checkpoint_every=2, log_every=1, eval_at_start=True)
    _train(config, tmp_path / "wd")
    eval_recs = [r for r in records(tmp_path / "wd") if r["split"] == "eval"]
    assert [r["step"] for r in eval_recs] == [0, 2]
    lmbda = config.train.lmbda
    for r in eval_recs:  # the training loss's formula on the validation means
        assert r["loss"] == pytest.approx(lmbda * 255.0**2 * r["mse"] + r["bpp"], rel=1e-6)
    # Without the option, the first validation is the end's, as before.
    config = tiny_config(tmp_path, num_steps=2, checkpoint_every=2, log_every=1)
    _train(config, tmp_path / "wd2")
    assert [r["step"] for r in records(tmp_path / "wd2") if r["split"] == "eval"] == [2]


def test_time_limit_stops_cleanly_with_checkpoint_and_export(tmp_path):
    from mracnn_jax.model_file import load_model

    # A budget spent before the first step: the run stops after it, as if num_steps were 1.
    config = tiny_config(
        tmp_path,
        num_steps=20,
        checkpoint_every=10,
        log_every=5,
        num_eval_images=0,
        time_limit_s=1e-6,
    )
    state = _train(config, tmp_path / "wd")
    assert int(state.step) == 1
    assert sorted(os.listdir(tmp_path / "wd" / "checkpoints")) == ["1"]
    assert load_model(tmp_path / "wd" / "model.mracnn")[2]["step"] == 1
    # Without the limit, the same work directory resumes from step 1 up to num_steps.
    config.train.time_limit_s = 0.0
    assert int(_train(config, tmp_path / "wd").step) == 20


def test_init_from_starts_a_new_run_from_an_exported_model(tmp_path):
    from mracnn_jax.model_file import load_model, save_model

    first = tiny_config(tmp_path, num_steps=4, checkpoint_every=4, num_eval_images=0)
    _train(first, tmp_path / "a")
    exported = load_model(tmp_path / "a" / "model.mracnn")[1]
    second = tiny_config(
        tmp_path,
        num_steps=1,
        checkpoint_every=1,
        num_eval_images=0,
        init_from=str(tmp_path / "a" / "model.mracnn"),
        learning_rate=0.0,
    )
    state = _train(second, tmp_path / "b")
    assert int(state.step) == 1  # a new run: the step count starts again
    assert_trees_equal(jax.device_get(state.params), exported)  # lr 0: the imported values
    # The start is recorded by its params digest: the file at that path may be replaced later.
    from mracnn_jax.model_file import read_header
    from mracnn_jax.training.run_start import read_start

    start = read_start(tmp_path / "b")
    assert start["params_digest"] == read_header(tmp_path / "a" / "model.mracnn")["params_digest"]
    assert start["file"] == str(tmp_path / "a" / "model.mracnn")
    assert read_start(tmp_path / "a") is None  # a run from random parameters has none
    # A work directory started again from random parameters drops an earlier start's record.
    import shutil

    shutil.rmtree(tmp_path / "b" / "checkpoints")
    second.train.init_from = ""
    _train(second, tmp_path / "b")
    assert read_start(tmp_path / "b") is None
    # A model file of another shape is refused, naming the parameter.
    cfg, params, _meta = load_model(tmp_path / "a" / "model.mracnn")
    leaf_path = jax.tree_util.tree_leaves_with_path(params)[0][0]
    bad = jax.tree_util.tree_map_with_path(
        lambda p, a: np.zeros((2, 2), a.dtype) if p == leaf_path else a, params
    )
    save_model(tmp_path / "bad.mracnn", cfg, bad)
    second.train.init_from = str(tmp_path / "bad.mracnn")
    with pytest.raises(ValueError, match="has shape"):
        _train(second, tmp_path / "c")


def test_resume_20_steps_equal_10_plus_restart_plus_10_bitwise(tmp_path):
    base = tiny_config(tmp_path, num_steps=20, checkpoint_every=10, log_every=10, num_eval_images=0)
    straight = _train(base, tmp_path / "straight")
    half = tiny_config(tmp_path, num_steps=10, checkpoint_every=10, log_every=10, num_eval_images=0)
    first = _train(half, tmp_path / "resumed")
    assert int(first.step) == 10
    resumed = _train(base, tmp_path / "resumed")  # finds checkpoint 10, continues to 20
    assert int(resumed.step) == 20
    assert_trees_equal(jax.device_get(straight.params), jax.device_get(resumed.params))
    assert_trees_equal(jax.device_get(straight.opt_state), jax.device_get(resumed.opt_state))
    # The exported files hold the same bytes-for-bytes parameters.
    from mracnn_jax.model_file import read_header

    assert (
        read_header(tmp_path / "straight" / "model.mracnn")["params_digest"]
        == read_header(tmp_path / "resumed" / "model.mracnn")["params_digest"]
    )


def test_a_resume_on_other_images_is_warned_about(tmp_path, caplog):
    """The checkpoint keeps what fixes the data order (file count, names, seed): a resume with
    the same images is silent, one with an image added says so."""
    from tiny_training import write_images

    config = tiny_config(tmp_path, num_steps=2, checkpoint_every=1, log_every=1, num_eval_images=0)
    _train(config, tmp_path / "wd")
    caplog.set_level(logging.WARNING)
    config.train.num_steps = 3
    _train(config, tmp_path / "wd")
    assert "changed since the checkpoint" not in caplog.text
    write_images(tmp_path / "data" / "train" / "more", 1, seed=9)
    config.train.num_steps = 4
    _train(config, tmp_path / "wd")
    assert "changed since the checkpoint (12 files" in caplog.text
    assert "now 13," in caplog.text


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
    from mracnn_jax.training.checkpoint import CheckpointManager
    from mracnn_jax.training.train_lib import NonFiniteLossError

    good = _train(
        tiny_config(tmp_path, num_steps=10, checkpoint_every=5, num_eval_images=0), tmp_path / "wd"
    )
    bad = tiny_config(
        tmp_path, num_steps=20, checkpoint_every=5, lmbda=float("nan"), num_eval_images=0
    )
    with pytest.raises(
        NonFiniteLossError,
        match=r"non-finite at step 11.*last good checkpoint is "
        r"step 10",
    ):
        _train(bad, tmp_path / "wd")
    mngr = CheckpointManager(tmp_path / "wd" / "checkpoints")
    assert mngr.all_steps() == [5, 10]
    raw, _ = mngr.restore_raw(10)
    mngr.close()
    assert_trees_equal(raw["params"], jax.device_get(good.params))


def test_config_validation_errors(tmp_path):
    with pytest.raises(ValueError, match="multiple of 64"):
        _train(tiny_config(tmp_path, crop_size=100), tmp_path / "wd")
    with pytest.raises(ValueError, match="MS-SSIM training needs"):
        _train(tiny_config(tmp_path, loss_metric="ms-ssim"), tmp_path / "wd")


def test_two_step_run_says_compiling_shows_steps_per_second_writes_tensorboard_no_orbax_info(
    tmp_path, capfd, caplog
):
    """What a user sees: a line before the first step saying the step compiles (and one with how
    long it took), a bar whose rate says steps/s, TensorBoard events under tb/, and no INFO line
    of orbax's (absl's logger) among the bar's, although INFO logging is on."""
    from mracnn_jax.training.run_log import TB_DIR

    config = tiny_config(tmp_path, num_steps=2, checkpoint_every=1, log_every=1)
    absl_level = logging.getLogger("absl").level  # whatever earlier tests left it at
    with caplog.at_level(logging.INFO):
        _train(config, tmp_path / "wd")
    err = capfd.readouterr().err
    assert "compiling the training step" in err and "compiled the training step in" in err, err
    # (the bar redraws at most once a second, so the last step is the one surely drawn)
    assert err.index("compiling the training step") < err.index("step 2/2"), err
    assert "steps/s=" in err and "sps=" not in err, err
    noisy = [r for r in caplog.records if r.name.startswith(("absl", "orbax"))]
    assert not [r for r in noisy if r.levelno < logging.WARNING], [r.getMessage() for r in noisy]
    events = list((tmp_path / "wd" / TB_DIR).glob("events.out.tfevents.*"))
    assert len(events) == 1 and events[0].stat().st_size > 0
    assert logging.getLogger("absl").level == absl_level  # restored after the run


def test_bad_data_folders_and_unknown_fields_fail_before_the_model_is_built(tmp_path):
    """A missing or empty data folder, a misspelt field or a value the loop cannot use is one
    ConfigError within a second, before the model is built (the model given here fails if
    touched) or the workdir made."""
    from mracnn_jax.training.config_checks import ConfigError
    from mracnn_jax.training.train_lib import train_and_evaluate

    class Untouchable:
        def __getattr__(self, name):
            raise AssertionError(f"the model was used ({name}) before the config was checked")

    (tmp_path / "empty").mkdir()
    cases = {
        "missing": ({"data.train_dirs": [str(tmp_path / "nowhere")]}, "does not exist"),
        "empty": ({"data.train_dirs": [str(tmp_path / "empty")]}, "no .png"),
        "val": ({"data.val_dir": str(tmp_path / "nowhere")}, "data.val_dir"),
        "field": ({"train.lmbdaa": 0.1}, "unknown config field train.lmbdaa; did you mean"),
        "eval crop": ({"train.eval_crop_size": 100}, "eval_crop_size = 100 must be a multiple"),
        "decay": (
            {"train.lr_schedule": "step", "train.warmup_steps": 5, "train.lr_decay_at": (0.2,)},
            "inside the warm-up",
        ),
    }
    for name, (fields, message) in cases.items():
        config = tiny_config(tmp_path)
        for field, value in fields.items():
            block, key = field.split(".")
            config[block][key] = value
        t0 = time.perf_counter()
        with pytest.raises(ConfigError, match=message):
            train_and_evaluate(config, str(tmp_path / f"wd_{name}"), model=Untouchable())
        assert time.perf_counter() - t0 < 1.0, name
        assert not (tmp_path / f"wd_{name}").exists(), name


def test_config_checks_ms_ssim_size_is_the_metrics_one():
    from mracnn_jax.metrics import min_size_for_ms_ssim
    from mracnn_jax.training.config_checks import MS_SSIM_MIN_SIZE

    assert MS_SSIM_MIN_SIZE == min_size_for_ms_ssim()


def test_config_checks_loss_metrics_are_the_objectives():
    from mracnn_jax.models.objective import LOSS_METRICS
    from mracnn_jax.training import defaults

    assert defaults.LOSS_METRICS == LOSS_METRICS


@pytest.mark.slow
@pytest.mark.skipif(
    not os.environ.get("MRACNN_SLOW_TESTS"),
    reason="compiling the real model takes minutes on 2 CPU cores; "
    "set MRACNN_SLOW_TESTS=1 (or run it on a GPU)",
)
def test_small_config_learns_on_the_shared_training_photos(tmp_path):
    """The small preset, a few hundred steps on ../shared/data/train: the validation loss
    (λ·255²·MSE + bpp on 8 held-out BSDS500 centre crops, at inference) falls clearly below its
    value at the initial parameters, and the exported model rebuilds."""
    from mracnn_jax.config_files import load_config
    from mracnn_jax.model_file import load_model
    from mracnn_jax.models import build_model
    from mracnn_jax.training.steps import (
        evaluate,
        init_train_state,
        make_eval_step,
        make_mesh,
        root_keys,
    )
    from mracnn_jax.training.train_lib import train_and_evaluate
    from mracnn_jax.training.train_state import make_optimizer

    data = defaults.default_data_root() / "train"
    if not data.is_dir():
        pytest.skip(f"the training photos are not at {data}")
    config = load_config("small")
    config.train.update(
        {
            "num_steps": int(os.environ.get("MRACNN_LEARNING_STEPS", "300")),
            "checkpoint_every": 100,
            "log_every": 25,
            "eval_every": 0,
            "num_eval_images": 8,
            "eval_crop_size": 64,
            "eval_batch_size": 8,
        }
    )
    t = config.train
    model = build_model(config.model)
    mesh = make_mesh()
    images, _ = input_pipeline.load_eval_images(config.data.val_dir, 64, 8)
    initial = init_train_state(model, make_optimizer(t), root_keys(t.seed)[0], mesh)
    before = evaluate(jax.jit(make_eval_step(model, 64)), initial.params, images, 8, mesh)

    state = train_and_evaluate(config, str(tmp_path / "wd"), model=model)
    recs = [json.loads(x) for x in (tmp_path / "wd" / "metrics.jsonl").read_text().splitlines()]
    after = [r for r in recs if r["split"] == "eval"][-1]
    assert after["step"] == t.num_steps

    def loss(m):
        return t.lmbda * 255.0**2 * m["mse"] + m["bpp"]

    print(
        f"validation loss {loss(before):.3f} -> {loss(after):.3f} "
        f"(PSNR {before['psnr']:.2f} -> {after['psnr']:.2f} dB, "
        f"bpp {before['bpp']:.3f} -> {after['bpp']:.3f})"
    )
    assert loss(after) < 0.5 * loss(before)
    cfg, params, _ = load_model(tmp_path / "wd" / "model.mracnn")
    assert_trees_equal(params, jax.device_get(state.params))
    build_model(cfg)  # the stored config rebuilds the model


# -------------------------------------------------------------------------------------------------
# Multi-device: 4 CPU devices in a subprocess.


def _shard_child(out_path: str) -> None:
    """One step on a batch of 8 over 4 devices vs 1 device; then 2 steps of the real loop."""
    from mracnn_jax.training import steps, train_lib

    # Newer jax compiles the partitionable threefry slowly on CPU (~5 s per random op); the
    # classic one is as valid here and keeps this child within the test budget.
    jax.config.update("jax_threefry_partitionable", False)
    assert jax.device_count() == 4, jax.devices()
    config = tiny_config(Path(out_path).parent / "child")
    config.train.batch_size = 8
    model = TinyCodec()
    tx = train_state.make_optimizer(config.train)
    init_key, noise_key = steps.root_keys(0)
    batch = np.random.default_rng(0).integers(0, 256, (8, 64, 64, 3), dtype=np.uint8)
    results = {}
    for name, devices in (("one", jax.devices()[:1]), ("four", jax.devices())):
        mesh = steps.make_mesh(devices)
        state = steps.init_train_state(model, tx, init_key, mesh)
        step = steps.jit_train_step(steps.make_train_step(model, tx, config.train), mesh)
        gb = steps.make_global_batch(batch, mesh)
        assert len(gb.sharding.device_set) == len(devices)
        new, metrics = step(state, gb, noise_key)
        results[name] = (jax.device_get(new.params), float(metrics["loss"]))
    (p1, l1), (p4, l4) = results["one"], results["four"]
    diffs = [
        float(np.max(np.abs(np.asarray(a) - np.asarray(b))))
        for a, b in zip(jax.tree_util.tree_leaves(p1), jax.tree_util.tree_leaves(p4))
    ]
    # The loop itself on 4 devices; TensorFlow must stay unimported throughout.
    config.train.update(
        {"num_steps": 2, "log_every": 1, "checkpoint_every": 2, "num_eval_images": 0}
    )
    train_lib.train_and_evaluate(config, str(Path(out_path).parent / "wd"), model=model)
    Path(out_path).write_text(
        json.dumps(
            {
                "loss_one": l1,
                "loss_four": l4,
                "max_param_diff": max(diffs),
                "tensorflow_imported": "tensorflow" in sys.modules,
            }
        )
    )


def test_shard_one_step_4_devices_matches_unsharded(tmp_path):
    env = dict(os.environ)
    env["XLA_FLAGS"] = "--xla_force_host_platform_device_count=4"
    env["JAX_PLATFORMS"] = "cpu"
    out = tmp_path / "result.json"
    proc = subprocess.run(
        [sys.executable, __file__, "shard_child", str(out)],
        env=env,
        check=False,
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    r = json.loads(out.read_text())
    assert abs(r["loss_one"] - r["loss_four"]) <= 1e-5 * max(1.0, abs(r["loss_one"]))
    assert r["max_param_diff"] <= 1e-5
    assert not r["tensorflow_imported"]


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "shard_child":
        _shard_child(sys.argv[2])
    else:
        raise SystemExit("usage: test_training.py shard_child OUT_JSON")

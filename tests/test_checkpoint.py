"""Orbax checkpoints (both orbax versions), SIGKILL mid-write, SIGTERM between steps, and the
portable model file.

Run as a script, this file is the training child process of the SIGKILL test
(``python tests/test_checkpoint.py child CONFIG_JSON WORKDIR PAUSE_AT_STEP``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import pytest
from tiny_training import TinyCodec, assert_trees_equal, tiny_config  # a sibling helper module

from mracnn_jax import model_file
from mracnn_jax.training import checkpoint, defaults, export, run_log, stopping, train_state
from mracnn_jax.training.run_log import read_metrics

REPO = Path(__file__).resolve().parents[1]


def _state(seed=0):
    c = defaults.training_config()
    c.lr_schedule = "step"
    tx = train_state.make_optimizer(c)
    k1, k2 = jax.random.split(jax.random.PRNGKey(seed))
    params = {
        "enc": {"kernel": jax.random.normal(k1, (3, 3, 3, 8)), "bias": jnp.zeros(8)},
        "scale": jax.random.normal(k2, (5,)),
    }
    st = train_state.TrainState.create(params, tx)
    grads = jax.tree_util.tree_map(lambda p: jnp.full_like(p, 0.3), params)
    return st.apply_gradients(grads, tx), tx


# -------------------------------------------------------------------------------------------------
# CheckpointManager.


def test_checkpoint_roundtrip_bitwise_keeps_last_k(tmp_path):
    st, _ = _state()
    mngr = checkpoint.CheckpointManager(tmp_path / "ck", max_to_keep=2)
    assert mngr.latest_step() is None
    for s in (1, 2, 3):
        mngr.save(s, st, {"data": {"records_consumed": [8 * s]}, "config": {"a": [1, 2]}})
    assert mngr.all_steps() == [2, 3]
    mngr.close()
    fresh, _ = _state(seed=1)
    mngr = checkpoint.CheckpointManager(tmp_path / "ck", max_to_keep=2)
    restored, extra = mngr.restore(None, fresh)
    assert extra == {"data": {"records_consumed": [24]}, "config": {"a": [1, 2]}}
    assert type(restored) is type(st)
    assert_trees_equal(restored, jax.device_get(st))
    assert restored.step.dtype == np.int32
    with pytest.raises(FileNotFoundError, match="no checkpoint for step 1"):
        mngr.restore(1, fresh)
    mngr.close()


def test_per_leaf_adam_moments_of_an_older_checkpoint_resume_in_the_flat_optimizer(tmp_path):
    """A checkpoint written when clipping and Adam ran on each leaf (moments shaped like the
    parameters) restores into the flat optimiser's state: each moment becomes the per-leaf arrays
    concatenated in the parameters' order, and the next step moves the parameters as the per-leaf
    optimiser would have."""
    c = defaults.training_config()
    c.lr_schedule = "step"
    per_leaf = train_state.make_optimizer(c, flat=False)
    flat, tx = _state()  # the flat optimiser after one step: the target's structure
    old = train_state.TrainState.create(flat.params, per_leaf)
    grads = jax.tree_util.tree_map(lambda p: jnp.full_like(p, 0.3), old.params)
    old = old.apply_gradients(grads, per_leaf)
    mngr = checkpoint.CheckpointManager(tmp_path / "ck")
    mngr.save(1, old)
    restored, _ = mngr.restore(1, flat)
    mngr.close()
    for name in ("mu", "nu"):
        moments = jax.tree_util.tree_leaves(getattr(old.opt_state[1][0], name))
        np.testing.assert_array_equal(
            getattr(restored.opt_state[1][0], name), np.concatenate([np.ravel(m) for m in moments])
        )
    resumed = restored.apply_gradients(grads, tx)
    straight = old.apply_gradients(grads, per_leaf)
    for got, want in zip(*map(jax.tree_util.tree_leaves, (resumed.params, straight.params))):
        np.testing.assert_allclose(got, want, rtol=1e-6)


def test_checkpoint_restore_mismatch_clear_error(tmp_path):
    st, tx = _state()
    mngr = checkpoint.CheckpointManager(tmp_path / "ck")
    mngr.save(1, st)
    other = train_state.TrainState.create({"enc": {"kernel": jnp.zeros((3, 3, 3, 16))}}, tx)
    with pytest.raises(ValueError, match="does not match the model being trained"):
        mngr.restore(1, other)
    mngr.close()
    with pytest.raises(FileNotFoundError, match="no complete checkpoint"):
        checkpoint.CheckpointManager(tmp_path / "empty").restore(None, st)


def test_checkpoint_leftover_tmp_dir_ignored(tmp_path):
    st, _ = _state()
    mngr = checkpoint.CheckpointManager(tmp_path / "ck")
    mngr.save(5, st)
    mngr.close()
    junk = tmp_path / "ck" / "10.orbax-checkpoint-tmp-1234"
    (junk / "state").mkdir(parents=True)
    mngr = checkpoint.CheckpointManager(tmp_path / "ck")
    assert mngr.all_steps() == [5]
    mngr.close()


# -------------------------------------------------------------------------------------------------
# SIGKILL during a checkpoint write.


def _child(config_json: str, workdir: str, pause_at: int) -> None:
    """Trains TinyCodec; when saving checkpoint ``pause_at`` it stops inside orbax's write (the
    temporary folder exists, the state item is written, the JSON item is not) and waits to be
    killed."""
    import orbax.checkpoint as ocp

    from mracnn_jax.training.train_lib import train_and_evaluate

    flag = {"pause": False}
    marker = Path(workdir) / "PAUSED_IN_CHECKPOINT_WRITE"
    original_save = checkpoint.CheckpointManager.save

    def save(self, step, state, extra=None):
        flag["pause"] = step == pause_at
        return original_save(self, step, state, extra)

    def hang():
        marker.write_text("1")
        time.sleep(600)

    handler = ocp.JsonCheckpointHandler
    sync_save = handler.save

    def patched_save(self, *a, **k):
        if flag["pause"]:
            hang()
        return sync_save(self, *a, **k)

    handler.save = patched_save
    if "async_save" in handler.__dict__:
        async_save = handler.async_save

        async def patched_async_save(self, *a, **k):
            if flag["pause"]:
                hang()
            return await async_save(self, *a, **k)

        handler.async_save = patched_async_save
    checkpoint.CheckpointManager.save = save
    config = ml_collections.ConfigDict(json.loads(Path(config_json).read_text()))
    train_and_evaluate(config, workdir, model=TinyCodec())


def test_resume_after_sigkill_during_checkpoint_write(tmp_path):
    config = tiny_config(tmp_path, num_steps=20, checkpoint_every=5, log_every=5, num_eval_images=0)
    cfg_file = tmp_path / "config.json"
    cfg_file.write_text(config.to_json())
    wd = tmp_path / "wd"
    wd.mkdir()
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    proc = subprocess.Popen(
        [sys.executable, __file__, "child", str(cfg_file), str(wd), "10"],
        env=env,
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    marker = wd / "PAUSED_IN_CHECKPOINT_WRITE"
    deadline = time.time() + 240
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.1)
    if not marker.exists():
        proc.kill()
        out = proc.communicate()[0]
        pytest.fail(f"the child never reached the checkpoint write:\n{out[-3000:]}")
    tmp_dirs = [p.name for p in (wd / "checkpoints").iterdir() if "tmp" in p.name]
    assert tmp_dirs and tmp_dirs[0].startswith("10"), os.listdir(wd / "checkpoints")
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL

    mngr = checkpoint.CheckpointManager(wd / "checkpoints")
    assert mngr.all_steps() == [5]  # the half-written 10 is not a checkpoint
    mngr.close()

    # Restart (no pause): resumes from 5 and matches a straight 20-step run bitwise.
    from mracnn_jax.training.train_lib import train_and_evaluate

    resumed = train_and_evaluate(config, str(wd), model=TinyCodec())
    recs = [json.loads(x) for x in (wd / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in recs if r["split"] == "train"] == [
        5,
        10,
        10,
        15,
        20,
    ]  # 10 logged by both processes
    assert not any("tmp" in p.name for p in (wd / "checkpoints").iterdir())
    straight = train_and_evaluate(config, str(tmp_path / "straight"), model=TinyCodec())
    assert_trees_equal(jax.device_get(straight.params), jax.device_get(resumed.params))
    # Read back as a history, the interrupted run's log is the straight run's, value for value.
    history, straight_history = read_metrics(wd), read_metrics(tmp_path / "straight")
    assert [r["step"] for r in history.train] == [5, 10, 15, 20]
    values = ("loss", "bpp", "mse")
    assert [[r[k] for k in values] for r in history.train] == [
        [r[k] for k in values] for r in straight_history.train
    ]


# -------------------------------------------------------------------------------------------------
# SIGTERM (a preempted machine) or Ctrl-C between steps.


def test_sigterm_checkpoints_the_next_step_and_the_run_resumes_exactly(tmp_path, monkeypatch):
    """A SIGTERM during step 7's logging stops the run at step 8 with a checkpoint of step 8 (none
    falls there by the schedule of 5), no export; rerun, it resumes at 8 and ends with the
    parameters of a run never interrupted. The previous SIGTERM handler is back afterwards."""
    from mracnn_jax.training.train_lib import train_and_evaluate

    config = tiny_config(tmp_path, num_steps=12, checkpoint_every=5, log_every=1,
                         num_eval_images=0, export_name="model.mracnn")  # fmt: skip
    write = run_log.MetricWriter.write

    def write_then_signal(self, step, split, values):
        write(self, step, split, values)
        if step == 7 and split == "train":
            os.kill(os.getpid(), signal.SIGTERM)

    before = signal.getsignal(signal.SIGTERM)
    wd = tmp_path / "wd"
    with monkeypatch.context() as m:
        m.setattr(run_log.MetricWriter, "write", write_then_signal)
        with pytest.raises(stopping.Interrupted, match="stopped by SIGTERM at step 8") as info:
            train_and_evaluate(config, str(wd), model=TinyCodec())
    assert (info.value.step, info.value.exit_status) == (8, 128 + signal.SIGTERM)
    assert signal.getsignal(signal.SIGTERM) is before
    mngr = checkpoint.CheckpointManager(wd / "checkpoints")
    assert mngr.all_steps() == [5, 8]
    mngr.close()
    assert not (wd / "model.mracnn").exists()

    resumed = train_and_evaluate(config, str(wd), model=TinyCodec())
    assert int(resumed.step) == 12 and (wd / "model.mracnn").exists()
    straight = train_and_evaluate(config, str(tmp_path / "straight"), model=TinyCodec())
    assert_trees_equal(jax.device_get(straight.params), jax.device_get(resumed.params))


# -------------------------------------------------------------------------------------------------
# The portable model file.


def _params():
    rng = np.random.default_rng(0)
    return {
        "g_a": {
            "conv_0": {
                "kernel": rng.standard_normal((5, 5, 3, 8), np.float32),
                "bias": rng.standard_normal(8).astype(np.float32),
            }
        },
        "entropy": {"scale": rng.standard_normal((4,)).astype(np.float32)},
    }


def _model_config():
    return ml_collections.ConfigDict({"name": "x", "N": 8, "widths": (4, 2), "sub": {"k": 3}})


def test_model_file_roundtrip_bitwise(tmp_path):
    params = _params()
    path = tmp_path / "m.mracnn"
    digest = model_file.save_model(path, _model_config(), params, metadata={"step": 7})
    cfg, loaded, meta = model_file.load_model(path)
    assert_trees_equal(loaded, params)
    assert cfg.widths == (4, 2) and cfg.sub.k == 3 and cfg.name == "x"
    assert meta == {"step": 7}
    assert digest == model_file.params_digest(params) == model_file.params_digest(loaded)
    header = model_file.read_header(path)
    assert header["params"]["g_a/conv_0/kernel"] == {"shape": [5, 5, 3, 8], "dtype": "<f4"}
    with zipfile.ZipFile(path) as zf:  # no pickle: plain .npy entries + JSON
        assert zf.namelist()[0] == "header.json"
        assert "params/g_a/conv_0/kernel.npy" in zf.namelist()


def test_model_file_float16_storage(tmp_path):
    params = _params()
    path = tmp_path / "m16.mracnn"
    digest = model_file.save_model(path, _model_config(), params, dtype="float16")
    _, loaded, _ = model_file.load_model(path)
    k = loaded["g_a"]["conv_0"]["kernel"]
    assert k.dtype == np.float32
    np.testing.assert_array_equal(k, params["g_a"]["conv_0"]["kernel"].astype(np.float16))
    assert model_file.params_digest(loaded) == digest
    model_file.save_model(tmp_path / "m32.mracnn", _model_config(), params)
    assert path.stat().st_size < (tmp_path / "m32.mracnn").stat().st_size


def test_a_model_trained_in_bfloat16_is_stored_as_a_float32_model(tmp_path):
    """compute_dtype is how a run computed, not what the model is: a model file runs in float32
    (the codec's precision), and its metadata says what the run used."""
    config = _model_config()
    config.compute_dtype = "bfloat16"
    model_file.save_model(tmp_path / "m.mracnn", config, _params(), metadata={"step": 7})
    cfg, _, meta = model_file.load_model(tmp_path / "m.mracnn")
    assert cfg.compute_dtype == "float32"
    assert meta == {"step": 7, "trained_compute_dtype": "bfloat16"}
    assert config.compute_dtype == "bfloat16"  # the caller's config is left as it is


def test_params_digest_order_independent_and_sensitive():
    a = _params()
    b = {"entropy": a["entropy"], "g_a": a["g_a"]}
    assert model_file.params_digest(a) == model_file.params_digest(b)
    c = jax.tree_util.tree_map(np.copy, a)
    c["entropy"]["scale"][0] = np.nextafter(c["entropy"]["scale"][0], np.float32(1))
    assert model_file.params_digest(a) != model_file.params_digest(c)


def test_model_file_clear_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        model_file.load_model(tmp_path / "missing.mracnn")
    junk = tmp_path / "junk.mracnn"
    junk.write_bytes(b"hello, not a model")
    with pytest.raises(model_file.ModelFileError, match="not an MRACNN model file"):
        model_file.load_model(junk)
    other = tmp_path / "other.zip"
    with zipfile.ZipFile(other, "w") as zf:
        zf.writestr("readme.txt", "x")
    with pytest.raises(model_file.ModelFileError, match="no header.json"):
        model_file.load_model(other)

    good = tmp_path / "good.mracnn"
    model_file.save_model(good, _model_config(), _params())
    data = bytearray(good.read_bytes())
    with zipfile.ZipFile(good) as zf:
        info = zf.getinfo("params/g_a/conv_0/kernel.npy")
    # Flip one byte inside the stored array: the zip CRC catches it.
    pos = info.header_offset + 30 + len(info.filename) + len(info.extra) + 200
    data[pos] ^= 0xFF
    bad = tmp_path / "bad.mracnn"
    bad.write_bytes(bytes(data))
    with pytest.raises(model_file.ModelFileError, match="corrupt"):
        model_file.load_model(bad)

    # A consistent zip whose header digest was edited.
    def rewrite(dst, edit):
        with zipfile.ZipFile(good) as src, zipfile.ZipFile(dst, "w") as out:
            for name in src.namelist():
                raw = src.read(name)
                if name == "header.json":
                    h = json.loads(raw)
                    edit(h)
                    raw = json.dumps(h).encode()
                out.writestr(name, raw)

    rewrite(tmp_path / "digest.mracnn", lambda h: h.update(params_digest="0" * 64))
    with pytest.raises(model_file.ModelFileError, match="digest mismatch"):
        model_file.load_model(tmp_path / "digest.mracnn")
    rewrite(tmp_path / "v9.mracnn", lambda h: h.update(format_version=9))
    with pytest.raises(model_file.ModelFileError, match="format version 9"):
        model_file.load_model(tmp_path / "v9.mracnn")
    with pytest.raises(ValueError, match="has '/'"):
        model_file.save_model(tmp_path / "x.mracnn", _model_config(), {"a/b": np.zeros(2)})


def test_export_from_checkpoint(tmp_path):
    st, _ = _state()
    mngr = checkpoint.CheckpointManager(tmp_path / "wd" / "checkpoints")
    mngr.save(
        3,
        st,
        {
            "config": {
                "model": {"name": "x", "N": 8},
                "train": {"lmbda": 0.013, "loss_metric": "mse"},
            }
        },
    )
    mngr.close()
    out = tmp_path / "export.mracnn"
    digest = export.export_from_checkpoint(tmp_path / "wd", out)
    cfg, params, meta = model_file.load_model(out)
    assert cfg.N == 8 and meta["step"] == 1 and meta["lmbda"] == 0.013
    assert_trees_equal(params, jax.device_get(st.params))
    assert digest == model_file.params_digest(jax.device_get(st.params))
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        export.export_from_checkpoint(tmp_path / "nothing", out)


def test_train_py_export_only(tmp_path):
    st, _ = _state()
    mngr = checkpoint.CheckpointManager(tmp_path / "wd" / "checkpoints")
    mngr.save(1, st, {"config": {"model": {"name": "x"}, "train": {}}})
    mngr.close()
    proc = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "--export_only", f"--workdir={tmp_path / 'wd'}"],
        check=False,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO,
        env=dict(os.environ, JAX_PLATFORMS="cpu"),
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    _, params, _ = model_file.load_model(tmp_path / "wd" / "model.mracnn")
    assert_trees_equal(params, jax.device_get(st.params))


if __name__ == "__main__":
    if len(sys.argv) == 5 and sys.argv[1] == "child":
        _child(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        raise SystemExit("usage: test_checkpoint.py child CONFIG_JSON WORKDIR PAUSE_AT_STEP")

"""The cool-down branch (mracnn_jax/training/cooldown.py): a scaled step is a step at a scaled
learning rate, and the branch is validated and exported but never reaches the checkpoints."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from tiny_training import TinyCodec, assert_trees_equal, params_of, tiny_config  # a sibling

from mracnn_jax import model_file
from mracnn_jax.training import cooldown
from mracnn_jax.training.run_log import read_metrics
from mracnn_jax.training.train_lib import train_and_evaluate
from mracnn_jax.training.train_state import TrainState


def test_factors_fall_linearly_to_the_final_factor():
    assert cooldown.factors(4, 0.2) == pytest.approx([0.8, 0.6, 0.4, 0.2])
    assert cooldown.factors(0, 0.1) == []
    with pytest.raises(ValueError):
        cooldown.factors(3, 1.5)


def test_a_scaled_step_is_a_step_at_the_scaled_rate():
    """Adam with clipping: the full step's change times s equals the step at rate s·lr, and the
    optimiser state is the same (its moments do not depend on the rate)."""
    rng = np.random.default_rng(0)
    params = {
        "w": jnp.asarray(rng.standard_normal((5, 3)), jnp.float32),
        "b": jnp.asarray(rng.standard_normal(3), jnp.float32),
    }
    grads = [
        jax.tree.map(lambda p: jnp.asarray(rng.standard_normal(p.shape) * 3, jnp.float32), params)
        for _ in range(3)
    ]

    def tx(lr):
        return optax.chain(optax.clip_by_global_norm(1.0), optax.adam(lr))

    full = TrainState.create(params, tx(1e-2))
    for g in grads[:2]:  # some history in the moments
        full = full.apply_gradients(g, tx(1e-2))
    s = 0.3
    stepped = full.apply_gradients(grads[2], tx(1e-2))
    scaled = cooldown._scaled_update(full.params, stepped.params, jnp.float32(s))
    direct = full.apply_gradients(grads[2], tx(s * 1e-2))
    for k in params:
        np.testing.assert_allclose(scaled[k], direct.params[k], rtol=1e-6, atol=1e-7)
    assert_trees_equal(stepped.opt_state, direct.opt_state)


def test_the_branch_is_exported_but_never_checkpointed(tmp_path):
    """Two sittings (10 + 10 steps) with a 4-step cool-down at the end of each against 20
    straight steps without: the same training trajectory, bit for bit, and the same data order;
    the exported model is the cooled one."""
    cooled_cfg = tiny_config(tmp_path, num_steps=10, cooldown_steps=4, cooldown_final_factor=0.25)
    wd = tmp_path / "cooled"
    first = train_and_evaluate(cooled_cfg, str(wd), model=TinyCodec())
    exported_first = params_of(wd)
    cooled_cfg.train.num_steps = 20
    resumed = train_and_evaluate(cooled_cfg, str(wd), model=TinyCodec())
    straight = train_and_evaluate(
        tiny_config(tmp_path, num_steps=20), str(tmp_path / "straight"), model=TinyCodec()
    )
    assert_trees_equal(jax.device_get(resumed.params), jax.device_get(straight.params))
    assert int(first.step) == 10 and int(resumed.step) == 20

    history, plain = read_metrics(wd), read_metrics(tmp_path / "straight")
    values = ("loss", "bpp", "mse")
    assert [r["step"] for r in history.train] == [5, 10, 15, 20]
    assert [[r[k] for k in values] for r in history.train] == [
        [r[k] for k in values] for r in plain.train
    ]
    # The cool-down's records: logged as their own split, at the rate falling to 1/4.
    cool = history.cooldown
    assert [r["step"] for r in cool] == [14, 24]  # each sitting's cool-down ends 4 steps on
    assert all(r["lr"] == pytest.approx(0.25e-3) for r in cool)
    assert [(r["step"], r["cooldown_steps"]) for r in history.eval] == [(10, 4), (20, 4)]

    _, params, meta = model_file.load_model(wd / "model.mracnn")
    assert meta["cooldown_steps"] == 4 and meta["step"] == 20
    assert meta["eval"]["cooldown_steps"] == 4
    straight_params = params_of(tmp_path / "straight")
    differs = jax.tree.leaves(
        jax.tree.map(lambda a, b: not np.array_equal(a, b), params, straight_params)
    )
    assert any(differs)  # the exported model is the cooled one, not the checkpoint's
    assert any(
        jax.tree.leaves(jax.tree.map(lambda a, b: not np.array_equal(a, b), params, exported_first))
    )


def test_a_rerun_of_a_finished_run_exports_the_same_cooled_model(tmp_path):
    """A run that resumes at num_steps (its last step was checkpointed, then it was stopped, or it
    simply finished) trains nothing, but cools down from the same checkpoint and data position as
    the finished run did: the same export, not the uncooled checkpoint over it."""
    config = tiny_config(tmp_path, num_steps=6, cooldown_steps=3, cooldown_final_factor=0.25)
    wd = tmp_path / "wd"
    train_and_evaluate(config, str(wd), model=TinyCodec())
    _, first, first_meta = model_file.load_model(wd / "model.mracnn")
    state = train_and_evaluate(config, str(wd), model=TinyCodec())
    _, again, meta = model_file.load_model(wd / "model.mracnn")
    assert int(state.step) == 6
    assert_trees_equal(again, first)
    assert meta["cooldown_steps"] == 3 and meta["eval"] == first_meta["eval"]


def test_a_run_past_its_time_limit_shortens_the_cool_down(tmp_path):
    """A budget spent before the first step: no time is left for the cool-down, so none runs; the
    export is the checkpoint's parameters, validated."""
    config = tiny_config(tmp_path, num_steps=20, cooldown_steps=50, time_limit_s=1e-6)
    wd = tmp_path / "wd"
    state = train_and_evaluate(config, str(wd), model=TinyCodec())
    _, params, meta = model_file.load_model(wd / "model.mracnn")
    assert int(state.step) == 1 and "cooldown_steps" not in meta
    assert_trees_equal(params, jax.device_get(state.params))
    assert meta["eval"] and "cooldown_steps" not in meta["eval"]
    assert [r["step"] for r in read_metrics(wd).eval] == [1]
    assert not read_metrics(wd).cooldown

"""The optimiser and its learning-rate schedules (training/train_state.py)."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import pytest

from mracnn_jax.training import defaults, train_state


def test_lr_schedules():
    c = defaults.training_config()
    c.num_steps, c.learning_rate = 1000, 1e-4
    c.lr_schedule = "constant"
    assert float(train_state.make_lr_schedule(c)(999)) == pytest.approx(1e-4)
    c.lr_schedule, c.lr_decay_at, c.lr_decay_factor = "step", (0.5, 0.9), 0.1
    s = train_state.make_lr_schedule(c)
    assert [float(s(i)) for i in (0, 499, 500, 899, 900)] == pytest.approx(
        [1e-4, 1e-4, 1e-5, 1e-5, 1e-6]
    )
    c.lr_schedule, c.lr_final_factor = "cosine", 0.01
    s = train_state.make_lr_schedule(c)
    assert float(s(0)) == pytest.approx(1e-4) and float(s(1000)) == pytest.approx(1e-6)
    c.warmup_steps = 100
    s = train_state.make_lr_schedule(c)
    assert float(s(50)) == pytest.approx(5e-5) and float(s(100)) == pytest.approx(1e-4)
    c.lr_schedule, c.lr_decay_at = "step", (0.5, 0.9)  # after the warm-up: the same steps
    s = train_state.make_lr_schedule(c)
    assert [float(s(i)) for i in (100, 499, 500, 900)] == pytest.approx([1e-4, 1e-4, 1e-5, 1e-6])
    c.lr_decay_at = (0.1, 0.9)  # step 100 is the warm-up's last: refused, not dropped
    with pytest.raises(ValueError, match="inside the warm-up of 100 steps"):
        train_state.make_lr_schedule(c)
    c.lr_schedule = "plateau"
    with pytest.raises(ValueError, match="lr_schedule"):
        train_state.make_lr_schedule(c)


def test_optimizer_clips_gradients():
    c = defaults.training_config()
    c.lr_schedule, c.learning_rate, c.grad_clip_norm = "constant", 1.0, 1.0
    tx = train_state.make_optimizer(c)
    params = {"w": jnp.zeros(4)}
    st = train_state.TrainState.create(params, tx)
    st = st.apply_gradients({"w": jnp.full(4, 1e6)}, tx)
    assert int(st.step) == 1 and np.all(np.isfinite(np.asarray(st.params["w"])))

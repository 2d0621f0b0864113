"""The optimiser and its learning-rate schedules (training/train_state.py)."""

from __future__ import annotations

import jax
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


@pytest.mark.parametrize("grad_scale", [1e-3, 1e3], ids=["unclipped", "clipped"])
def test_flat_optimizer_moves_each_parameter_as_per_leaf_adam_does(grad_scale):
    """Three steps of the flat optimiser against optax's per-leaf clipping and Adam: the same
    parameters, bit for bit while the gradient is under the clipping norm (Adam is elementwise);
    within float rounding when it is clipped (the global norm then sums in another order). Adam's
    moments are one vector, the per-leaf moments concatenated in the parameters' order."""
    c = defaults.training_config()
    c.lr_schedule, c.learning_rate, c.grad_clip_norm = "constant", 1e-2, 1.0
    keys = jax.random.split(jax.random.PRNGKey(0), 4)
    params = {"b": {"kernel": jax.random.normal(keys[0], (3, 3, 2, 4))}, "a": jnp.ones(5)}
    flat_tx, leaf_tx = train_state.make_optimizer(c), train_state.make_optimizer(c, flat=False)
    flat = train_state.TrainState.create(params, flat_tx)
    leaf = train_state.TrainState.create(params, leaf_tx)
    for k in keys[1:]:
        grads = jax.tree_util.tree_map(
            lambda p, k=k: grad_scale * jax.random.normal(k, p.shape), params
        )
        flat, leaf = flat.apply_gradients(grads, flat_tx), leaf.apply_gradients(grads, leaf_tx)
    exact = grad_scale < 1
    for got, want in zip(
        jax.tree_util.tree_leaves(flat.params), jax.tree_util.tree_leaves(leaf.params)
    ):
        if exact:
            np.testing.assert_array_equal(got, want)
        else:
            np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    adam_flat = flat.opt_state[1][0]
    adam_leaf = leaf.opt_state[1][0]
    for name in ("mu", "nu"):
        moment = getattr(adam_flat, name)
        assert moment.shape == (sum(p.size for p in jax.tree_util.tree_leaves(params)),)
        per_leaf = jnp.concatenate(
            [m.ravel() for m in jax.tree_util.tree_leaves(getattr(adam_leaf, name))]
        )
        np.testing.assert_allclose(moment, per_leaf, rtol=0 if exact else 1e-5)

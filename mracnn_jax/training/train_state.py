"""The train state (step, params, optimiser state) and the optimiser built from ``config.train``.

The optimiser is ``clip_by_global_norm(grad_clip_norm)`` followed by Adam driven by the schedule
of ``make_lr_schedule``. It is not stored in the state (it is rebuilt from the config), so the
state is a plain pytree of arrays that orbax saves and restores exactly.

The optimiser works on one vector (``optax.flatten``): the gradient's leaves, each flattened, are
concatenated in ``jax.tree_util`` order of the parameters, clipped and fed to Adam as a single
``[P]`` array, and the update is split back into the parameters' shapes. Adam's moments ``mu`` and
``nu`` are therefore stored as ``[P]`` vectors, not as trees shaped like the parameters. Adam is
elementwise, so each parameter's update is the one per-leaf Adam computes; only the global norm of
the clipping sums in another order. What it saves is the per-leaf graph: the models have close to
900 parameter arrays, and a dozen operations per array for clipping and Adam made the optimiser
the larger half of the training step's compile (the small preset's step on the CPU at the tests'
XLA level, jax 0.4.34: 94 s of tracing and compilation per leaf, 49 s flat;
``benchmarks/bench_optimizer_compile.py``). Checkpoints that
hold per-leaf moments (written before) are flattened when restored (``checkpoint.py``).
"""

from __future__ import annotations

from typing import Any

import flax
import jax
import jax.numpy as jnp
import optax

from mracnn_jax.training import defaults
from mracnn_jax.training.defaults import LR_SCHEDULES


@flax.struct.dataclass
class TrainState:
    """``step``: int32 scalar, the number of optimiser steps taken; ``params``: the model's
    'params' collection; ``opt_state``: the optax state for ``params``."""

    step: jax.Array
    params: Any
    opt_state: Any

    @classmethod
    def create(cls, params: Any, tx: optax.GradientTransformation) -> TrainState:
        return cls(step=jnp.zeros((), jnp.int32), params=params, opt_state=tx.init(params))

    def apply_gradients(self, grads: Any, tx: optax.GradientTransformation) -> TrainState:
        updates, opt_state = tx.update(grads, self.opt_state, self.params)
        params = optax.apply_updates(self.params, updates)
        return self.replace(step=self.step + 1, params=params, opt_state=opt_state)


def make_lr_schedule(train_config) -> optax.Schedule:
    """The learning rate as a function of the step (see ``defaults.training_config``)."""
    lr = float(train_config.learning_rate)
    total = int(train_config.num_steps)
    warmup = int(train_config.get("warmup_steps", 0))
    kind = train_config.get("lr_schedule", "constant")
    if kind == "constant":
        main = optax.constant_schedule(lr)
    elif kind == "cosine":
        main = optax.cosine_decay_schedule(
            lr,
            decay_steps=max(total - warmup, 1),
            alpha=float(train_config.get("lr_final_factor", 0.0)),
        )
    elif kind == "step":
        main = optax.piecewise_constant_schedule(lr, defaults.lr_decay_boundaries(train_config))
    else:
        raise ValueError(f"train.lr_schedule must be one of {LR_SCHEDULES}, got {kind!r}")
    if warmup > 0:
        return optax.join_schedules(
            [optax.linear_schedule(0.0, lr, warmup), main], boundaries=[warmup]
        )
    return main


def make_optimizer(train_config, *, flat: bool = True) -> optax.GradientTransformation:
    """Gradient clipping (when ``grad_clip_norm`` > 0), then Adam with the schedule, on the
    parameters flattened into one vector (see the module's docstring). ``flat=False`` gives the
    same optimiser on each leaf, with moments shaped like the parameters: the reference that the
    flat one is tested and timed against."""
    adam = optax.adam(
        make_lr_schedule(train_config),
        b1=float(train_config.get("adam_b1", 0.9)),
        b2=float(train_config.get("adam_b2", 0.999)),
        eps=float(train_config.get("adam_eps", 1e-8)),
    )
    clip = float(train_config.get("grad_clip_norm", 0.0))
    tx = optax.chain(optax.clip_by_global_norm(clip), adam) if clip > 0 else adam
    return optax.flatten(tx) if flat else tx

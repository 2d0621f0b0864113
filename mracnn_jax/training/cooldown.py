"""The cool-down branch: a run that ends in many short sittings still exports a model trained to
a low learning rate, while its checkpoints keep the full rate (warmup-stable-decay with a branch).

At the end of a sitting (``num_steps`` reached or ``time_limit_s`` spent) the loop saves its
checkpoint as usual, then trains ``train.cooldown_steps`` more steps on a copy of the state with
the learning rate multiplied by

    s_i = 1 + (f - 1) · i / n,        i = 1 .. n,  f = train.cooldown_final_factor,

a straight line from the full rate down to f times it; it validates and exports *those*
parameters. The copy is never checkpointed: the next sitting resumes from the checkpoint, at the
full rate, as if the cool-down had not happened (its batches are read again there), so many
sittings add up to one long run at the full rate, and each leaves a cooled model behind.

The rate is scaled without a second compiled step: Adam's moments do not depend on the learning
rate and its update is ``-lr · m̂ / (√v̂ + ε)`` (gradient clipping acts before it), so a step at
rate ``s · lr`` is the full step's parameter change times s:

    params_i = params_{i-1} + s_i · (step(params_{i-1}) - params_{i-1}),

with the optimiser state advanced as by the full step. The step's ``lr`` metric is scaled alike.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp

from mracnn_jax.training.train_state import TrainState


def factors(num_steps: int, final: float) -> list[float]:
    """The learning-rate multipliers ``s_1 .. s_n`` of the module docstring."""
    if num_steps < 0 or not 0.0 <= final <= 1.0:
        raise ValueError(f"cool-down of {num_steps} steps to {final}: need n >= 0, 0 <= f <= 1")
    return [1.0 + (final - 1.0) * i / num_steps for i in range(1, num_steps + 1)]


@jax.jit
def _scaled_update(old: Any, new: Any, s: jax.Array) -> Any:
    return jax.tree.map(lambda o, n: (o + s * (n - o)).astype(o.dtype), old, new)


def run(
    step_fn: Callable[[TrainState, Any, Any], tuple[TrainState, dict[str, Any]]],
    state: TrainState,
    batches: Iterator[Any],
    noise_key: Any,
    num_steps: int,
    final: float,
    on_step: Callable[[int, dict[str, Any]], None],
) -> TrainState:
    """``num_steps`` steps of ``step_fn`` (the compiled training step) from ``state`` at the
    falling rate; ``on_step(step, metrics)`` after each. Returns the cooled state (not saved)."""
    state = jax.tree.map(jnp.copy, state)  # the caller's state stays valid (steps may donate)
    for s in factors(num_steps, final):
        old = jax.tree.map(jnp.copy, state.params)
        new, metrics = step_fn(state, next(batches), noise_key)
        scale = jnp.asarray(s, jnp.float32)
        state = new.replace(params=_scaled_update(old, new.params, scale))
        metrics = dict(metrics, lr=metrics["lr"] * scale)
        on_step(int(jax.device_get(state.step)), metrics)
    return state


def reserve_seconds(num_steps: int, seconds_per_step: float) -> float:
    """Wall-clock time to keep for the cool-down before a time limit: its steps at the rate
    measured so far, plus a fifth for the validation and export that follow."""
    return 1.2 * num_steps * seconds_per_step

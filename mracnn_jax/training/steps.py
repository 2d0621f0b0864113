"""The jitted pieces of training: the mesh, the train state, the training and validation steps.

Devices and sharding
--------------------
One ``jax.sharding.Mesh`` over all devices (all processes) with a single axis 'data'. Batches are
sharded along B (``NamedSharding(mesh, P('data'))``; each process feeds its ``B / process_count``
images); the train state is replicated (``P()``). ``train_step`` is one ``jax.jit`` with those
shardings, so XLA inserts the gradient all-reduce.

Randomness
----------
Parameters are initialised from ``fold_in(PRNGKey(seed), 0)``; the training noise of step s
(the model's 'noise' rng, the U(−½, ½) quantisation proxy) is
``fold_in(fold_in(PRNGKey(seed), 1), s)``, a pure function of the step (``root_keys``,
``make_train_step``), which is what makes a resumed run bitwise equal to an uninterrupted one.

Shapes: training batches are uint8 (or float in [0, 1]) ``[B, H, W, C]``; the state is a
``TrainState`` (``train_state``); metrics are scalars per step, per image in validation.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jax.sharding import Mesh, NamedSharding
from jax.sharding import PartitionSpec as P

from mracnn_jax import model_file
from mracnn_jax.entropy.rate import bits_per_image
from mracnn_jax.metrics import min_size_for_ms_ssim, ms_ssim
from mracnn_jax.models.objective import rate_distortion_loss
from mracnn_jax.models.registry import float32_model, init_params
from mracnn_jax.training.train_state import TrainState, make_lr_schedule

DATA_AXIS = "data"


def make_mesh(devices: list | None = None) -> Mesh:
    """A 1-D mesh with axis 'data' over ``devices`` (default: every device of every process)."""
    devices = jax.devices() if devices is None else list(devices)
    return Mesh(np.asarray(devices), (DATA_AXIS,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P(DATA_AXIS))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def root_keys(seed: int) -> tuple[jax.Array, jax.Array]:
    """``(init_key, noise_key)`` of a run: fold_in(PRNGKey(seed), 0) and fold_in(..., 1)."""
    root = jax.random.PRNGKey(int(seed))
    return jax.random.fold_in(root, 0), jax.random.fold_in(root, 1)


def init_train_state(
    model, tx: optax.GradientTransformation, init_key: jax.Array, mesh: Mesh
) -> TrainState:
    """A fresh, replicated train state.

    Parameters come from ``init_params`` (the forward pass traced, the keys and initialisers
    computed concretely: a jitted Flax ``init`` compiles one key derivation per parameter and takes
    minutes on CPU); their shapes do not depend on the image size.
    """
    params = init_params(model, init_key)
    return place_replicated(TrainState.create(params, tx), mesh)


def params_from_model_file(path: str, like: Any) -> Any:
    """The parameters of an exported model file, checked against ``like`` (the freshly
    initialised parameters of the configured model): same tree, same shapes, as float32.

    Raises:
      ValueError: the file's parameters do not fit the model, naming the first difference.
    """
    params = model_file.load_model(path)[1]
    want = {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_leaves_with_path(like)}
    have = {jax.tree_util.keystr(k): v for k, v in jax.tree_util.tree_leaves_with_path(params)}
    for key in sorted(set(want) | set(have)):
        if key not in have:
            raise ValueError(f"train.init_from={path}: parameter {key} is missing from the file")
        if key not in want:
            raise ValueError(f"train.init_from={path}: parameter {key} is not in the model")
        if tuple(np.shape(have[key])) != tuple(np.shape(want[key])):
            raise ValueError(
                f"train.init_from={path}: parameter {key} has shape {np.shape(have[key])}, "
                f"the model {np.shape(want[key])}"
            )
    return jax.tree_util.tree_map(lambda a: np.asarray(a, np.float32), params)


def place_replicated(tree: Any, mesh: Mesh) -> Any:
    """Host arrays (identical on every process) → replicated jax.Arrays on the mesh."""
    sharding = replicated(mesh)

    def put(a):
        a = np.asarray(a)
        return jax.make_array_from_callback(a.shape, sharding, lambda idx: a[idx])

    return jax.tree_util.tree_map(put, tree)


def make_global_batch(local_batch: np.ndarray, mesh: Mesh) -> jax.Array:
    """This process's ``[B_local, ...]`` slice → the global ``[B, ...]`` array sharded on 'data'."""
    return jax.make_array_from_process_local_data(batch_sharding(mesh), local_batch)


def _to_unit_float(batch: jax.Array) -> jax.Array:
    if jnp.issubdtype(batch.dtype, jnp.integer):
        return batch.astype(jnp.float32) / 255.0
    return batch.astype(jnp.float32)


def _global_norm(tree: Any) -> jax.Array:
    """L2 norm of all leaves (optax.global_norm is deprecated in newer optax)."""
    return jnp.sqrt(
        sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree_util.tree_leaves(tree))
    )


def make_train_step(
    model, tx: optax.GradientTransformation, train_config
) -> Callable[[TrainState, jax.Array, jax.Array], tuple[TrainState, dict[str, jax.Array]]]:
    """The pure step ``(state, batch, noise_key) -> (state, metrics)`` (not yet jitted).

    ``batch`` is uint8 `[B, H, W, 3]` (or float in [0, 1]); the noise rng of the step is
    ``fold_in(noise_key, state.step)``. Metrics: loss, bpp, mse, psnr (+ ms_ssim), grad_norm, lr.
    """
    lmbda = float(train_config.lmbda)
    metric = str(train_config.loss_metric)
    schedule = make_lr_schedule(train_config)

    def train_step(state: TrainState, batch: jax.Array, noise_key: jax.Array):
        x = _to_unit_float(batch)
        rng = jax.random.fold_in(noise_key, state.step)

        def loss_fn(params):
            out = model.apply({"params": params}, x, train=True, rngs={"noise": rng})
            return rate_distortion_loss(x, out, lmbda=lmbda, metric=metric)

        (_, metrics), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params)
        metrics = dict(metrics)
        metrics["grad_norm"] = _global_norm(grads)
        metrics["lr"] = jnp.asarray(schedule(state.step), jnp.float32)
        return state.apply_gradients(grads, tx), metrics

    return train_step


def jit_train_step(train_step, mesh: Mesh):
    """``jax.jit`` with the state replicated and the batch sharded on 'data'."""
    repl = replicated(mesh)
    donate = () if jax.default_backend() == "cpu" else (0,)
    return jax.jit(
        train_step,
        in_shardings=(repl, batch_sharding(mesh), repl),
        out_shardings=(repl, repl),
        donate_argnums=donate,
    )


def make_eval_step(model, crop_size: int):
    """``(params, batch) -> per-image {bpp, mse, psnr[, ms_ssim]}`` at inference (rounding).

    The reconstruction is clipped to [0, 1] and rounded to 8 bits before the distortion, as a
    decoded image would be; bpp is the likelihood estimate, not a real bitstream. The networks
    compute in float32 whatever ``model``'s compute dtype: a model trained in bfloat16 is
    validated as the codec runs it (and as it was before training, for a run's start and end).
    """
    model = float32_model(model)
    with_ms_ssim = crop_size >= min_size_for_ms_ssim()

    def eval_step(params, batch):
        x = _to_unit_float(batch)
        out = model.apply({"params": params}, x, train=False)
        h, w = x.shape[1:3]
        x_hat = jnp.round(jnp.clip(out["x_hat"].astype(jnp.float32), 0.0, 1.0) * 255.0) / 255.0
        mse = jnp.mean(jnp.square(x_hat - x), axis=(1, 2, 3))
        res = {
            "bpp": bits_per_image(out["likelihoods"]) / (h * w),
            "mse": mse,
            "psnr": -10.0 * jnp.log10(jnp.maximum(mse, 1e-10)),
        }
        if with_ms_ssim:
            res["ms_ssim"] = ms_ssim(x_hat, x, max_val=1.0)
        return res

    return eval_step


def evaluate(
    eval_step, params, images: np.ndarray, batch_size: int, mesh: Mesh
) -> dict[str, float]:
    """Mean per-image metrics of ``eval_step`` over ``images`` (uint8 ``[N, c, c, 3]``)."""
    n = len(images)
    ndev = mesh.devices.size
    batch_size = int(math.ceil(max(batch_size, 1) / ndev) * ndev)
    sharding = batch_sharding(mesh)
    sums: dict[str, float] = {}
    for start in range(0, n, batch_size):
        chunk = images[start : start + batch_size]
        real = len(chunk)
        if real < batch_size:  # pad with copies of the last image; dropped below
            chunk = np.concatenate([chunk, np.repeat(chunk[-1:], batch_size - real, axis=0)])
        batch = jax.make_array_from_callback(chunk.shape, sharding, lambda idx, c=chunk: c[idx])
        res = jax.device_get(eval_step(params, batch))
        for k, v in res.items():
            sums[k] = sums.get(k, 0.0) + float(np.sum(np.asarray(v)[:real], dtype=np.float64))
    return {k: v / n for k, v in sums.items()}


def eval_rd_loss(metrics: dict[str, float], train_config) -> float:
    """The training loss's formula on validation means: ``λ·255²·mse + bpp`` ('mse'), or
    ``λ·(1 − ms_ssim) + bpp`` ('ms-ssim'; NaN without an ``ms_ssim`` value). Both terms are
    linear, so the mean over images of the per-image loss equals this."""
    lmbda = float(train_config.lmbda)
    if str(train_config.loss_metric) == "ms-ssim":
        return lmbda * (1.0 - metrics.get("ms_ssim", math.nan)) + metrics["bpp"]
    return lmbda * 255.0**2 * metrics["mse"] + metrics["bpp"]

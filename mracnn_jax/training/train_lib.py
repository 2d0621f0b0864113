"""The training loop: ``train_and_evaluate(config, workdir)``.

The step, the mesh and the noise keys are in ``steps`` (one mesh axis 'data' over every device
of every process; batches sharded along B, the state replicated); what a run writes and shows is
in ``run_log``.

Resume
------
* The parameters' and the noise's keys are fixed by ``train.seed``, and the noise of step s is a
  function of s alone (``steps.root_keys``), not of how many steps this process has run.
* The data iterator's position (records read per process, see ``input_pipeline``) is stored in
  every checkpoint next to the train state and the config; a restart rebuilds the iterator at that
  position.
So "20 steps" and "10 steps, stop, restart, 10 steps" give bitwise-identical parameters (tested).

Checkpoints and failures
------------------------
``workdir/checkpoints/<step>`` every ``train.checkpoint_every`` steps and at the end, keeping the
last ``train.keep_checkpoints``; the run resumes from the latest complete one. Metrics are fetched
and checked every ``train.log_every`` steps and before every checkpoint: a NaN/Inf loss raises
``NonFiniteLossError`` (the offending step named) before anything of the bad state is written.
``train.init_from`` starts a new run (no checkpoint yet) from an exported model file's
parameters with a fresh optimiser (``run_start``). ``train.time_limit_s`` ends a run early, cleanly (checkpoint, validation, export), after the step
during which the wall-clock budget ran out. SIGTERM or SIGINT (a preempted machine, Ctrl-C) ends
it at the next step boundary with a checkpoint of that step and ``stopping.Interrupted``, without
validation, cool-down or export; the same command resumes from there.

Validation
----------
On ``data.val_dir`` every ``train.eval_every`` steps and at the end; with ``train.eval_at_start``
also before the first step (step 0 of a new run), so that a run's end can be compared with the
parameters it started from. Each ``"eval"`` record has the per-image means (bpp, mse, psnr,
ms_ssim) and ``loss``, the training loss's formula on them (``eval_rd_loss``).

Cool-down
---------
With ``train.cooldown_steps``, each sitting ends with a branch at a falling learning rate that is
validated and exported but not checkpointed (``cooldown``): many short sittings, one long run.

Outputs in ``workdir``
----------------------
``config.json`` (+ ``config.yaml``), ``metrics.jsonl`` (one JSON object per log/eval point, with
``"split": "train"`` or ``"eval"``), ``started_from.json`` (with ``train.init_from``: the file
and its params digest, ``run_start``), ``checkpoints/``, TensorBoard events under ``tb/`` (written
with tensorboardX, a dependency of the ``train`` extra, which never imports TensorFlow; without it
a warning says so and the rest is written), and at the end the portable model file
``train.export_name`` (see ``mracnn_jax.model_file``).

Compilation cache
-----------------
``train_and_evaluate`` turns JAX's persistent compilation cache on (``use_compilation_cache``):
``$MRACNN_JAX_CACHE_DIR``, else ``~/.cache/mracnn-jax/xla``; ``MRACNN_JAX_CACHE_DIR=off`` turns it
off. A run of a config compiled before, in this or an earlier process, skips the compilation.

What the terminal shows
-----------------------
The config and the data folders are checked before anything is built or written
(``config_checks.check_run``: one ``ConfigError``). Before the first step a line says that the
training step is being compiled, and one after it how long that took; then a progress bar counts
steps, with the rate in steps per second (``steps/s``), the loss, bpp and PSNR of the last log
window. Library INFO logging (orbax's checkpoint lines, through absl) is raised to WARNING for the
length of the run so that it does not break the bar; this module's own lines stay.
"""

from __future__ import annotations

import itertools
import json
import logging
import math
import os
import signal
import time
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh

from mracnn_jax import model_file
from mracnn_jax.compilation_cache import compilation_cache_dir, enable_compilation_cache
from mracnn_jax.models.registry import build_model
from mracnn_jax.training import checkpoint as ckpt_lib
from mracnn_jax.training import (
    config_checks,
    cooldown,
    input_pipeline,
    run_log,
    run_start,
    stopping,
)
from mracnn_jax.training.run_log import NonFiniteLossError  # noqa: F401 - raised by the loop
from mracnn_jax.training.steps import (
    eval_rd_loss,
    evaluate,
    init_train_state,
    jit_train_step,
    make_eval_step,
    make_global_batch,
    make_mesh,
    make_train_step,
    place_replicated,
    replicated,
    root_keys,
)
from mracnn_jax.training.train_state import TrainState, make_optimizer

logger = logging.getLogger(__name__)


# -------------------------------------------------------------------------------------------------
# The loop.


def _validate(config: ml_collections.ConfigDict, num_devices: int, num_processes: int) -> None:
    """What ``config_checks`` cannot know: the batch divides among the devices and processes."""
    t = config.train
    if t.batch_size % num_devices or t.batch_size % num_processes:
        raise config_checks.ConfigError(
            f"train.batch_size = {t.batch_size} must be divisible by the number of devices "
            f"({num_devices}) and processes ({num_processes})"
        )


def _compile_step(jitted, args: tuple, is_main: bool):
    """Compiles the jitted training step for ``args`` ahead of the first step, saying so before
    and with the time it took after; returns the compiled step."""
    run_log.say(
        "compiling the training step (once per run; minutes for a full-size model on a CPU)...",
        is_main,
    )
    t0 = time.perf_counter()
    compiled = jitted.lower(*args).compile()
    run_log.say(f"compiled the training step in {time.perf_counter() - t0:.1f} s", is_main)
    return compiled


def use_compilation_cache() -> str | None:
    """Turns JAX's persistent compilation cache on for the run, so that a restarted or repeated
    run skips compiling its step: in ``$MRACNN_JAX_CACHE_DIR`` (``off``: none), else in the
    user's cache folder (``mracnn_jax.compilation_cache``). Returns the folder, None for none; one
    that cannot be made is a warning, and the run compiles without the cache."""
    path = compilation_cache_dir()
    if path is None:
        return None
    try:
        enable_compilation_cache(path)
    except OSError as e:
        logger.warning("no compilation cache (cannot create %r: %s)", path, e)
        return None
    return path


def train_and_evaluate(
    config: ml_collections.ConfigDict, workdir: str, *, model=None
) -> TrainState:
    """Trains (or resumes) in ``workdir`` up to ``config.train.num_steps``; returns the final
    state.

    Args:
      config: the experiment config (``config.model``, ``config.train``, ``config.data``).
      workdir: output folder (created); an existing one with checkpoints is resumed.
      model: the Flax module to train; default ``build_model(config.model)``.

    Raises:
      ConfigError: the config or its data folders (``config_checks.check_run``), found before
        the model is built or ``workdir`` is created.
      NonFiniteLossError: the loss became NaN/Inf (nothing of that state is saved).
    """
    run_t0 = time.time()
    config_checks.check_run(config)
    use_compilation_cache()
    mesh = make_mesh()
    _validate(config, mesh.devices.size, jax.process_count())
    with run_log.quiet_library_logging():
        return _train(config, os.path.abspath(workdir), model, mesh, run_t0)


def _train(config, workdir: str, model, mesh: Mesh, run_t0: float) -> TrainState:
    """The body of ``train_and_evaluate``, after the checks."""
    os.makedirs(workdir, exist_ok=True)
    t = config.train
    process_index, process_count = jax.process_index(), jax.process_count()
    is_main = process_index == 0

    if model is None:
        model = build_model(config.model)
    config_json = (
        run_log.save_config(config, workdir)
        if is_main
        else json.loads(config.to_json_best_effort())
    )

    tx = make_optimizer(t)
    init_key, noise_key = root_keys(t.seed)
    state = init_train_state(model, tx, init_key, mesh)
    noise_key = place_replicated(np.asarray(jax.device_get(noise_key)), mesh)

    ckpt_dir = os.path.join(workdir, "checkpoints")
    ckpts = ckpt_lib.CheckpointManager(ckpt_dir, max_to_keep=int(t.keep_checkpoints))
    state, data_state = run_start.begin(state, tx, t.get("init_from", ""), ckpts, mesh, workdir)
    start_step = int(jax.device_get(state.step))

    local_batch = int(t.batch_size) // process_count
    train_iter = input_pipeline.make_train_iterator(
        config.data,
        crop_size=int(t.crop_size),
        batch_size=local_batch,
        seed=int(t.seed),
        process_index=process_index,
        process_count=process_count,
        state=data_state,
        channels=model.cfg.channels,
    )
    p_train_step = jit_train_step(make_train_step(model, tx, t), mesh)

    eval_images = None
    eval_fn = None
    num_eval = int(t.get("num_eval_images", 0))
    val_dir = config.data.get("val_dir", "")
    if num_eval > 0 and val_dir and int(t.get("eval_every", 0)) >= 0:
        eval_crop = int(t.get("eval_crop_size", t.crop_size))
        eval_images, _ = input_pipeline.load_eval_images(
            val_dir, eval_crop, num_eval, channels=model.cfg.channels
        )
        eval_fn = jax.jit(make_eval_step(model, eval_crop), out_shardings=replicated(mesh))

    writer = run_log.MetricWriter(workdir, enabled=is_main)
    num_steps = int(t.num_steps)
    log_every, ckpt_every = int(t.log_every), int(t.checkpoint_every)
    eval_every = int(t.get("eval_every", 0))
    window: list[tuple[int, dict[str, Any]]] = []
    window_t0, data_time = time.perf_counter(), 0.0
    last_eval: dict[str, float] = {}

    def flush(step: int, split: str = "train") -> None:
        nonlocal window, window_t0, data_time
        if not window:
            return
        host = [(s, {k: np.asarray(v) for k, v in jax.device_get(m).items()}) for s, m in window]
        run_log.check_finite(host, ckpts.latest_step(), ckpt_dir)
        elapsed = max(time.perf_counter() - window_t0, 1e-9)
        means = {k: float(np.mean([m[k] for _, m in host])) for k in host[-1][1]}
        means["lr"] = float(host[-1][1]["lr"])
        means["steps_per_sec"] = len(host) / elapsed
        means["images_per_sec"] = len(host) * int(t.batch_size) / elapsed
        means["data_wait_frac"] = data_time / elapsed
        means["skipped_images"] = train_iter.num_skipped
        writer.write(step, split, means)
        pbar.set_postfix(
            loss=f"{means['loss']:.4f}",
            bpp=f"{means['bpp']:.4f}",
            psnr=f"{means['psnr']:.2f}",
            **{"steps/s": f"{means['steps_per_sec']:.2f}"},
            refresh=False,
        )
        window, window_t0, data_time = [], time.perf_counter(), 0.0

    def save(step: int) -> None:
        extra = {
            "data": run_start.data_position(train_iter),
            "config": config_json,
            "step": step,
        }
        ckpts.save(step, state, extra)

    def run_eval(step: int, params: Any, **extra: int) -> dict[str, float]:
        res = evaluate(eval_fn, params, eval_images, int(t.get("eval_batch_size", 8)), mesh)
        res["loss"] = eval_rd_loss(res, t)
        res.update(extra)
        writer.write(step, "eval", res)
        shown = ", ".join(
            f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in res.items()
        )
        logger.info("step %d eval: %s", step, shown)
        return res

    pbar = run_log.progress_bar(num_steps, start_step, enabled=is_main)
    step = start_step
    time_limit = float(t.get("time_limit_s", 0.0))
    deadline = run_t0 + time_limit if time_limit > 0 else math.inf
    cool_steps = int(t.get("cooldown_steps", 0))
    cool_final = float(t.get("cooldown_final_factor", 0.1))
    reserve = 0.0  # seconds kept for the cool-down, from the rate measured since compiling
    per_step = 0.0  # that rate (seconds a step), once a step has been timed
    rate_t0, rate_step = time.perf_counter(), start_step
    interrupted = False
    try:
        with stopping.StopSignals() as signals:
            if eval_fn is not None and t.get("eval_at_start", False) and step < num_steps:
                run_eval(step, state.params)
                window_t0 = time.perf_counter()  # the first window's rate excludes this validation
            compiled = None
            while step < num_steps:
                t0 = time.perf_counter()
                batch = make_global_batch(next(train_iter), mesh)
                data_time += time.perf_counter() - t0
                if compiled is None:
                    compiled = _compile_step(p_train_step, (state, batch, noise_key), is_main)
                    window_t0 = time.perf_counter()  # the first window's rate excludes compiling
                    rate_t0, rate_step = window_t0, step
                state, metrics = compiled(state, batch, noise_key)
                step += 1
                pbar.update(1)
                window.append((step, metrics))
                last = step == num_steps
                check_clock = process_count == 1 or step % log_every == 0
                if cool_steps and step > rate_step:
                    per_step = (time.perf_counter() - rate_t0) / (step - rate_step)
                    reserve = cooldown.reserve_seconds(cool_steps, per_step)
                if not last and check_clock and stopping.time_is_up(deadline - reserve):
                    logger.info(
                        "time limit of %.0f s reached at step %d: stopping", time_limit, step
                    )
                    num_steps = step
                    last = True
                # a signal: checkpoint here and stop, no validation, cool-down or export
                interrupted = not last and check_clock and stopping.agreed(bool(signals.signum))
                do_ckpt = step % ckpt_every == 0 or last or interrupted
                at_end = last and not cool_steps  # with a cool-down, its result is validated
                periodic = eval_every > 0 and step % eval_every == 0
                do_eval = eval_fn is not None and (periodic or at_end)
                if step % log_every == 0 or do_ckpt or do_eval:
                    flush(step)
                if do_eval:
                    last_eval = run_eval(step, state.params)
                if do_ckpt:
                    save(step)
                if interrupted:
                    break
            ckpts.wait()
        # a signal in the last step (its checkpoint is saved); process 0's, as in the loop
        if interrupted or stopping.agreed(bool(signals.signum)):
            raise stopping.Interrupted(signals.signum or signal.SIGTERM, step, ckpt_dir)
        validated = compiled is not None and not cool_steps  # the loop validated its last step
        export_params, cooled = state.params, {}
        first_batches = []
        if cool_steps and compiled is None:
            # nothing trained in this run (it resumed at num_steps): the finished run's cool-down
            # again, from the same checkpoint and data position, so that a rerun exports the same
            first_batches.append(make_global_batch(next(train_iter), mesh))
            compiled = _compile_step(p_train_step, (state, first_batches[0], noise_key), is_main)
        if cool_steps and deadline < math.inf and per_step:
            # late for the time limit (a slow compile, a short budget): as many as still fit
            fit = stopping.agreed_count(max(0, int((deadline - time.time()) / per_step)))
            if fit < cool_steps:
                run_log.say(
                    f"time limit: the cool-down shortened to {fit} of {cool_steps} steps", is_main
                )
                cool_steps = fit
        if cool_steps:
            run_log.say(
                f"cooling down: {cool_steps} steps to {cool_final:g} x the rate "
                "(validated and exported, not checkpointed)",
                is_main,
            )

            def on_cool_step(cool_step: int, metrics: dict[str, Any]) -> None:
                window.append((cool_step, metrics))
                if cool_step % log_every == 0 or cool_step == step + cool_steps:
                    flush(cool_step, "cooldown")
                    pbar.set_description_str(f"cool-down {cool_step - step}/{cool_steps}")

            batches = itertools.chain(
                first_batches,
                (make_global_batch(next(train_iter), mesh) for _ in itertools.count()),
            )
            export_params = cooldown.run(
                compiled, state, batches, noise_key, cool_steps, cool_final, on_cool_step
            ).params
            cooled = {"cooldown_steps": cool_steps, "cooldown_final_factor": cool_final}
            if eval_fn is not None:
                last_eval = run_eval(step, export_params, cooldown_steps=cool_steps)
        elif eval_fn is not None and not validated:
            last_eval = run_eval(step, state.params)
        if is_main and t.get("export_name", ""):
            out = os.path.join(workdir, t.export_name)
            digest = model_file.save_model(
                out,
                config.model,
                jax.device_get(export_params),
                metadata={
                    "step": step,
                    "loss_metric": t.loss_metric,
                    "lmbda": float(t.lmbda),
                    "eval": last_eval,
                    **cooled,
                },
                dtype=t.get("export_dtype", "float32"),
            )
            logger.info("exported %s (params sha256 %s)", out, digest)
    finally:
        pbar.close()
        writer.close()
        train_iter.close()
        ckpts.close()
    return state

"""Where a training run starts, and the position it saves to start again from.

A run in a work directory starts in one of three ways (``begin``):

* from the latest complete checkpoint in ``workdir/checkpoints``: the train state (step,
  parameters, optimiser moments) exactly, and each process's position in the data order
  (``records_consumed``, the images skipped so far, the order's identity), so that the resumed
  run draws the same batches the uninterrupted one would have;
* from an exported model file (``train.init_from``, only when there is no checkpoint yet): its
  parameters, a fresh optimiser, step 0. The file's params digest is recorded in
  ``started_from.json`` (``save_start``), since the file at that path may be replaced later (a
  bundled model is): ``scripts/bundle_finetuned.py`` reads it (``read_start``) to tell a run
  bundled before from a continuation;
* from the freshly initialised parameters, otherwise.

``data_position`` is the counterpart of the checkpoint's restore: the iterator's position as the
checkpoint's ``extra["data"]`` stores it, one ``records_consumed`` entry per process.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils

from mracnn_jax import fileio, model_file
from mracnn_jax.training import checkpoint as ckpt_lib
from mracnn_jax.training import input_pipeline
from mracnn_jax.training.steps import params_from_model_file, place_replicated
from mracnn_jax.training.train_state import TrainState

logger = logging.getLogger(__name__)

#: The file that names the model a run started from (``save_start``), inside the work directory.
START_FILE = "started_from.json"


def begin(
    state: TrainState,
    tx,
    init_from: str,
    ckpts: ckpt_lib.CheckpointManager,
    mesh,
    workdir: str,
) -> tuple[TrainState, dict[str, Any] | None]:
    """The state a run starts from (module docstring), placed on ``mesh``, and the data position
    to give the input pipeline (None: the start of the data order). ``state``: the freshly
    initialised state; ``tx`` its optimiser; ``init_from`` the config's model file ('' for none).

    Raises:
      ValueError: the model file does not fit the model, or the checkpoint was written by
        another number of processes (its data position cannot be restored exactly).
    """
    last = ckpts.latest_step()
    if last is None:
        if init_from:
            state = TrainState.create(params_from_model_file(init_from, state.params), tx)
            state = place_replicated(state, mesh)
            logger.info("parameters initialised from %s (fresh optimiser, step 0)", init_from)
        if jax.process_index() == 0:  # a record left by an earlier start is not this run's
            if init_from:
                save_start(workdir, init_from, model_file.read_header(init_from)["params_digest"])
            else:
                Path(workdir, START_FILE).unlink(missing_ok=True)
        return state, None
    host_state, extra = ckpts.restore(last, state)
    data = extra.get("data") or {}
    consumed = data.get("records_consumed", [0])
    if len(consumed) != jax.process_count():
        raise ValueError(
            f"checkpoint {last} was written by {len(consumed)} processes, this run has "
            f"{jax.process_count()}: the data position cannot be restored exactly"
        )
    logger.info("resumed from checkpoint %d in %s", last, ckpts.directory)
    position = {
        "records_consumed": consumed[jax.process_index()],
        "skipped": data.get("skipped", {}),
        "order": data.get("order"),
    }
    return place_replicated(host_state, mesh), position


def data_position(it: input_pipeline.TrainIterator) -> dict[str, Any]:
    """The data position to store in a checkpoint: every process's ``records_consumed`` (gathered
    across processes), the skipped images, the backend and the data order's identity."""
    state = it.get_state()
    consumed = np.asarray([state["records_consumed"]], np.int64)
    if jax.process_count() > 1:
        consumed = np.asarray(multihost_utils.process_allgather(consumed)).reshape(-1)
    return {
        "records_consumed": [int(c) for c in consumed],
        "skipped": state["skipped"],
        "backend": state["backend"],
        "order": state["order"],
    }


def save_start(workdir: str, model_path: str, params_digest: str) -> None:
    """Records in ``workdir`` the model file a new run's parameters came from
    (``train.init_from``) and its params digest, which is what names the start."""
    record = {"file": os.path.abspath(model_path), "params_digest": params_digest}
    fileio.write_atomic(
        os.path.join(workdir, START_FILE), lambda f: f.write(json.dumps(record).encode())
    )


def read_start(workdir: str | os.PathLike) -> dict[str, str] | None:
    """``save_start``'s record (``file``, ``params_digest``), or None for a run that did not
    start from a model file or was started before the record existed."""
    path = Path(workdir) / START_FILE
    return json.loads(path.read_text()) if path.exists() else None

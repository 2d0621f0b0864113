"""The portable model file of a training checkpoint (``train.py --export_only``).

``export_from_checkpoint(workdir, out)`` restores the parameters of a checkpoint (orbax,
``training.checkpoint``) and writes them with ``model_file.save_model``, with the run's config and
the step, λ and loss metric as metadata.
"""

from __future__ import annotations

import json
import os

import numpy as np

from mracnn_jax import model_file
from mracnn_jax.training.checkpoint import CheckpointManager

__all__ = ["export_from_checkpoint"]


def _find_checkpoint_dir(path: str) -> str:
    for candidate in (os.path.join(path, "checkpoints"), path):
        if os.path.isdir(candidate) and any(
            name.isdigit() and os.path.isdir(os.path.join(candidate, name))
            for name in os.listdir(candidate)
        ):
            return candidate
    raise FileNotFoundError(
        f"no checkpoint under {path!r}: pass a training work directory or its checkpoints/ folder"
    )


def export_from_checkpoint(
    workdir_or_ckpt_dir: str | os.PathLike,
    out_path: str | os.PathLike,
    *,
    step: int | None = None,
    dtype: str = "float32",
) -> str:
    """Writes the model file of a training checkpoint (default: the latest).

    The model config comes from the checkpoint itself (the training loop stores the run's config
    in every checkpoint), else from ``config.json`` beside the checkpoints folder. Returns the
    parameter digest.
    """
    path = os.fspath(workdir_or_ckpt_dir)
    ckpt_dir = _find_checkpoint_dir(path)
    mngr = CheckpointManager(ckpt_dir, max_to_keep=None)
    try:
        state, extra = mngr.restore_raw(step)
        used_step = int(np.asarray(state["step"])) if "step" in state else mngr.latest_step()
    finally:
        mngr.close()
    config = extra.get("config")
    if config is None:
        cfg_file = os.path.join(os.path.dirname(os.path.abspath(ckpt_dir)), "config.json")
        if not os.path.exists(cfg_file):
            raise FileNotFoundError(f"the checkpoint has no config and {cfg_file} is missing")
        with open(cfg_file) as f:
            config = json.load(f)
    if "model" not in config:
        raise model_file.ModelFileError(f"the config stored with {ckpt_dir!r} has no 'model' block")
    train = config.get("train", {})
    metadata = {
        "step": used_step,
        "source": os.path.abspath(ckpt_dir),
        "loss_metric": train.get("loss_metric"),
        "lmbda": train.get("lmbda"),
    }
    return model_file.save_model(
        out_path, config["model"], state["params"], metadata=metadata, dtype=dtype
    )

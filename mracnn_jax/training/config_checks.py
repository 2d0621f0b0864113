"""Checks of an experiment config before a run builds anything: ``check_run(config)``.

A training run spends tens of seconds initialising the model and minutes compiling its step; a
mistake in the config or the data folders must surface before that, as one message that says what
is wrong and what to do. What is checked (no JAX is imported here):

* the config has the blocks ``model``, ``train`` and ``data``, and ``train`` and ``data`` hold no
  field that ``defaults.training_config()`` / ``defaults.data_config()`` do not know (a typo such
  as ``train.lmbdaa`` would otherwise be ignored silently);
* the values the loop relies on: training and validation crops that are multiples of 64, a known
  loss and schedule, MS-SSIM crops of at least 161 pixels, positive step counts, step decays
  after the warm-up;
* the image folders: every ``data.train_dirs`` folder exists and the folders hold at least one
  image, and so does ``data.val_dir`` when validation is on.

The device count (the batch must divide among the devices) is checked by the loop itself, which
knows the mesh.
"""

from __future__ import annotations

import difflib
import os

import ml_collections

from mracnn_jax.training import defaults

#: Smallest image side MS-SSIM's five scales accept, (11 − 1)·2⁴ + 1 (``metrics.min_size_for_ms_ssim``,
#: repeated here so that the check imports no JAX; test_training.py compares the two).
MS_SSIM_MIN_SIZE = 161


class ConfigError(ValueError):
    """The experiment config, or a data folder it names, cannot be trained with."""


def _unknown_fields(block: ml_collections.ConfigDict, known: ml_collections.ConfigDict, name: str):
    for field in block:
        if field not in known:
            near = difflib.get_close_matches(field, list(known.keys()), n=1)
            hint = f"; did you mean {name}.{near[0]}?" if near else ""
            raise ConfigError(
                f"unknown config field {name}.{field}{hint} (the fields are documented in "
                f"mracnn_jax/training/defaults.py)"
            )


def check_fields(config: ml_collections.ConfigDict) -> None:
    """The blocks and field names of ``config`` (the module docstring). Raises ``ConfigError``."""
    for block in ("model", "train", "data"):
        if block not in config:
            raise ConfigError(f"the config has no {block!r} block (a preset's get_config() has)")
    _unknown_fields(config.train, defaults.training_config(), "train")
    _unknown_fields(config.data, defaults.data_config(), "data")


def check_values(train: ml_collections.ConfigDict) -> None:
    """The values of the ``train`` block the loop relies on. Raises ``ConfigError``."""
    if train.crop_size % 64:
        raise ConfigError(f"train.crop_size = {train.crop_size} must be a multiple of 64")
    if train.loss_metric not in defaults.LOSS_METRICS:
        raise ConfigError(
            f"train.loss_metric must be one of {defaults.LOSS_METRICS}, got {train.loss_metric!r}"
        )
    if train.lr_schedule not in defaults.LR_SCHEDULES:
        raise ConfigError(
            f"train.lr_schedule must be one of {defaults.LR_SCHEDULES}, got {train.lr_schedule!r}"
        )
    if train.loss_metric == "ms-ssim" and train.crop_size < MS_SSIM_MIN_SIZE:
        raise ConfigError(f"MS-SSIM training needs train.crop_size >= {MS_SSIM_MIN_SIZE}")
    if train.eval_crop_size % 64:
        raise ConfigError(f"train.eval_crop_size = {train.eval_crop_size} must be a multiple of 64")
    if train.loss_metric == "ms-ssim" and train.eval_crop_size < MS_SSIM_MIN_SIZE:
        raise ConfigError(
            f"MS-SSIM validation needs train.eval_crop_size >= {MS_SSIM_MIN_SIZE} (below it the "
            "validation loss is not a number)"
        )
    if train.lr_schedule == "step":
        try:
            defaults.lr_decay_boundaries(train)
        except ValueError as e:
            raise ConfigError(str(e)) from None
    for name in ("batch_size", "checkpoint_every", "log_every", "num_steps"):
        if int(train[name]) <= 0:
            raise ConfigError(f"train.{name} must be positive, got {train[name]}")
    if int(train.cooldown_steps) < 0 or not 0.0 <= float(train.cooldown_final_factor) <= 1.0:
        raise ConfigError(
            f"train.cooldown_steps = {train.cooldown_steps} must be >= 0 and "
            f"train.cooldown_final_factor = {train.cooldown_final_factor} in [0, 1]"
        )


def check_data(config: ml_collections.ConfigDict) -> None:
    """The training folders and (with validation on) the validation folder: each exists and holds
    images (``data_order.list_images``). Raises ``ConfigError``."""
    from mracnn_jax.training import data_order  # here, not above: it imports grain, and grain JAX

    dirs = config.data.train_dirs
    dirs = [dirs] if isinstance(dirs, (str, os.PathLike)) else list(dirs)
    if not dirs:
        raise ConfigError("data.train_dirs is empty: name at least one folder of training images")
    folders = [("data.train_dirs", dirs)]
    t = config.train
    val_dir = config.data.get("val_dir", "")
    if val_dir and int(t.get("num_eval_images", 0)) > 0 and int(t.get("eval_every", 0)) >= 0:
        folders.append(("data.val_dir", [val_dir]))
    for name, paths in folders:
        try:
            data_order.list_images(paths)
        except (OSError, ValueError) as e:
            raise ConfigError(f"{name}: {' '.join(str(e).split())}") from None


def check_run(config: ml_collections.ConfigDict) -> None:
    """All of the above, in that order: fields, values, data folders. Raises ``ConfigError``."""
    check_fields(config)
    check_values(config.train)
    check_data(config)

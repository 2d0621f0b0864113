"""What a training run writes and shows: metrics.jsonl and TensorBoard, the progress bar, the
saved config, and quieter library logging while the bar is up.

Files in the work directory: ``config.json`` (+ ``config.yaml``), ``metrics.jsonl`` (one JSON
object per log or validation point, ``"split": "train"`` or ``"eval"``, non-finite values as
null) and TensorBoard events under ``tb/`` (tensorboardX, never TensorFlow). Only process 0
writes or prints. ``check_finite`` stops a run whose logged loss is NaN/Inf; ``read_metrics``
reads ``metrics.jsonl`` back as the run's history, resumed sittings included.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import math
import os
import sys
import time
from pathlib import Path
from typing import Any

import ml_collections
import numpy as np
from tqdm import tqdm

logger = logging.getLogger(__name__)


#: Where TensorBoard's event files go, inside the work directory.
TB_DIR = "tb"
#: The file ``MetricWriter`` appends to, inside the work directory.
METRICS_FILE = "metrics.jsonl"

#: Loggers that print INFO lines during a run (orbax logs through absl's); raised to WARNING
#: while the progress bar is shown (``quiet_library_logging``).
NOISY_LOGGERS: tuple[str, ...] = ("absl", "orbax", "orbax.checkpoint")


@contextlib.contextmanager
def quiet_library_logging(level: int = logging.WARNING):
    """Raises ``NOISY_LOGGERS`` to at least ``level`` inside the block, restoring them after."""
    saved = {name: logging.getLogger(name).level for name in NOISY_LOGGERS}
    try:
        for name in NOISY_LOGGERS:
            log = logging.getLogger(name)
            log.setLevel(max(log.getEffectiveLevel(), level))
        yield
    finally:
        for name, old in saved.items():
            logging.getLogger(name).setLevel(old)


def say(message: str, enabled: bool) -> None:
    """A line on stderr that does not break the progress bar (process 0 only)."""
    if enabled:
        tqdm.write(message, file=sys.stderr)
        sys.stderr.flush()


class MetricWriter:
    """metrics.jsonl (always) and TensorBoard events under ``tb/`` via tensorboardX (a dependency
    of the ``train`` extra; a warning if it is missing); process 0 only."""

    def __init__(self, workdir: str, enabled: bool):
        self.enabled = enabled
        self._jsonl = None
        self._tb = None
        if not enabled:
            return
        # Kept open for the whole run (closed in close()); line-buffered so a crash loses nothing.
        self._jsonl = open(os.path.join(workdir, METRICS_FILE), "a", buffering=1)  # noqa: SIM115
        try:
            from tensorboardX import SummaryWriter  # the train extra's; never TensorFlow
        except ImportError:
            logger.warning(
                "no TensorBoard logs: tensorboardX is not installed (pip install "
                "'mracnn-jax[train]' or tensorboardX); metrics.jsonl has the same values"
            )
            return
        self._tb = SummaryWriter(os.path.join(workdir, TB_DIR))

    def write(self, step: int, split: str, values: dict[str, float]) -> None:
        if not self.enabled:
            return
        rec = {"step": int(step), "split": split, "time": time.time()}
        rec.update(
            {
                k: (None if not math.isfinite(v) else v) if isinstance(v, float) else v
                for k, v in values.items()
            }
        )
        self._jsonl.write(json.dumps(rec) + "\n")
        if self._tb is not None:
            for k, v in values.items():
                if isinstance(v, (int, float)) and math.isfinite(v):
                    self._tb.add_scalar(f"{split}/{k}", v, int(step))

    def close(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
        if self._tb is not None:
            self._tb.close()


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or Inf; the run stopped without checkpointing that state."""


def check_finite(
    window: list[tuple[int, dict[str, np.ndarray]]], last_good: int | None, ckpt_dir: str
) -> None:
    """Raises ``NonFiniteLossError`` at the first record of ``window`` with a NaN/Inf loss."""
    for step, m in window:
        if not np.isfinite(m["loss"]):
            parts = ", ".join(f"{k}={float(v):.6g}" for k, v in sorted(m.items()))
            where = (
                f"the last good checkpoint is step {last_good} in {ckpt_dir}"
                if last_good is not None
                else "no checkpoint was written yet"
            )
            raise NonFiniteLossError(
                f"the training loss became non-finite at step {step} ({parts}). Stopping without "
                f"saving this state; {where}. Restarting resumes from there; lower "
                "train.learning_rate or train.grad_clip_norm, or check the data, first."
            )


@dataclasses.dataclass
class RunMetrics:
    """A run's records by split, each list in increasing step order (``read_metrics``)."""

    train: list[dict[str, Any]]
    eval: list[dict[str, Any]]
    unreadable: int  # lines that are not JSON objects with a step and a split (e.g. cut by a kill)
    # the training records of train.cooldown_steps' branches
    cooldown: list[dict[str, Any]] = dataclasses.field(default_factory=list)


def read_metrics(path: str | os.PathLike) -> RunMetrics:
    """The history of a run from its ``metrics.jsonl`` (``path``: the file or its work directory).

    A resumed run starts again from its last checkpoint, so what it logged after that checkpoint
    is in the file twice, and a resumed run with ``train.eval_at_start`` validates again at the
    step it resumed at. The later sitting wins: a record whose step is not after the last kept
    record of its split replaces every kept record of that split from its step on.
    """
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    runs: dict[str, list[dict[str, Any]]] = {"train": [], "eval": [], "cooldown": []}
    unreadable = 0
    for line in path.read_text().splitlines():
        try:
            rec = json.loads(line)
            step, split = int(rec["step"]), rec["split"]
        except (ValueError, TypeError, KeyError):
            unreadable += bool(line.strip())
            continue
        kept = runs.setdefault(split, [])
        while kept and kept[-1]["step"] >= step:
            kept.pop()
        kept.append(rec)
    return RunMetrics(runs["train"], runs["eval"], unreadable, runs["cooldown"])


def progress_bar(total: int, initial: int, enabled: bool):
    """Steps done of ``total``, elapsed and remaining time, then the postfix (``flush``): the
    rate in steps per second of the last log window (``steps/s``) and its loss, bpp and PSNR."""
    return tqdm(
        total=total,
        initial=initial,
        disable=not enabled,
        dynamic_ncols=True,
        mininterval=1.0,
        desc="train",
        unit="step",
        bar_format="{desc}: {percentage:3.0f}%|{bar}| step {n_fmt}/{total_fmt} "
        "[{elapsed}<{remaining}{postfix}]",
    )


def save_config(config: ml_collections.ConfigDict, workdir: str) -> dict[str, Any]:
    as_json = json.loads(config.to_json_best_effort())
    with open(os.path.join(workdir, "config.json"), "w") as f:
        json.dump(as_json, f, indent=2, sort_keys=True)
    try:
        with open(os.path.join(workdir, "config.yaml"), "w") as f:
            f.write(config.to_yaml())
    except Exception as e:  # noqa: BLE001 - YAML is a convenience copy of config.json
        logger.debug("config.yaml not written: %s", e)
    return as_json

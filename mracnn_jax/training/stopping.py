"""When a training run stops before ``train.num_steps``: its wall-clock deadline, or a signal.

A preemptible TPU or GPU machine gets SIGTERM some seconds before it goes away, and a person at a
terminal presses Ctrl-C (SIGINT). ``StopSignals`` turns the first of either into a request that the
training loop honours at the next step boundary: it saves a checkpoint there and raises
``Interrupted``, so that rerunning the same command resumes from that very step (bit for bit, as
after any checkpoint). A second signal gets the handler that was there before (Ctrl-C twice stops
at once). Handlers can only be set in the main thread; elsewhere ``StopSignals`` does nothing.

With several processes, process 0 decides both questions for all (``agreed``), so that every
host stops at the same step.
"""

from __future__ import annotations

import math
import signal
import threading
import time
from typing import Self

import jax
import numpy as np
from jax.experimental import multihost_utils

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Interrupted(Exception):
    """Training stopped on a signal after checkpointing ``step``; ``exit_status`` is the shell's
    convention for a process ended by that signal (128 + its number)."""

    def __init__(self, signum: int, step: int, checkpoint_dir: str):
        self.signum, self.step = signum, step
        self.exit_status = 128 + signum
        name = signal.Signals(signum).name
        super().__init__(
            f"stopped by {name} at step {step}, checkpoint saved in {checkpoint_dir}: "
            "run the same command again to resume"
        )


class StopSignals:
    """Context manager: while inside, SIGTERM and SIGINT set ``signum`` instead of ending the
    process, once each run; the previous handlers come back on exit."""

    def __init__(self):
        self.signum: int | None = None
        self._previous: dict[int, object] = {}

    def _handle(self, signum, frame) -> None:
        self.signum = self.signum or signum
        for s, previous in self._previous.items():  # a second signal acts as it did before
            signal.signal(s, previous)

    def __enter__(self) -> Self:
        if threading.current_thread() is threading.main_thread():
            for s in SIGNALS:
                self._previous[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, previous in self._previous.items():
            signal.signal(s, previous)
        self._previous.clear()


def agreed(local: bool) -> bool:
    """``local`` as process 0 sees it, on every process (itself when there is one process)."""
    return bool(_process_0s(local))


def agreed_count(local: int) -> int:
    """``agreed`` for a count."""
    return int(_process_0s(np.int64(local)))


def _process_0s(local):
    if jax.process_count() > 1:
        return multihost_utils.broadcast_one_to_all(np.asarray(local))
    return local


def time_is_up(deadline: float) -> bool:
    """Whether the wall-clock ``deadline`` (``time.time()`` seconds) has passed, agreed by all
    processes (multi-host runs ask at log points only)."""
    if deadline == math.inf:
        return False
    return agreed(time.time() >= deadline)

"""What an evaluation has finished so far, on disk, so that an interrupted run resumes.

Every (model, image) pair that ``measure.evaluate_model`` has coded, decoded and scored is appended
at once as one JSON line to ``<out>/completed.jsonl`` (flushed and fsynced), keyed by

    (params digest of the model file, image file name, digest of the image's pixels)

so a record is reused only for the same parameters on the same pixels, whatever the files are
called. A rerun with the same ``--out`` reads the journal and skips every pair it holds whose
bitstream is still in the output folder with the recorded size (the runner checks); the rest is
coded as usual. The line being written when the process died is incomplete JSON and is dropped.
Reused records keep the timings of the run that measured them.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from mracnn_jax import fileio

FILE_NAME = "completed.jsonl"


def image_digest(rgb: np.ndarray) -> str:
    """SHA-256 of an image's shape and pixels (hex)."""
    h = hashlib.sha256(repr((rgb.shape, str(rgb.dtype))).encode())
    h.update(np.ascontiguousarray(rgb).tobytes())
    return h.hexdigest()


def _key(params_digest: str, image: str, pixels_digest: str) -> tuple[str, str, str]:
    return (params_digest, image, pixels_digest)


class Journal:
    """The finished records of one output folder (see the module docstring)."""

    def __init__(self, out_dir: str | Path, resume: bool = True):
        self.path = Path(out_dir) / FILE_NAME
        self.done: dict[tuple[str, str, str], dict[str, Any]] = {}
        if not resume:
            self.path.unlink(missing_ok=True)
        elif self.path.exists():
            text = self.path.read_text()
            kept = []
            for line in text.splitlines():
                try:
                    entry = json.loads(line)
                    key = _key(entry["params_digest"], entry["image"], entry["pixels_digest"])
                    record = dict(entry["record"])
                except (ValueError, KeyError, TypeError):
                    continue  # the line a killed run was writing
                self.done[key] = record
                kept.append(line + "\n")
            if "".join(kept) != text:  # drop the broken line before appending after it
                fileio.write_atomic(self.path, lambda f: f.write("".join(kept).encode()))

    def lookup(self, params_digest: str, image: str, pixels_digest: str) -> dict[str, Any] | None:
        """A copy of the stored record of this pair, or None."""
        record = self.done.get(_key(params_digest, image, pixels_digest))
        return None if record is None else dict(record)

    def add(self, params_digest: str, image: str, pixels_digest: str, record: dict[str, Any]):
        """Append one finished record and make it durable before returning."""
        entry = {
            "params_digest": params_digest,
            "image": image,
            "pixels_digest": pixels_digest,
            "record": record,
        }
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a") as f:
            f.write(json.dumps(entry) + "\n")
            f.flush()
            os.fsync(f.fileno())
        self.done[_key(params_digest, image, pixels_digest)] = record

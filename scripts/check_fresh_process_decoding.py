#!/usr/bin/env python
"""Fresh-process decoding check: files written by one process decode, in another, to exactly the
reconstruction the encoder predicted.

    python scripts/check_fresh_process_decoding.py --data ../shared/data/kodak \
        [--model M ...] [--work DIR]

Phase 1 (this process): every image is compressed with every model (default: the bundled ones);
the ``.mrac`` file and the encoder's predicted reconstruction (``.npy``) are written to ``--work``.
Phase 2 (a new Python process, started by phase 1): every file is decoded with the model the file
names, and compared pixel for pixel with the prediction. Prints one line per model and exits
non-zero on any difference or error.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from mracnn_jax import codec, zoo
from mracnn_jax.config_files import data_path
from mracnn_jax.evaluation import runner


def encode(models: list[Path], data: Path, work: Path) -> None:
    names, images = runner.load_images(data)
    index = []
    for m in models:
        model = codec.LoadedModel.load(m)
        out = work / m.stem
        out.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        for name, rgb in zip(names, images):
            enc = codec.compress_with_info(rgb, model)
            stem = Path(name).stem
            (out / f"{stem}.mrac").write_bytes(enc.data)
            np.save(out / f"{stem}.npy", enc.reconstruction)
            index.append({"model": str(m), "file": str(out / f"{stem}.mrac")})
        print(
            f"encoded {len(names)} images with {m.name} in {time.perf_counter() - t0:.0f} s",
            flush=True,
        )
    (work / "index.json").write_text(json.dumps(index))


def decode(work: Path) -> int:
    index = json.loads((work / "index.json").read_text())
    models: dict[str, codec.LoadedModel] = {}
    results: dict[str, list[bool]] = {}
    for entry in index:
        model = models.setdefault(entry["model"], codec.LoadedModel.load(entry["model"]))
        path = Path(entry["file"])
        try:
            image = codec.decompress(path.read_bytes(), model)
            same = np.array_equal(np.asarray(image), np.load(path.with_suffix(".npy")))
        except Exception as e:  # noqa: BLE001 - reported, counted as a failure
            print(f"{path}: {type(e).__name__}: {e}")
            same = False
        results.setdefault(Path(entry["model"]).name, []).append(same)
    bad = 0
    for name, ok in results.items():
        print(f"{name}: {sum(ok)}/{len(ok)} decoded exactly in a fresh process")
        bad += len(ok) - sum(ok)
    return 1 if bad else 0


def main() -> int:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data", default=str(data_path("kodak")))
    p.add_argument("--model", nargs="*", default=None)
    p.add_argument("--work", default="/tmp/fresh_process_check")
    p.add_argument("--decode-only", action="store_true", help=argparse.SUPPRESS)
    a = p.parse_args()
    work = Path(a.work)
    if a.decode_only:
        return decode(work)
    models = [Path(m) for m in a.model] if a.model else [e.path for e in zoo.for_channels(3)]
    encode(models, Path(a.data), work)
    return subprocess.run(
        [sys.executable, __file__, "--work", str(work), "--decode-only"], check=False
    ).returncode


if __name__ == "__main__":
    sys.exit(main())

"""Training and validation images: folders of image files → uint8 batches `[B, c, c, C]`.

Training stream
---------------
Each process reads its positions of the endless shuffled order of ``data_order`` (the files
under ``data.train_dirs``, ``images.list_images``), and ``crops`` turns each file into a random
``crop_size``² crop: decoded with the codec's rules, padded when small, flipped, gray for a
one-channel model. A file that fails to decode is skipped, counted (``TrainIterator.skipped``)
and warned about once; the run never crashes on them. A stream that yields no decodable image
at all raises.

Batches are uint8 ``[B_local, c, c, C]`` (``B_local`` = global batch / process count, C =
``channels``, 3 or 1); the
training step converts them to float32 in [0, 1] on the device (4x less host→device traffic than
float32; measured in the module's benchmark, see ``python -m mracnn_jax.training.input_pipeline
--help``).

Position and resume
-------------------
The iterator's state is one integer per process: ``records_consumed``, the number of stream
positions it has read (skipped files included). A new iterator built with that number continues
exactly where the old one stopped, whatever the backend or worker count — the training loop saves
it in every checkpoint, so 10 steps + restart + 10 steps read the same images as 20 straight steps.

Backends
--------
* ``'grain'``: ``grain.python.DataLoader`` with worker processes (``num_workers``), a custom
  sampler implementing the order above, and ``ShardOptions(process_index, process_count)``.
  Elements are batched in the main process, in position order.
* ``'python'``: the same sampler and transform in a thread pool in this process (PIL releases the
  GIL while decoding). For machines without grain (our GPU machines).
* ``'auto'``: grain when importable, else ``'python'`` (logged once).

Both produce identical batches (tested).

Validation
----------
``load_eval_images`` reads the first ``num_images`` files of a folder (sorted by path) as fixed
centre crops (reflect-padded when smaller), gray for ``channels=1``; deterministic, no
randomness.
"""

from __future__ import annotations

import collections
import concurrent.futures
import logging
import os
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from mracnn_jax.training import data_order
from mracnn_jax.training.crops import (
    DecodeCropFlip,
    centre_crop,
    check_channels,
    decode_rgb,
    to_channels,
)
from mracnn_jax.training.data_order import ImageFileSource, StreamSampler, list_images
from mracnn_jax.training.defaults import DATA_BACKENDS

logger = logging.getLogger(__name__)


# -------------------------------------------------------------------------------------------------
# Iterators.


def _resolve_backend(backend: str) -> str:
    if backend not in DATA_BACKENDS:
        raise ValueError(f"data.backend must be one of {DATA_BACKENDS}, got {backend!r}")
    if backend == "grain" and data_order.GRAIN is None:
        raise ImportError(
            "data.backend='grain' but grain is not installed; `pip install grain` or use "
            "--config.data.backend=python (same batches, thread-based)"
        )
    if backend == "auto":
        if data_order.GRAIN is None:
            logger.info("grain is not installed: using the thread-based 'python' data backend")
            return "python"
        return "grain"
    return backend


def _ensure_absl_flags_parsed() -> None:
    """Newer grain reads absl flags in its worker machinery; outside ``absl.app.run`` (tests,
    notebooks, the benchmark below) nothing parsed them, so accept their defaults."""
    try:
        from absl import flags
    except ImportError:  # pragma: no cover - grain depends on absl
        return
    if not flags.FLAGS.is_parsed():
        flags.FLAGS.mark_as_parsed()


def _python_elements(
    source: ImageFileSource,
    sampler: StreamSampler,
    transform: DecodeCropFlip,
    shard_index: int,
    shard_count: int,
    num_threads: int,
    prefetch: int,
) -> Iterator[dict[str, Any]]:
    """Elements in position order, decoded by a thread pool with ``prefetch`` in flight."""

    def work(index: int) -> dict[str, Any]:
        meta = sampler[index]
        return transform(source[meta.record_key], meta.rng)

    index = shard_index
    pool = concurrent.futures.ThreadPoolExecutor(max(1, num_threads))
    try:
        pending: collections.deque = collections.deque()
        while True:
            while len(pending) < max(1, prefetch):
                pending.append(pool.submit(work, index))
                index += shard_count
            yield pending.popleft().result()
    finally:  # closed or failed: drop the decodes not started, wait only for those running
        pool.shutdown(wait=True, cancel_futures=True)


class TrainIterator:
    """Endless iterator of uint8 batches ``[batch_size, c, c, channels]`` for this process.

    ``get_state()`` returns ``{'records_consumed': n, 'skipped': {...}, 'backend': ...,
    'order': {...}}``; pass it back as ``state`` to ``make_train_iterator`` to continue from the
    same position (with a warning when ``order``, ``data_order.order_identity``, differs).
    """

    def __init__(
        self,
        paths: Sequence[str],
        *,
        batch_size: int,
        crop_size: int,
        seed: int,
        process_index: int = 0,
        process_count: int = 1,
        records_consumed: int = 0,
        backend: str = "auto",
        num_workers: int = 2,
        worker_buffer_size: int = 16,
        flip_lr: bool = True,
        flip_ud: bool = False,
        small_images: str = "pad",
        channels: int = 3,
    ):
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if not 0 <= process_index < process_count:
            raise ValueError(f"process_index {process_index} not in [0, {process_count})")
        self.batch_size = int(batch_size)
        self.backend = _resolve_backend(backend)
        self.records_consumed = int(records_consumed)
        self.skipped: collections.Counter = collections.Counter()
        self._warned: set[str] = set()
        self._num_paths = len(paths)
        self.order = data_order.order_identity(paths, seed)
        source = ImageFileSource(paths)
        # Position of this process's k-th element: (records_consumed + k)·P + process_index.
        sampler = StreamSampler(
            len(paths), seed, process_count, offset=self.records_consumed * process_count
        )
        transform = DecodeCropFlip(crop_size, flip_lr, flip_ud, small_images, channels)
        if self.backend == "grain":
            _ensure_absl_flags_parsed()
            loader = data_order.GRAIN.DataLoader(
                data_source=source,
                sampler=sampler,
                operations=[transform],
                worker_count=int(num_workers),
                worker_buffer_size=int(worker_buffer_size),
                shard_options=data_order.GRAIN.ShardOptions(
                    shard_index=process_index, shard_count=process_count, drop_remainder=False
                ),
                read_options=data_order.GRAIN.ReadOptions(
                    num_threads=0 if num_workers else 1, prefetch_buffer_size=1
                ),
            )
            self._loader = loader
            self._elements = iter(loader)
        else:
            self._loader = None
            self._elements = _python_elements(
                source,
                sampler,
                transform,
                process_index,
                process_count,
                num_threads=max(1, int(num_workers)),
                prefetch=max(1, int(num_workers)) * max(1, int(worker_buffer_size)),
            )

    def __iter__(self) -> TrainIterator:
        return self

    def _skip(self, element: dict[str, Any]) -> None:
        kind = "decode_error" if element["reason"].startswith("decode") else "too_small"
        self.skipped[kind] += 1
        if element["path"] not in self._warned:
            self._warned.add(element["path"])
            logger.warning("skipping image %s (%s)", element["path"], element["reason"])

    def __next__(self) -> np.ndarray:
        images = []
        misses = 0
        while len(images) < self.batch_size:
            element = next(self._elements)
            self.records_consumed += 1
            if bool(element["valid"]):
                images.append(element["image"])
                misses = 0
            else:
                self._skip(element)
                misses += 1
                if misses > self._num_paths + self.batch_size:
                    raise RuntimeError(
                        f"{misses} consecutive images failed to load (of {self._num_paths} "
                        "files): none of the training images can be decoded"
                    )
        return np.stack(images)

    @property
    def num_skipped(self) -> int:
        return int(sum(self.skipped.values()))

    def get_state(self) -> dict[str, Any]:
        """JSON-serialisable position (see the module docstring)."""
        return {
            "records_consumed": self.records_consumed,
            "skipped": dict(self.skipped),
            "backend": self.backend,
            "order": dict(self.order),
        }

    def close(self) -> None:
        """Stops worker processes / threads (also done by garbage collection)."""
        elements, self._elements = self._elements, iter(())
        if hasattr(elements, "close"):
            elements.close()
        self._loader = None


def make_train_iterator(
    data_config,
    *,
    crop_size: int,
    batch_size: int,
    seed: int,
    process_index: int = 0,
    process_count: int = 1,
    state: dict[str, Any] | None = None,
    channels: int = 3,
) -> TrainIterator:
    """The training iterator of ``config.data`` for this process.

    ``batch_size`` is the per-process batch; ``state`` is a ``TrainIterator.get_state()`` from a
    checkpoint (None: start of the stream); ``channels`` the model's (``config.model.channels``).
    """
    paths = list_images(list(data_config.train_dirs))
    data_seed = int(data_config.get("seed", -1))
    it = TrainIterator(
        paths,
        batch_size=batch_size,
        crop_size=crop_size,
        seed=seed if data_seed < 0 else data_seed,
        process_index=process_index,
        process_count=process_count,
        records_consumed=int(state["records_consumed"]) if state else 0,
        backend=data_config.get("backend", "auto"),
        num_workers=int(data_config.get("num_workers", 2)),
        worker_buffer_size=int(data_config.get("worker_buffer_size", 16)),
        flip_lr=bool(data_config.get("random_flip_lr", True)),
        flip_ud=bool(data_config.get("random_flip_ud", False)),
        small_images=data_config.get("small_images", "pad"),
        channels=channels,
    )
    if state and state.get("skipped"):
        it.skipped.update({k: int(v) for k, v in state["skipped"].items()})
    if state and state.get("order") and state["order"] != it.order:
        was, now = state["order"], it.order
        logger.warning(
            "the training images or the data seed changed since the checkpoint (%s files, names "
            "%s, seed %s; now %s, %s, %s): the position continues in the new order, so images of "
            "this epoch may repeat or be missed",
            was.get("num_files"), was.get("names_sha1"), was.get("seed"),
            now["num_files"], now["names_sha1"], now["seed"],
        )  # fmt: skip
    return it


def load_eval_images(
    directory: str | os.PathLike, crop_size: int, num_images: int, channels: int = 3
) -> tuple[np.ndarray, list[str]]:
    """The first ``num_images`` decodable images of ``directory`` (sorted by path) as centre
    crops: uint8 ``[N, crop_size, crop_size, channels]`` and their paths. Undecodable files are
    skipped with a warning."""
    channels = check_channels(channels)
    images, used = [], []
    for path in list_images(directory):
        if len(images) >= num_images:
            break
        try:
            img = decode_rgb(path)
        except Exception as e:  # noqa: BLE001
            logger.warning("skipping validation image %s (%s: %s)", path, type(e).__name__, e)
            continue
        images.append(to_channels(centre_crop(img, crop_size), channels))
        used.append(path)
    if not images:
        raise ValueError(f"no decodable validation image in {os.fspath(directory)!r}")
    return np.stack(images), used


# -------------------------------------------------------------------------------------------------
# Benchmark: python -m mracnn_jax.training.input_pipeline --dirs DIR [DIR ...]


def benchmark(
    dirs: Sequence[str],
    *,
    backend: str,
    num_workers: int,
    batch_size: int = 8,
    crop_size: int = 256,
    num_batches: int = 40,
    warmup_batches: int = 3,
    as_float: bool = False,
) -> float:
    """Images per second delivered by the training iterator (after ``warmup_batches``)."""
    it = TrainIterator(
        list_images(dirs),
        batch_size=batch_size,
        crop_size=crop_size,
        seed=0,
        backend=backend,
        num_workers=num_workers,
    )
    try:
        for _ in range(warmup_batches):
            next(it)
        t0 = time.perf_counter()
        for _ in range(num_batches):
            b = next(it)
            if as_float:
                b = b.astype(np.float32) / 255.0
        dt = time.perf_counter() - t0
    finally:
        it.close()
    return num_batches * batch_size / dt


def _main() -> None:
    import argparse

    p = argparse.ArgumentParser(description="Measure the training input pipeline (images/s).")
    p.add_argument("--dirs", nargs="+", required=True)
    p.add_argument("--backend", default="auto", choices=DATA_BACKENDS)
    p.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    p.add_argument("--batches", type=int, default=40)
    p.add_argument("--batch_size", type=int, default=8)
    p.add_argument("--crop", type=int, default=256)
    p.add_argument("--float", action="store_true", help="also convert to float32 on the host")
    a = p.parse_args()
    for w in a.workers:
        r = benchmark(
            a.dirs,
            backend=a.backend,
            num_workers=w,
            batch_size=a.batch_size,
            crop_size=a.crop,
            num_batches=a.batches,
            as_float=a.float,
        )
        print(
            f"backend={_resolve_backend(a.backend)} workers={w} float={a.float}: {r:.1f} images/s"
        )


if __name__ == "__main__":
    _main()

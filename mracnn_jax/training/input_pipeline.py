"""Training and validation images: folders of image files → uint8 batches `[B, c, c, C]`.

Training stream
---------------
The images under ``data.train_dirs`` (recursive; ``images.list_images``: the suffixes of
``images.SUFFIXES`` in any case, hidden files left out; sorted by path) are read in an endless,
seeded, epoch-wise shuffled order. With N files and P processes, one epoch is ``E = N − N mod P``
positions (so every process sees the same number per epoch); the global
position p maps to epoch ``e = p // E`` and file ``perm_e[p mod E]``, where ``perm_e`` is a
permutation of all N files drawn from ``(seed, e)``. Process i reads the positions
``p ≡ i (mod P)``, so within an epoch the processes read disjoint files.

Each file is decoded by ``images.read_image`` (the codec's rules: grayscale, palette, CMYK and
16-bit images become 8-bit RGB; images with an alpha channel are refused, so skipped), randomly
cropped to ``crop_size``² and randomly flipped, with a NumPy generator seeded by ``(seed, p)``:
the crop of a position does not depend on the number of workers, the backend or a restart.
For a grayscale model (``channels=1``, the model config's ``channels``) each crop then becomes
its ITU-R 601 luma (``images.restore_mode(crop, 'L')``, the gray of Pillow's ``convert('L')``,
which the codec restores too), ``[c, c, 1]``: gray photos stay as they are, colour photos become
gray.

* Images smaller than the crop: ``small_images='pad'`` reflect-pads them up to the crop (the
  default: BSDS500's 321-pixel side is fine for 256 crops, but 64x64 thumbnails would otherwise be
  lost); ``'skip'`` skips them like undecodable files.
* Files that fail to decode are skipped, counted (``TrainIterator.skipped``) and warned about once
  each; the run never crashes on them. A stream that yields no decodable image at all raises.

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
import hashlib
import logging
import os
import time
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from mracnn_jax import images
from mracnn_jax.training.defaults import DATA_BACKENDS, SMALL_IMAGE_POLICIES

#: Image channels the pipeline delivers: 3 (RGB) or 1 (the luma of the crop).
CHANNELS: tuple[int, ...] = (3, 1)

logger = logging.getLogger(__name__)

try:  # grain is optional (absent on the GPU machines); see the 'python' backend.
    import grain.python as _grain
except ImportError:  # pragma: no cover - depends on the environment
    _grain = None


def grain_available() -> bool:
    """True when ``grain.python`` imports."""
    return _grain is not None


# -------------------------------------------------------------------------------------------------
# Files.


def list_images(dirs: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """All image files under ``dirs`` (``images.list_images``, recursive, symlinks followed),
    sorted by path.

    Raises FileNotFoundError for a folder that does not exist and ValueError when there is no
    image at all.
    """
    if isinstance(dirs, (str, os.PathLike)):
        dirs = [dirs]
    paths: set[str] = set()
    for d in dirs:
        d = os.fspath(d)
        if not os.path.isdir(d):
            raise FileNotFoundError(
                f"image folder {d!r} does not exist; set config.data.train_dirs / val_dir "
                "(or $MRACNN_DATA) to folders of images"
            )
        paths.update(os.fspath(p) for p in images.list_images(d, recursive=True))
    if not paths:
        raise ValueError(f"no {'/'.join(images.SUFFIXES)} files under {list(map(str, dirs))}")
    return sorted(paths)


class ImageFileSource:
    """A grain ``RandomAccessDataSource`` of image paths: ``source[k]`` is the k-th path."""

    def __init__(self, paths: Sequence[str]):
        self._paths = tuple(paths)
        digest = hashlib.sha1("\n".join(self._paths).encode()).hexdigest()[:12]
        self._repr = f"ImageFileSource(num_files={len(self._paths)}, paths_sha1={digest})"

    def __len__(self) -> int:
        return len(self._paths)

    def __getitem__(self, record_key: int) -> str:
        return self._paths[record_key]

    def __repr__(self) -> str:
        return self._repr


# -------------------------------------------------------------------------------------------------
# Order.


class _Metadata:
    """Stand-in for grain's RecordMetadata when grain is absent (same fields)."""

    __slots__ = ("index", "record_key", "rng")

    def __init__(self, index: int, record_key: int, rng: np.random.Generator):
        self.index, self.record_key, self.rng = index, record_key, rng


class StreamSampler:
    """The endless shuffled order of the module docstring, as a grain ``Sampler``.

    ``sampler[index]`` describes global position ``p = index + offset``: the file (record_key) and
    a generator seeded by ``(seed, p)`` for its crop and flips. ``offset`` lets a resumed
    iterator start at any position while grain counts its own indices from 0.
    """

    def __init__(self, num_records: int, seed: int, shard_count: int = 1, offset: int = 0):
        if num_records < shard_count:
            raise ValueError(f"{num_records} images cannot be split over {shard_count} processes")
        if seed < 0:
            raise ValueError(f"the data seed must be >= 0, got {seed}")
        self.num_records = int(num_records)
        self.seed = int(seed)
        self.shard_count = int(shard_count)
        self.offset = int(offset)
        self.epoch_length = self.num_records - self.num_records % self.shard_count
        self._cached_epoch = -1
        self._cached_perm: np.ndarray | None = None

    def __repr__(self) -> str:
        return (
            f"StreamSampler(num_records={self.num_records}, seed={self.seed}, "
            f"shard_count={self.shard_count}, offset={self.offset})"
        )

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_cached_epoch"], state["_cached_perm"] = -1, None
        return state

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._cached_epoch:
            rng = np.random.default_rng([self.seed, 1, epoch])
            self._cached_perm = rng.permutation(self.num_records)
            self._cached_epoch = epoch
        return self._cached_perm

    def record_key(self, position: int) -> int:
        """The file index at global position ``position``."""
        epoch, j = divmod(position, self.epoch_length)
        return int(self._permutation(epoch)[j])

    def __getitem__(self, index: int):
        if index < 0:
            raise IndexError(index)
        p = index + self.offset
        rng = np.random.default_rng([self.seed, 2, p])
        meta_cls = _grain.RecordMetadata if _grain is not None else _Metadata
        return meta_cls(index=index, record_key=self.record_key(p), rng=rng)


# -------------------------------------------------------------------------------------------------
# Decoding and cropping.


def decode_rgb(path: str) -> np.ndarray:
    """Decodes an image file to uint8 RGB ``[H, W, 3]`` (``images.read_image``, grayscale as
    three equal channels). Raises on an unreadable or refused file."""
    return images.read_image(path)[0]


def pad_to_at_least(img: np.ndarray, size: int) -> np.ndarray:
    """Reflect-pads ``[H, W, 3]`` (centred) so that H and W are at least ``size``."""
    h, w = img.shape[:2]
    ph, pw = max(size - h, 0), max(size - w, 0)
    if ph == 0 and pw == 0:
        return img
    mode = "reflect" if min(h, w) > 1 else "edge"
    return np.pad(img, ((ph // 2, ph - ph // 2), (pw // 2, pw - pw // 2), (0, 0)), mode=mode)


def random_crop_flip(
    img: np.ndarray, size: int, rng: np.random.Generator, flip_lr: bool, flip_ud: bool
) -> np.ndarray:
    """A uniformly placed ``size``² crop, then optional flips (p = ½ each).

    Always draws four numbers from ``rng`` (top, left, lr, ud), so the crop position does not
    depend on which flips are enabled.
    """
    h, w = img.shape[:2]
    top = int(rng.integers(0, h - size + 1))
    left = int(rng.integers(0, w - size + 1))
    do_lr, do_ud = rng.random() < 0.5, rng.random() < 0.5
    out = img[top : top + size, left : left + size]
    if flip_lr and do_lr:
        out = out[:, ::-1]
    if flip_ud and do_ud:
        out = out[::-1]
    return np.ascontiguousarray(out)


def _check_channels(channels: int) -> int:
    if channels not in CHANNELS:
        raise ValueError(f"channels must be one of {CHANNELS} (the model's), got {channels!r}")
    return int(channels)


def to_channels(img: np.ndarray, channels: int) -> np.ndarray:
    """uint8 ``[H, W, 3]`` → ``[H, W, channels]``: as is for 3, the ITU-R 601 luma
    (``images.restore_mode``, Pillow's ``convert('L')``) for 1."""
    if channels == 3:
        return img
    return np.ascontiguousarray(images.restore_mode(img, "L")[..., None])


def centre_crop(img: np.ndarray, size: int) -> np.ndarray:
    """The centred ``size``² crop (reflect-padded first when the image is smaller)."""
    img = pad_to_at_least(img, size)
    h, w = img.shape[:2]
    top, left = (h - size) // 2, (w - size) // 2
    return np.ascontiguousarray(img[top : top + size, left : left + size])


_Base = _grain.RandomMapTransform if _grain is not None else object


class DecodeCropFlip(_Base):
    """path → ``{'image': uint8 [c, c, C], 'valid': bool, 'reason': str, 'path': str}``.

    An undecodable (or, with ``small_images='skip'``, too small) file gives ``valid=False`` and a
    zero image; the main process drops and counts it, so the count is exact with worker processes.
    """

    def __init__(
        self,
        crop_size: int,
        flip_lr: bool,
        flip_ud: bool,
        small_images: str = "pad",
        channels: int = 3,
    ):
        if small_images not in SMALL_IMAGE_POLICIES:
            raise ValueError(
                f"small_images must be one of {SMALL_IMAGE_POLICIES}, got {small_images!r}"
            )
        self.crop_size = int(crop_size)
        self.flip_lr, self.flip_ud = bool(flip_lr), bool(flip_ud)
        self.small_images = small_images
        self.channels = _check_channels(channels)

    def _invalid(self, path: str, reason: str) -> dict[str, Any]:
        c = self.crop_size
        return {
            "image": np.zeros((c, c, self.channels), np.uint8),
            "valid": False,
            "reason": reason,
            "path": path,
        }

    def random_map(self, path: str, rng: np.random.Generator) -> dict[str, Any]:
        try:
            img = decode_rgb(path)
        except Exception as e:  # noqa: BLE001 - any decoder failure means "skip this file"
            return self._invalid(path, f"decode error: {type(e).__name__}: {e}")
        if min(img.shape[:2]) < self.crop_size:
            if self.small_images == "skip":
                return self._invalid(path, f"smaller than the crop: {img.shape[1]}x{img.shape[0]}")
            img = pad_to_at_least(img, self.crop_size)
        crop = random_crop_flip(img, self.crop_size, rng, self.flip_lr, self.flip_ud)
        crop = to_channels(crop, self.channels)
        return {"image": crop, "valid": True, "reason": "", "path": path}

    # The 'python' backend calls the transform directly.
    __call__ = random_map


# -------------------------------------------------------------------------------------------------
# Iterators.


def _resolve_backend(backend: str) -> str:
    if backend not in DATA_BACKENDS:
        raise ValueError(f"data.backend must be one of {DATA_BACKENDS}, got {backend!r}")
    if backend == "grain" and _grain is None:
        raise ImportError(
            "data.backend='grain' but grain is not installed; `pip install grain` or use "
            "--config.data.backend=python (same batches, thread-based)"
        )
    if backend == "auto":
        if _grain is None:
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
    with concurrent.futures.ThreadPoolExecutor(max(1, num_threads)) as pool:
        pending: collections.deque = collections.deque()
        while True:
            while len(pending) < max(1, prefetch):
                pending.append(pool.submit(work, index))
                index += shard_count
            yield pending.popleft().result()


class TrainIterator:
    """Endless iterator of uint8 batches ``[batch_size, c, c, channels]`` for this process.

    ``get_state()`` returns ``{'records_consumed': n, 'skipped': {...}, 'backend': ...}``; pass it
    back as ``state`` to ``make_train_iterator`` to continue from the same position.
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
        source = ImageFileSource(paths)
        # Position of this process's k-th element: (records_consumed + k)·P + process_index.
        sampler = StreamSampler(
            len(paths), seed, process_count, offset=self.records_consumed * process_count
        )
        transform = DecodeCropFlip(crop_size, flip_lr, flip_ud, small_images, channels)
        if self.backend == "grain":
            _ensure_absl_flags_parsed()
            loader = _grain.DataLoader(
                data_source=source,
                sampler=sampler,
                operations=[transform],
                worker_count=int(num_workers),
                worker_buffer_size=int(worker_buffer_size),
                shard_options=_grain.ShardOptions(
                    shard_index=process_index, shard_count=process_count, drop_remainder=False
                ),
                read_options=_grain.ReadOptions(
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
    return it


def load_eval_images(
    directory: str | os.PathLike, crop_size: int, num_images: int, channels: int = 3
) -> tuple[np.ndarray, list[str]]:
    """The first ``num_images`` decodable images of ``directory`` (sorted by path) as centre
    crops: uint8 ``[N, crop_size, crop_size, channels]`` and their paths. Undecodable files are
    skipped with a warning."""
    channels = _check_channels(channels)
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

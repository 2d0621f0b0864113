"""Which file a training position reads: the image list and the endless, seeded shuffled order.

The images under ``data.train_dirs`` (recursive; ``images.list_images``: the suffixes of
``images.SUFFIXES`` in any case, hidden files left out; sorted by path) are read in an endless,
seeded, epoch-wise shuffled order. With N files and P processes, one epoch is ``E = N − N mod P``
positions (so every process sees the same number per epoch); the global
position p maps to epoch ``e = p // E`` and file ``perm_e[p mod E]``, where ``perm_e`` is a
permutation of all N files drawn from ``(seed, e)``. Process i reads the positions
``p ≡ i (mod P)``, so within an epoch the processes read disjoint files.

``StreamSampler`` is that order as a grain ``Sampler`` (and as a plain indexable object for the
thread backend); ``ImageFileSource`` the list of paths as a grain data source. grain is optional
(``GRAIN`` is None without it).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from mracnn_jax import images

try:  # grain is optional (absent on the GPU machines); see input_pipeline's 'python' backend.
    import grain.python as GRAIN
except ImportError:  # pragma: no cover - depends on the environment
    GRAIN = None


def grain_available() -> bool:
    """True when ``grain.python`` imports."""
    return GRAIN is not None


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


def order_identity(paths: Sequence[str], seed: int) -> dict[str, Any]:
    """What fixes the data order besides the position: the number of files, a digest of their
    sorted file names (not their folders, so that moving the data keeps it) and the seed. A
    checkpoint keeps it; a resume with another is warned about."""
    names = sorted(os.path.basename(p) for p in paths)
    digest = hashlib.sha1("\n".join(names).encode()).hexdigest()[:12]
    return {"num_files": len(names), "names_sha1": digest, "seed": int(seed)}


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
        meta_cls = GRAIN.RecordMetadata if GRAIN is not None else _Metadata
        return meta_cls(index=index, record_key=self.record_key(p), rng=rng)

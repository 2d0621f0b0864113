"""Orbax checkpoints of the train state, for orbax-checkpoint 0.4.4 and 0.12.x alike.

Each checkpoint ``<directory>/<step>/`` holds two items:

* ``state``: the train state pytree (step, params, opt_state), every array exact;
* ``extra``: a JSON dict (the data-iterator position, the config, anything small).

Orbax's API changed between the two pinned versions (0.4.4: ``CheckpointManager(directory,
checkpointers={...})`` and ``save(step, items)``; 0.12: ``item_names`` and ``save(step,
args=Composite(...))``). ``_NEW_API`` below is the one place that branches on it.

Atomicity: orbax writes a step into ``<step>.orbax-checkpoint-tmp-<n>`` and renames it to
``<step>`` only when every item is written (saves here are synchronous). A process killed
mid-write leaves the temporary folder, which ``latest_step``/``all_steps`` never list and which is
deleted when the next ``CheckpointManager`` opens the directory (``cleanup_tmp_directories``); the
previous checkpoint is untouched (tested with SIGKILL in tests/test_checkpoint.py).

Older layouts: checkpoints written before the optimiser was flattened (``train_state.py``) hold
Adam's moments as trees shaped like the parameters. Where the state being restored wants a ``[P]``
vector and the checkpoint holds such a tree, ``restore`` concatenates the tree's arrays in the
parameters' ``jax.tree_util`` order, the order of the flat optimiser, so that those runs resume.
"""

from __future__ import annotations

import inspect
import os
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp

#: True for orbax-checkpoint >= 0.5-style managers (``item_names`` + ``args``).
_NEW_API = "item_names" in inspect.signature(ocp.CheckpointManager.__init__).parameters

STATE, EXTRA = "state", "extra"


def _to_numpy(tree: Any) -> Any:
    """Host NumPy copies of every leaf (a replicated jax.Array is fully addressable)."""
    return jax.tree_util.tree_map(lambda a: np.array(jax.device_get(a)), tree)


def _old_pytree_checkpointer():
    """orbax 0.4.4: OCDBT off. Its OCDBT merge needs a newer tensorstore than the pinned 0.1.45
    (``KvStore.experimental_copy_range_to``); one zarr folder per array works with it."""
    return ocp.Checkpointer(ocp.PyTreeCheckpointHandler(use_ocdbt=False))


def _options(max_to_keep: int | None) -> ocp.CheckpointManagerOptions:
    kwargs: dict[str, Any] = {
        "max_to_keep": max_to_keep,
        "create": True,
        "cleanup_tmp_directories": True,
    }
    if "enable_async_checkpointing" in inspect.signature(ocp.CheckpointManagerOptions).parameters:
        kwargs["enable_async_checkpointing"] = False
    return ocp.CheckpointManagerOptions(**kwargs)


def _param_paths(state: Any) -> list[tuple]:
    """The key paths of ``state.params``'s leaves in ``jax.tree_util`` order ([] without params)."""
    params = getattr(state, "params", None)
    if params is None:
        return []
    return [path for path, _ in jax.tree_util.tree_flatten_with_path(params)[0]]


def _flattened(tree: Any, param_paths: list[tuple]) -> np.ndarray | None:
    """``tree``, restored without a target and shaped like the parameters, as one vector: its
    arrays at ``param_paths``, each flattened, concatenated in that order. None where ``tree``
    lacks one of them (then the checkpoint is of another model)."""
    try:
        parts = [np.reshape(_lookup(tree, path), -1) for path in param_paths]
    except (KeyError, IndexError, TypeError):
        return None
    return np.concatenate(parts) if parts else None


def _lookup(tree: Any, path: tuple) -> Any:
    """The value at a jax key path in a tree restored without a target (dicts keyed by field
    names or str(index), lists for sequences)."""
    node = tree
    for key in path:
        if isinstance(key, jax.tree_util.DictKey):
            k = key.key
        elif isinstance(key, jax.tree_util.GetAttrKey):
            k = key.name
        elif isinstance(key, jax.tree_util.SequenceKey):
            k = key.idx
        elif isinstance(key, jax.tree_util.FlattenedIndexKey):
            k = key.key
        else:  # pragma: no cover - future key types
            raise KeyError(key)
        if isinstance(node, (list, tuple)):
            node = node[int(k)]
        elif isinstance(k, str) or k in node:
            node = node[k]
        else:
            node = node[str(k)]
    return node


class CheckpointManager:
    """Save/restore ``(state, extra)`` at integer steps in ``directory``, keeping the newest
    ``max_to_keep`` (None keeps all)."""

    def __init__(self, directory: str | os.PathLike, max_to_keep: int | None = 3):
        self.directory = os.path.abspath(os.fspath(directory))
        if _NEW_API:
            self._mngr = ocp.CheckpointManager(
                self.directory, options=_options(max_to_keep), item_names=(STATE, EXTRA)
            )
        else:
            self._mngr = ocp.CheckpointManager(
                self.directory,
                checkpointers={
                    STATE: _old_pytree_checkpointer(),
                    EXTRA: ocp.Checkpointer(ocp.JsonCheckpointHandler()),
                },
                options=_options(max_to_keep),
            )

    # -- queries ----------------------------------------------------------------------------------

    def all_steps(self) -> list[int]:
        """Steps of the complete checkpoints, ascending."""
        self._reload()
        return sorted(int(s) for s in self._mngr.all_steps())

    def latest_step(self) -> int | None:
        steps = self.all_steps()
        return steps[-1] if steps else None

    def _reload(self) -> None:
        if hasattr(self._mngr, "reload"):
            self._mngr.reload()

    # -- save / restore ---------------------------------------------------------------------------

    def save(self, step: int, state: Any, extra: dict[str, Any] | None = None) -> None:
        """Writes checkpoint ``step`` (synchronously; returns when it is complete on disk).

        The arrays are fetched to host NumPy first (the train state is replicated, so every
        process holds all of it): orbax 0.4.4's jax.Array path needs a newer tensorstore than the
        pinned one, and NumPy leaves save and restore identically in both orbax versions.
        """
        extra = dict(extra or {})
        host_state = _to_numpy(state)
        if _NEW_API:
            args = ocp.args.Composite(
                **{STATE: ocp.args.PyTreeSave(host_state), EXTRA: ocp.args.JsonSave(extra)}
            )
            self._mngr.save(int(step), args=args, force=True)
        else:
            self._mngr.save(int(step), {STATE: host_state, EXTRA: extra}, force=True)
        self.wait()

    def restore(self, step: int | None, target: Any) -> tuple[Any, dict[str, Any]]:
        """Restores ``(state, extra)`` of ``step`` (None: the latest) into the structure of
        ``target`` (a state of the same model, e.g. freshly initialised).

        The checkpoint is read without a target (as nested dicts and lists, the same in both orbax
        versions) and every leaf of ``target`` is looked up by its key path, so namedtuples,
        dataclasses and empty optimiser states need no orbax support. Leaves come back as NumPy
        arrays with the target's dtypes; ``jax.device_put`` them where they belong. Raises
        ValueError when the checkpoint's tree or shapes do not match ``target``.
        """
        step = self._resolve(step)
        raw, extra = self.restore_raw(step)
        paths_and_leaves, treedef = jax.tree_util.tree_flatten_with_path(target)
        param_paths = _param_paths(target)
        leaves = []
        for path, leaf in paths_and_leaves:
            name = jax.tree_util.keystr(path)
            try:
                value = _lookup(raw, path)
            except (KeyError, IndexError, TypeError):
                value = None
            want = np.asarray(jax.device_get(leaf)) if not isinstance(leaf, np.ndarray) else leaf
            if isinstance(value, (dict, list)) and want.ndim == 1:
                value = _flattened(value, param_paths)  # a per-leaf moment of an older run
            if value is None or np.shape(value) != want.shape:
                raise ValueError(
                    f"checkpoint {step} in {self.directory} does not match the model being trained "
                    f"(leaf {name}: expected shape {want.shape}, found "
                    f"{'nothing' if value is None else np.shape(value)}); use a fresh --workdir "
                    "for a new model"
                )
            leaves.append(np.asarray(value, dtype=want.dtype))
        return jax.tree_util.tree_unflatten(treedef, leaves), extra

    def restore_raw(self, step: int | None = None) -> tuple[Any, dict[str, Any]]:
        """Restores without a target: the state as nested dicts of NumPy arrays (the train
        state's fields become keys 'step', 'params', 'opt_state'). For export and inspection."""
        step = self._resolve(step)
        root = os.path.join(self.directory, str(step))
        pytree = ocp.PyTreeCheckpointer() if _NEW_API else _old_pytree_checkpointer()
        state = pytree.restore(os.path.join(root, STATE))
        extra = ocp.Checkpointer(ocp.JsonCheckpointHandler()).restore(os.path.join(root, EXTRA))
        state = jax.tree_util.tree_map(np.asarray, state)
        return state, dict(extra or {})

    def _resolve(self, step: int | None) -> int:
        steps = self.all_steps()
        if not steps:
            raise FileNotFoundError(f"no complete checkpoint in {self.directory}")
        if step is None:
            return steps[-1]
        if int(step) not in steps:
            raise FileNotFoundError(
                f"no checkpoint for step {step} in {self.directory} (have {steps})"
            )
        return int(step)

    def wait(self) -> None:
        if hasattr(self._mngr, "wait_until_finished"):
            self._mngr.wait_until_finished()

    def close(self) -> None:
        self.wait()
        if hasattr(self._mngr, "close"):
            self._mngr.close()

"""Experiment configs outside absl's ``app.run``, and the checkout the tools live in.

A config is named by a preset (``mracnn_jax.configs.PRESETS``: ``"mracnn"``, ``"small"``, ...) or
by the path of a Python file with ``get_config()`` (``load_config``); ``--config.<field>=<value>``
overrides are parsed by ml_collections' absl config flag, as ``train.py`` parses them, on a
private ``FlagValues`` so that no global flag state is touched.

``REPO`` is the repository checkout this package is imported from (the source tree of an editable
install, ``pip install -e .``), holding ``benchmarks/``, ``scripts/`` and ``docs/``; in an
installed wheel it is the site-packages folder, and only the presets and ``data_path`` apply.
``data_path`` is under the data root of ``training.defaults.default_data_root`` (``$MRACNN_DATA``,
else ``shared/data`` inside or beside the checkout), e.g. ``data_path("kodak")``.
"""

from __future__ import annotations

import difflib
import importlib.util
import pathlib
from collections.abc import Sequence

import ml_collections

from mracnn_jax import configs
from mracnn_jax.training.defaults import default_data_root

REPO = pathlib.Path(__file__).resolve().parents[1]
CONFIGS = configs.FOLDER

__all__ = [
    "CONFIGS",
    "REPO",
    "config_path",
    "data_path",
    "expand_preset_flag",
    "load_config",
    "resolve_config",
    "unknown_field_error",
]


def config_path(name: str) -> pathlib.Path:
    """The file of the preset ``name``, e.g. ``config_path("mracnn")`` (``configs.preset_path``)."""
    return configs.preset_path(name)


def data_path(*parts: str) -> pathlib.Path:
    """A path under the data root, e.g. ``data_path("kodak")`` (the module docstring)."""
    return default_data_root().joinpath(*parts)


def resolve_config(name_or_path: str | pathlib.Path) -> pathlib.Path:
    """The config file ``--config`` names: a preset's file for a preset name (``"small"``), else
    the path itself, checked.

    Raises:
      FileNotFoundError: neither a preset nor an existing file (the message lists the presets).
      ValueError: an existing file that is not a ``.py`` file.
    """
    text = str(name_or_path)
    if text in configs.PRESETS:
        return configs.preset_path(text)
    file = pathlib.Path(text)
    choices = f"a preset ({', '.join(configs.PRESETS)}) or a .py file with get_config()"
    if not file.is_file():
        raise FileNotFoundError(f"config {text!r} is neither a preset nor a file: name {choices}")
    if file.suffix != ".py":
        raise ValueError(
            f"config {text!r} is not a Python config file: name {choices}, e.g. small or mracnn"
        )
    return file


def unknown_field_error(config: ml_collections.ConfigDict, field: str) -> None:
    """Raises ``ValueError`` naming ``field`` (dotted, e.g. ``"train.lmbda"``) and the closest
    known one if ``config`` has no such field."""
    node, done = config, []
    for part in field.split("."):
        if not isinstance(node, ml_collections.ConfigDict) or part not in node:
            known = list(node.keys()) if isinstance(node, ml_collections.ConfigDict) else []
            near = difflib.get_close_matches(part, known, n=1)
            where = ".".join(done) or "the config"
            hint = f" (did you mean {'.'.join([*done, near[0]])}?)" if near else ""
            if known and not near:
                hint = f" ({where} has {', '.join(sorted(known))})"
            raise ValueError(f"unknown config field {field}{hint}")
        node = node[part]
        done.append(part)


def expand_preset_flag(argv: Sequence[str]) -> list[str]:
    """``argv`` with the value of ``--config=NAME`` (or ``--config NAME``) replaced by the file of
    the preset ``NAME``, for absl's config flag (``train.py``), which takes a path; other values
    are left as they are."""
    out = list(argv)
    for k, arg in enumerate(out):
        if arg.startswith("--config=") and arg[len("--config=") :] in configs.PRESETS:
            out[k] = f"--config={configs.preset_path(arg[len('--config=') :])}"
        elif arg == "--config" and k + 1 < len(out) and out[k + 1] in configs.PRESETS:
            out[k + 1] = str(configs.preset_path(out[k + 1]))
    return out


def load_config(
    name_or_path: str | pathlib.Path, overrides: Sequence[str] = ()
) -> ml_collections.ConfigDict:
    """Runs ``get_config()`` of a preset or config file (``resolve_config``), then applies
    ``overrides``, each ``--config.<field>=<value>`` as ``train.py`` takes it (ml_collections'
    ``config_flags``: numbers, strings, booleans and tuples; lists such as
    ``data.train_dirs`` cannot be overridden this way).

    Raises:
      FileNotFoundError, ValueError: a config that does not exist, has no ``get_config()``, or an
        override of an unknown field or of a value the field cannot take (one-line messages).
    """
    file = resolve_config(name_or_path)
    if not overrides:
        spec = importlib.util.spec_from_file_location(f"_mracnn_config_{file.stem}", file)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        if not hasattr(module, "get_config"):
            raise ValueError(f"config file {str(name_or_path)!r} has no get_config()")
        return module.get_config()
    for override in overrides:  # an unknown field is named here, before absl sees it
        field = override.split("=", 1)[0].removeprefix("--config.")
        if not override.startswith("--config.") or "=" not in override:
            raise ValueError(f"config override {override!r} is not --config.<field>=<value>")
        unknown_field_error(load_config(file), field)
    from absl import flags
    from ml_collections import config_flags

    argv = ["mracnn", f"--config={file}", *overrides]
    fv = flags.FlagValues()
    try:
        config_flags.DEFINE_config_file("config", None, "", flag_values=fv, sys_argv=argv)
        fv(argv)
    except Exception as e:  # noqa: BLE001 - absl and ml_collections raise several kinds
        text = " ".join(str(e).replace("\\n", " ").replace("\\'", "'").split())
        raise ValueError(f"config override: {text}") from None
    return fv.config

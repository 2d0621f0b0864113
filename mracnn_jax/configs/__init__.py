"""The experiment presets: one ``<name>.py`` per experiment, each with a ``get_config()`` that
returns the full experiment config (``mracnn_jax.experiment.experiment_config`` plus overrides).

    mracnn        MRACNN, reconstruction A (the default model), paper size
    wacnn         WACNN (Zou et al. 2022), the paper's baseline
    wacnn_mracb   Table 3 ablation: WACNN + MRACB transforms
    wacnn_elam    Table 3 ablation: WACNN + ELAM
    wacnn_clab    Table 3 ablation: WACNN + CLAB
    bundled       the bundled models (MRACNN's blocks at reduced width; ``QUALITY_LAMBDAS``)
    small         a narrow MRACNN with every block type, for tests and smoke runs

Every command that takes ``--config`` (``train.py``, ``mracnn train``, ``mracnn export``,
``mracnn convert``, ``python -m mracnn_jax.summary``) takes a preset name or the path of a
config file of the same form (``mracnn_jax.config_files.load_config``). Importing this package
imports no JAX.
"""

from __future__ import annotations

import pathlib

FOLDER = pathlib.Path(__file__).resolve().parent

#: The preset names, in the order of the module docstring.
PRESETS: tuple[str, ...] = (
    "mracnn", "wacnn", "wacnn_mracb", "wacnn_elam", "wacnn_clab", "bundled", "small",
)  # fmt: skip

__all__ = ["FOLDER", "PRESETS", "preset_path"]


def preset_path(name: str) -> pathlib.Path:
    """The file of the preset ``name``, e.g. ``preset_path("small")``.

    Raises:
      KeyError: ``name`` is not one of ``PRESETS``.
    """
    if name not in PRESETS:
        raise KeyError(f"no preset {name!r}; the presets are {', '.join(PRESETS)}")
    return FOLDER / f"{name}.py"

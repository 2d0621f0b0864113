"""The experiment config: ``config.model`` (presets), ``config.train`` and ``config.data``.

Every preset (``mracnn_jax/configs/*.py``) is ``get_config() =
experiment_config(presets.<model>())`` plus overrides.
"""

from __future__ import annotations

import ml_collections

from mracnn_jax.training.defaults import data_config, training_config


def experiment_config(model: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A full experiment config around a model config, with the default training and data fields."""
    config = ml_collections.ConfigDict()
    config.model = model
    config.train = training_config()
    config.data = data_config()
    return config

"""The experiment config: ``config.model`` (presets), ``config.train`` and ``config.data``.

Every ``configs/*.py`` is ``get_config() = experiment_config(presets.<model>())`` plus overrides.
"""

from __future__ import annotations

import ml_collections


def experiment_config(model: ml_collections.ConfigDict) -> ml_collections.ConfigDict:
    """A full experiment config around a model config, with the default training and data fields."""
    from mracnn_jax.training.defaults import data_config, training_config

    config = ml_collections.ConfigDict()
    config.model = model
    config.train = training_config()
    config.data = data_config()
    return config

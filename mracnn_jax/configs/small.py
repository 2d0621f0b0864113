"""A narrow MRACNN (N=16, M=40) with every block type of the mracnn preset, for tests and smoke runs."""

from mracnn_jax.experiment import experiment_config
from mracnn_jax.models import presets


def get_config():
    config = experiment_config(presets.small())
    config.train.batch_size = 2
    config.train.crop_size = 64
    return config

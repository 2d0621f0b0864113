"""WACNN (Zou et al. 2022), the paper's baseline, as the public STF code builds it."""

from mracnn_jax.experiment import experiment_config
from mracnn_jax.models import presets


def get_config():
    return experiment_config(presets.wacnn())

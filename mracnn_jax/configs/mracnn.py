"""MRACNN, reconstruction A of docs/architecture.md (the default model), paper-size."""

from mracnn_jax.experiment import experiment_config
from mracnn_jax.models import presets


def get_config():
    return experiment_config(presets.mracnn())

"""Table 3 ablation: WACNN + CLAB (channel-aware squeezing entropy model)."""

from mracnn_jax.experiment import experiment_config
from mracnn_jax.models import presets


def get_config():
    return experiment_config(presets.wacnn_clab())

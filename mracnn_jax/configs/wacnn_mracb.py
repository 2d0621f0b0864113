"""Table 3 ablation: WACNN + MRACB (MRACD and MRACU transforms)."""

from mracnn_jax.experiment import experiment_config
from mracnn_jax.models import presets


def get_config():
    return experiment_config(presets.wacnn_mracb())

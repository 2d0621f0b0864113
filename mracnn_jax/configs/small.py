"""A narrow MRACNN (N=16, M=40) with every block type of the mracnn preset, for tests and smoke runs.

Its training recipe learns within the few dozen steps of a test: batch 4 of 64², Adam at 5e-4,
constant after 20 warm-up steps. The tests and the benchmarks' smoke runs all train this one step,
so each compiles it once and the rest load it from the compilation cache.
"""

from mracnn_jax.experiment import experiment_config
from mracnn_jax.models import presets


def get_config():
    config = experiment_config(presets.small())
    config.train.update(
        {
            "batch_size": 4,
            "crop_size": 64,
            "learning_rate": 5e-4,
            "lr_schedule": "constant",
            "warmup_steps": 20,
        }
    )
    return config

"""The bundled models: MRACNN's block types at reduced width, trainable on a 2-core CPU.

Same structure as the mracnn preset (MRACB transforms, two ELAMs per transform with ELSA kernel 7
and 8 heads, 5-slice channel-aware squeezing entropy model with CLAB and LRP), with N = 64,
M = 160 (5 slices of 32), Z = 64, CLAB width 64 and cc/LRP widths (64, 48): 9,753,827 parameters
(a 19.9 MB float16 model file), 86.4 GFLOPs at 768x512 (the mracnn preset: 607). Three rate points:
``--config.train.lmbda`` 0.0018 (quality 1), 0.0130 (quality 2, the default), 0.05 (quality 3).
The defaults below are for a CPU (128x128 crops, 4x cheaper per step than 256x256);
scripts/gpu_train_bundled.sh overrides them for one GPU (256x256 crops, batch 16).
"""

from mracnn_jax.experiment import experiment_config
from mracnn_jax.models import presets

QUALITY_LAMBDAS = {1: 0.0018, 2: 0.0130, 3: 0.05}


def get_config():
    model = presets.mracnn()
    model.name = "mracnn-bundled"
    model.N, model.M, model.Z = 64, 160, 64
    model.hyper_analysis_widths = (160, 128, 112, 80)
    model.hyper_synthesis_widths = (64, 80, 112, 128)
    model.entropy.cc_widths = (64, 48)
    model.entropy.clab_dim = 64
    config = experiment_config(model)
    config.train.lmbda = QUALITY_LAMBDAS[2]
    config.train.batch_size = 8
    config.train.crop_size = 128
    config.train.num_steps = 200_000
    config.train.checkpoint_every = 250
    config.train.keep_checkpoints = 2
    config.train.log_every = 25
    config.train.eval_every = 1000
    config.train.num_eval_images = 8
    config.train.eval_crop_size = 256
    return config

"""The bundled models: MRACNN's block types at reduced width, trainable on a 2-core CPU.

Same structure as the mracnn preset (MRACB transforms, two ELAMs per transform with ELSA kernel 7
and 8 heads, 5-slice channel-aware squeezing entropy model with CLAB and LRP), with N = 64,
M = 160 (5 slices of 32), Z = 64, CLAB width 64 and cc/LRP widths (64, 48): 9,753,827 parameters
(a 19.9 MB float16 model file), 86.4 GFLOPs at 768x512 (the mracnn preset: 607). Three rate points:
``--config.train.lmbda`` 0.0018 (quality 1), 0.0130 (quality 2, the default), 0.05 (quality 3).
Two more qualities, to extend the curve towards 0.1 and 1.0 bpp on Kodak, have no bundled file yet:
0.0004 (quality 0) and 0.0932 (quality 4, CompressAI's seventh λ); a run of one starts from the
bundled quality next to it (``start_quality``).
The defaults below are for a CPU (128x128 crops, 4x cheaper per step than 256x256);
scripts/gpu_train_bundled.sh overrides them for one GPU (256x256 crops, batch 16).
"""

import math

from mracnn_jax.experiment import experiment_config
from mracnn_jax.models import presets

QUALITY_LAMBDAS = {1: 0.0018, 2: 0.0130, 3: 0.05}  # the bundled files' λ
NEW_QUALITY_LAMBDAS = {0: 0.0004, 4: 0.0932}  # trained towards a bundled file, none yet


def quality_lambda(quality: int) -> float:
    """The λ of a bundled or a new quality; a one-line ValueError for any other."""
    known = {**QUALITY_LAMBDAS, **NEW_QUALITY_LAMBDAS}
    if quality not in known:
        raise ValueError(f"no quality {quality}: the qualities are {sorted(known)}")
    return known[quality]


def start_quality(quality: int) -> int:
    """The bundled quality whose file a run of ``quality`` starts from when ``quality`` has no file
    of its own: itself when bundled, else the bundled quality nearest in ln λ."""
    lmbda = quality_lambda(quality)
    if quality in QUALITY_LAMBDAS:
        return quality
    return min(QUALITY_LAMBDAS, key=lambda q: abs(math.log(QUALITY_LAMBDAS[q] / lmbda)))


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

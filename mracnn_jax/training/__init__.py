"""Training: input pipeline, train state, orbax checkpoints and the loop (the rate–distortion loss
is ``models.objective``'s, shared with the encoder's latent refinement).

Modules (import them directly; this package imports nothing heavy so that configs can use
``defaults`` without pulling in orbax or grain):

* ``defaults``        ``training_config()``, ``data_config()``, the paper's λ grids.
* ``data_order``      the image list and the endless seeded order of training positions.
* ``crops``           one image: decode, pad, random crop and flip, gray for one channel.
* ``input_pipeline``  image folders → uint8 batches, grain or thread backend, resumable position.
* ``train_state``     ``TrainState`` and ``make_optimizer`` (clipping + Adam + schedule).
* ``checkpoint``      ``CheckpointManager`` for orbax 0.4.4 and 0.12.
* ``export``          ``export_from_checkpoint``: a checkpoint's portable model file.
* ``steps``           the mesh, the train state, the jitted training and validation steps.
* ``run_log``         metrics.jsonl and TensorBoard, the progress bar, the saved config.
* ``train_lib``       ``train_and_evaluate(config, workdir)``: the loop.
"""

from mracnn_jax.training.defaults import (
    MS_SSIM_LAMBDAS,
    MSE_LAMBDAS,
    PAPER_LEARNING_RATE,
    data_config,
    training_config,
)

__all__ = [
    "MSE_LAMBDAS",
    "MS_SSIM_LAMBDAS",
    "PAPER_LEARNING_RATE",
    "data_config",
    "training_config",
]

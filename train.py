"""Train an MRACNN model, or export a trained one.

Train (resumes automatically when WORKDIR has checkpoints):
  python train.py --config=configs/mracnn.py --workdir=workdirs/mracnn_0130 \\
      --config.train.lmbda=0.0130 --config.train.num_steps=1000000

Export the portable model file from the latest checkpoint of a work directory (no --config
needed; the config is stored in the checkpoint):
  python train.py --export_only --workdir=workdirs/mracnn_0130 [--export_path=model.mracnn]
      [--export_dtype=float16] [--export_step=N]
"""

from __future__ import annotations

import os

from absl import app, flags, logging
from ml_collections import config_flags

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", None, "Experiment config file (configs/*.py).", lock_config=True
)
flags.DEFINE_string("workdir", None, "Work directory: checkpoints, metrics, config, model file.")
flags.DEFINE_bool("export_only", False, "Only export the model file from the latest checkpoint.")
flags.DEFINE_string("export_path", None, "Model file to write (default: WORKDIR/model.mracnn).")
flags.DEFINE_enum("export_dtype", "float32", ["float32", "float16"], "Storage dtype of exports.")
flags.DEFINE_integer("export_step", None, "Checkpoint step to export (default: the latest).")
flags.mark_flag_as_required("workdir")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if FLAGS.export_only:
        from mracnn_jax.model_file import export_from_checkpoint

        out = FLAGS.export_path or os.path.join(FLAGS.workdir, "model.mracnn")
        digest = export_from_checkpoint(
            FLAGS.workdir, out, step=FLAGS.export_step, dtype=FLAGS.export_dtype
        )
        logging.info("wrote %s (params sha256 %s)", out, digest)
        print(out)
        return
    if FLAGS.config is None:
        raise app.UsageError("--config is required for training")
    from mracnn_jax.training.train_lib import train_and_evaluate

    train_and_evaluate(FLAGS.config, FLAGS.workdir)


if __name__ == "__main__":
    app.run(main)

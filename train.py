"""Train an MRACNN model, or export a trained one.

Train (resumes automatically when WORKDIR has checkpoints):
  python train.py --config=mracnn --workdir=workdirs/mracnn_0130 \\
      --config.train.lmbda=0.0130 --config.train.num_steps=1000000

--config names a preset (mracnn, wacnn, wacnn_mracb, wacnn_elam, wacnn_clab, bundled, small: the
files of mracnn_jax/configs/) or a config file of the same form. ``mracnn train`` does the same
from an installed package (and takes --data DIR... for the training folders).

Export the portable model file from the latest checkpoint of a work directory (no --config
needed; the config is stored in the checkpoint):
  python train.py --export_only --workdir=workdirs/mracnn_0130 [--export_path=model.mracnn]
      [--export_dtype=float16] [--export_step=N]
"""

from __future__ import annotations

import os
import sys

from absl import app, flags, logging
from ml_collections import config_flags

from mracnn_jax.config_files import expand_preset_flag

sys.argv = expand_preset_flag(sys.argv)  # --config=small -> the preset's file
FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "config", None, "A preset (mracnn, small, ...) or a config file.", lock_config=True
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
        from mracnn_jax.training.export import export_from_checkpoint

        out = FLAGS.export_path or os.path.join(FLAGS.workdir, "model.mracnn")
        digest = export_from_checkpoint(
            FLAGS.workdir, out, step=FLAGS.export_step, dtype=FLAGS.export_dtype
        )
        logging.info("wrote %s (params sha256 %s)", out, digest)
        print(out)
        return
    if FLAGS.config is None:
        raise app.UsageError("--config is required for training")
    from mracnn_jax.training.config_checks import ConfigError, check_run
    from mracnn_jax.training.stopping import Interrupted
    from mracnn_jax.training.train_lib import train_and_evaluate

    try:
        check_run(FLAGS.config)  # one line before the model is built
    except ConfigError as e:
        raise SystemExit(f"train.py: error: {e}") from None

    try:
        train_and_evaluate(FLAGS.config, FLAGS.workdir)
    except Interrupted as e:
        print(f"train.py: {e}", file=sys.stderr)
        sys.exit(e.exit_status)


if __name__ == "__main__":
    app.run(main)

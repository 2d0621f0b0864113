"""The ``mracnn`` commands that make, train, evaluate and convert models (``mracnn_jax.cli`` holds
the parser, ``cli_coding`` the coding commands):

    mracnn export --config PRESET|FILE --seed S OUT.mracnn    a random-initialised model file
    mracnn export-xla MODEL OUTDIR [...]                      jax.export artefacts (export_xla)
    mracnn train --config PRESET|FILE --workdir WD [...]      training (training.train_lib)
    mracnn evaluate [...]                                     RD curves (evaluation.command)
    mracnn convert IN.pth OUT.mracnn [...]                    PyTorch weights (convert)

As in ``cli``: arguments are checked before anything heavy is imported (JAX only inside the
command functions, after the checks), and every refusal is a one-line ``CliError``.
"""

from __future__ import annotations

import argparse
import os
import sys

from mracnn_jax import cli_paths as paths

PROG = paths.PROG
CliError, UsageError = paths.CliError, paths.UsageError


def cmd_export(args) -> int:
    from mracnn_jax.config_files import load_config

    paths.check_output(args.output)
    config = load_config(args.config)
    from mracnn_jax import codec  # JAX is imported only now

    model = codec.LoadedModel.from_config(config, seed=args.seed)
    digest = model.save(
        args.output, {"source": "random initialisation", "config": args.config, "seed": args.seed}
    )
    print(f"{args.output}: model {model.name}, params {digest}")
    return 0


def _train_parser() -> argparse.ArgumentParser:
    from mracnn_jax.configs import PRESETS

    p = argparse.ArgumentParser(
        prog=f"{PROG} train",
        description="Train (or resume) a model in a work directory, as train.py does: "
        "checkpoints, metrics.jsonl, TensorBoard events under tb/, and the model file at the end. "
        "The config and the data folders are checked before the model is built.",
        epilog="Fields of the config are overridden as in train.py, e.g. "
        "--config.train.num_steps=1000 --config.train.lmbda=0.0067 (numbers, strings, booleans "
        "and tuples; the fields are documented in mracnn_jax/training/defaults.py).",
    )
    p.add_argument(
        "--config",
        required=True,
        help=f"a preset ({', '.join(PRESETS)}) or a Python config file with get_config()",
    )
    p.add_argument(
        "--workdir", required=True, help="work directory (an existing one with checkpoints resumes)"
    )
    p.add_argument(
        "--data", nargs="+", metavar="DIR", help="training image folders (config.data.train_dirs)"
    )
    p.add_argument(
        "--val-data",
        metavar="DIR",
        help="validation image folder (config.data.val_dir); 'none' for no validation",
    )
    return p


def cmd_train(args) -> int:
    """``mracnn train``: the config (preset or file, plus overrides) -> ``train_and_evaluate``.

    The overrides are parsed by ml_collections' absl config flag on a private ``FlagValues``
    (``config_files.load_config``), so they mean what they mean to ``train.py``."""
    import logging

    opts, extra = _train_parser().parse_known_args(args.rest)
    overrides: list[str] = []
    for arg in extra:  # --config.x=v, or --config.x v
        if arg.startswith("--config."):
            overrides.append(arg)
        elif overrides and "=" not in overrides[-1]:
            overrides[-1] += f"={arg}"
        else:
            raise UsageError(f"train: unrecognised argument {arg!r} (see {PROG} train --help)")
    from mracnn_jax.config_files import load_config
    from mracnn_jax.training import config_checks

    config = load_config(opts.config, overrides)
    if opts.data:
        config.data.train_dirs = list(opts.data)
    if opts.val_data is not None:
        config.data.val_dir = "" if opts.val_data.lower() == "none" else opts.val_data
    config_checks.check_run(config)  # one-line errors before the model is built
    from tqdm.contrib.logging import logging_redirect_tqdm

    from mracnn_jax.training.stopping import Interrupted
    from mracnn_jax.training.train_lib import train_and_evaluate

    log = logging.getLogger("mracnn_jax")  # its INFO lines above the bar, once
    saved = log.level, log.propagate
    log.setLevel(logging.INFO)
    log.propagate = False
    try:
        with logging_redirect_tqdm(loggers=[log]):
            state = train_and_evaluate(config, opts.workdir)
    except Interrupted as e:
        print(f"{PROG} train: {e}", file=sys.stderr)
        return e.exit_status
    finally:
        log.setLevel(saved[0])
        log.propagate = saved[1]
    print(f"{opts.workdir}: trained to step {int(state.step)} (config {opts.config})")
    return 0


def cmd_evaluate(args) -> int:
    """``mracnn evaluate``: ``mracnn_jax.evaluation.command`` (what ``evaluate.py`` runs)."""
    from mracnn_jax.evaluation import command

    return command.main(list(args.rest), prog=f"{PROG} evaluate")


def cmd_export_xla(args) -> int:
    """Model file -> ``jax.export`` artefacts of its networks and a manifest
    (``mracnn_jax.export_xla``, docs/export_xla.md)."""
    if not os.path.exists(args.model):
        raise CliError(f"model file {args.model!r} does not exist")
    out = args.outdir
    if os.path.exists(out) and (not os.path.isdir(out) or os.listdir(out)):
        raise CliError(f"output {out!r} exists and is not an empty folder: name a new one")
    parent = os.path.dirname(os.path.abspath(out))
    if not os.path.isdir(parent):
        raise CliError(f"output folder's parent {parent!r} does not exist")
    sized = args.height is not None or args.width is not None
    if args.symbolic and sized:
        raise UsageError("--symbolic exports for any image size: give it without --height/--width")
    if not args.symbolic and (args.height is None or args.width is None):
        raise UsageError("give the image size (--height H --width W) or --symbolic")
    if sized and not (1 <= args.height <= 65535 and 1 <= args.width <= 65535):
        raise CliError(f"image size {args.height}x{args.width} outside 1..65535 pixels per side")
    platforms = tuple(p.strip().lower() for p in args.platforms.split(",") if p.strip())
    from mracnn_jax import export_xla  # JAX is imported only now

    error = export_xla.serialisation_error()
    if error:
        raise CliError(error)
    info = export_xla.write_export(
        args.model, out, args.height, args.width, symbolic=args.symbolic, platforms=platforms
    )
    for name in sorted(os.listdir(out)):
        print(
            f"  {os.path.join(out, name)}  {paths.human_size(os.path.getsize(os.path.join(out, name)))}"
        )
    image = info["image"]
    shape = (
        "any image (padded to multiples of 64)"
        if image["symbolic"]
        else f"{image['height']}x{image['width']} images (padded to {image['padded'][0]}x"
        f"{image['padded'][1]})"
    )
    print(
        f"{out}: {len(info['pieces'])} pieces of model {info['model']['name']} (params "
        f"{info['model']['params_digest'][:16]}) for {shape}, platforms "
        f"{', '.join(info['jax']['platforms'])}, JAX {info['jax']['version']}"
    )
    return 0


def cmd_convert(args) -> int:
    """PyTorch checkpoint (STF/CompressAI key names, see ``mracnn_jax.convert``) -> model file."""
    if not os.path.exists(args.input):
        raise CliError(f"no such checkpoint: {args.input!r}")
    paths.check_output(args.output)
    if paths.same_file(args.input, args.output):
        raise CliError(f"the output {args.output!r} is the checkpoint itself: name another file")
    from mracnn_jax import convert  # JAX (and PyTorch) are imported only now

    model_config = None
    if args.config:
        from mracnn_jax.config_files import load_config

        model_config = load_config(args.config).model
    digest, report = convert.convert_checkpoint(
        args.input, args.output, args.arch, model_config, dtype=args.dtype
    )
    print(f"{args.output}: model {args.arch} from {args.input}, params {digest}")
    print(f"  {report.summary()}")
    return 0

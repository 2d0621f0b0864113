"""The ``mracnn`` command line: the parser and ``main``.

    mracnn compress IN [OUT.mrac] [--model M | --quality Q] [--tile N | --no-tile] [--bits B]
    mracnn compress IN... -o OUTDIR [options]        images and folders -> OUTDIR/<stem>.mrac
    mracnn decompress IN.mrac [OUT.png] [--model M] [--tile N | --no-tile]
    mracnn decompress IN.mrac... -o OUTDIR [options] files and folders -> OUTDIR/<stem>.png
    mracnn info IN.mrac
    mracnn models
    mracnn export --config mracnn --seed 0 OUT.mracnn
    mracnn export-xla MODEL OUTDIR [--height H --width W | --symbolic]   jax.export artefacts
    mracnn train --config small --workdir WD [--data DIR...] [--config.train.num_steps=N ...]
    mracnn evaluate [evaluate.py's options]
    mracnn convert IN.pth OUT.mracnn [--arch wacnn | --arch mracnn] [--config C]

Inputs are checked before anything heavy is imported, every error is one line on stderr with
exit status 1 (2 for usage errors), and outputs are written to a temporary file that is renamed
into place only on success, so a failed command leaves nothing behind; they get the permissions
``open()`` would give (``mracnn_jax.fileio``). Set ``MRACNN_DEBUG=1`` for tracebacks.

This module parses the arguments, lists the bundled models and runs the command it names. The
commands live by idea: ``mracnn_jax.cli_coding`` (compress, decompress and info: default
outputs, the bundled model, the batch form, tiles, the compilation cache),
``mracnn_jax.cli_models`` (export, export-xla, train, evaluate, convert), and
``mracnn_jax.cli_paths`` (which files a command reads and writes: names, defaults, the batch's
jobs).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time

from mracnn_jax import __version__, cli_coding, cli_models, zoo
from mracnn_jax import cli_paths as paths
from mracnn_jax.compilation_cache import CACHE_ENV
from mracnn_jax.evaluation.command import whole_number

PROG, BITSTREAM_SUFFIX, DECODED_SUFFIX = paths.PROG, paths.BITSTREAM_SUFFIX, paths.DECODED_SUFFIX
CliError, UsageError = paths.CliError, paths.UsageError


# -------------------------------------------------------------------------------------------------
# Helpers.


def _quiet_libraries() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import logging

    for name in ("jax._src.xla_bridge", "absl", "tensorflow"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _quality_help() -> str:
    """``--quality``'s help: each bundled model's quality with the lambda in its metadata."""
    text = "choose a bundled model by its quality"
    try:
        entries = sorted(  # the colour models; grayscale ones share their qualities
            (e for e in zoo.for_channels(3) if e.quality is not None),
            key=lambda e: (e.quality, e.path),
        )
        default = zoo.default().path if entries else None
    except Exception:  # noqa: BLE001 - the help must print whatever the bundled files hold
        return text
    if not entries:
        return f"{text} (no model with a quality is bundled)"
    items = []
    for entry in entries:
        notes = [] if entry.lmbda is None else [f"lambda {entry.lmbda:g}"]
        notes += ["the default"] if entry.path == default else []
        items.append(f"{entry.quality} ({', '.join(notes)})" if notes else str(entry.quality))
    return (
        f"{text}: {', '.join(items)}; lambda is the rate-distortion weight the model was trained "
        f"with, a larger one spending more bits for a better image (grayscale images get the "
        f"grayscale model of that quality where one is bundled)"
    )


# -------------------------------------------------------------------------------------------------
# The bundled models; the parser.


def cmd_models(args) -> int:
    """The bundled models as a table, by quality."""
    entries = zoo.bundled()
    if not entries:
        raise zoo.NoModelError(zoo.no_model_message())
    defaults = set()
    for channels in (3, 1):  # the colour default, and the grayscale images' one
        try:
            defaults.add(zoo.default(channels).path)
        except zoo.NoModelError:
            pass
    rows = [("quality", "images", "lambda", "size", "params", "name", "file")]

    def order(e: zoo.Entry):  # colour first, then by quality
        return e.channels != 3, e.quality is None, e.quality or 0, e.path.name

    for e in sorted(entries, key=order):
        quality = "-" if e.quality is None else str(e.quality)
        rows.append(
            (
                quality + (" *" if e.path in defaults else ""),
                "grayscale" if e.channels == 1 else "colour",
                "-" if e.lmbda is None else f"{e.lmbda:g}",
                paths.human_size(e.size),
                e.params_digest[:16],
                e.name or "-",
                e.path.name,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    print(
        "* the default (compress without --model and --quality: colour images, and grayscale "
        "images, which use the grayscale models where they are bundled, the colour ones "
        f"otherwise); folder {zoo.BUNDLED_DIR}"
    )
    return 0


def _add_batch_options(p: argparse.ArgumentParser, writes: str, default: str) -> None:
    p.add_argument(
        "-o",
        "--output-dir",
        metavar="OUTDIR",
        help=f"code every input in one process, writing {writes} (the folder is created if "
        "missing); a summary line follows the files' lines, and the exit status is 1 if any "
        "file failed",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help=f"replace an existing file where the output is not named ({default} or {writes}); "
        "never an input",
    )


def _add_tile_options(p: argparse.ArgumentParser, transform: str) -> None:
    from mracnn_jax.codec import tiles  # NumPy only: no JAX imported here

    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--tile",
        type=int,
        metavar="N",
        help=f"run {transform} in N x N tiles with halos, so that memory follows N (a multiple of "
        f"64; the file is the same: the latent is coded as one); default: tiles of "
        f"{tiles.DEFAULT_TILE} for images of more than {tiles.AUTO_TILE_PIXELS} pixels",
    )
    group.add_argument(
        "--no-tile", action="store_true", help="one tile (memory grows with the image size)"
    )


def _add_cache_options(p: argparse.ArgumentParser) -> None:
    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--cache-dir",
        help=f"persistent JAX compilation cache folder (default: ${CACHE_ENV}, else "
        "$XDG_CACHE_HOME/mracnn-jax/xla or ~/.cache/mracnn-jax/xla)",
    )
    group.add_argument(
        "--no-cache",
        action="store_true",
        help=f"no persistent compilation cache (also {CACHE_ENV}=off)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="MRACNN learned image codec (JAX).")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser(
        "compress",
        help="image -> .mrac (several, or folders, with -o OUTDIR)",
        usage=f"{PROG} compress IN [OUT.mrac] [options]\n"
        f"       {PROG} compress IN... -o OUTDIR [options]",
    )
    p.add_argument(
        "paths",
        nargs="+",
        metavar="IN [OUT]",
        help="the image (PNG, JPEG, TIFF, BMP or WebP) and the .mrac file to write (default: the "
        "input's name with .mrac for its extension, if no such file exists); with -o, any number "
        "of images and folders of images",
    )
    _add_batch_options(p, "OUTDIR/<stem>.mrac", "IN.mrac")
    which = p.add_mutually_exclusive_group()
    which.add_argument("--model", help="model file (default: the bundled model)")
    which.add_argument("--quality", type=int, metavar="Q", help=_quality_help())
    _add_cache_options(p)
    p.add_argument(
        "--bits",
        type=int,
        metavar="B",
        help="bits per sample of a 16-bit image's data (e.g. 10 or 12 for such sensors; default "
        "16): the model sees samples / (2^B - 1), and decompress gives B-bit samples back",
    )
    _add_tile_options(p, "g_a")
    p.add_argument(
        "--refine",
        type=whole_number,
        default=0,
        metavar="N",
        help="optimise the image's latent for the model's rate-distortion loss in N gradient "
        "steps before coding it (slower encoding, a smaller or better file; the decoder needs "
        "nothing new; default 0)",
    )
    p.set_defaults(func=cli_coding.cmd_compress)

    p = sub.add_parser(
        "decompress",
        help=".mrac -> image (several, or folders, with -o OUTDIR)",
        usage=f"{PROG} decompress IN.mrac [OUT.png] [options]\n"
        f"       {PROG} decompress IN.mrac... -o OUTDIR [options]",
    )
    p.add_argument(
        "paths",
        nargs="+",
        metavar="IN [OUT]",
        help="the .mrac file and the image to write, .png, .bmp, .tif, .webp or .jpg (default: "
        "the input's name with .png for its extension, if no such file exists); with -o, any "
        "number of .mrac files and folders of them",
    )
    _add_batch_options(p, "OUTDIR/<stem>.png", "IN.png")
    p.add_argument("--model", help="model file (default: the bundled model that wrote the file)")
    _add_cache_options(p)
    _add_tile_options(p, "g_s")
    p.set_defaults(func=cli_coding.cmd_decompress)

    p = sub.add_parser("info", help="print a .mrac file's header as JSON")
    p.add_argument("input", help=".mrac file")
    p.set_defaults(func=cli_coding.cmd_info)

    p = sub.add_parser(
        "models", help="list the bundled models: quality, lambda, size, params digest, name"
    )
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("export", help="write a randomly initialised model file")
    p.add_argument(
        "--config",
        required=True,
        help="a preset (mracnn, small, ...; mracnn_jax.configs) or a Python config file with "
        "get_config()",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("output", help="output model file")
    p.set_defaults(func=cli_models.cmd_export)

    for name, func, text in (
        (
            "train",
            cli_models.cmd_train,
            "train a model from a preset or config file (see train --help)",
        ),
        (
            "evaluate",
            cli_models.cmd_evaluate,
            "RD curves and BD-rates on a folder (see evaluate --help)",
        ),
    ):  # their own parsers (cli_models: train's, evaluate's) read every argument after the name
        p = sub.add_parser(name, help=text, add_help=False, prefix_chars="\0")
        p.add_argument("rest", nargs="*")
        p.set_defaults(func=func)

    p = sub.add_parser(
        "export-xla",
        help="model file -> jax.export artefacts of its networks, for deployment",
        description="Writes the model's networks as serialised jax.export artefacts and a "
        "manifest.json that says how to chain them (docs/export_xla.md). The image is padded, as "
        "the codec pads it, to multiples of 64.",
    )
    p.add_argument("model", help="model file (.mracnn)")
    p.add_argument("outdir", help="folder to create for the artefacts and manifest.json")
    p.add_argument("--height", type=int, metavar="H", help="image height in pixels")
    p.add_argument("--width", type=int, metavar="W", help="image width in pixels")
    p.add_argument(
        "--symbolic",
        action="store_true",
        help="export for any image size (symbolic shapes) instead of --height/--width",
    )
    p.add_argument(
        "--platforms",
        default="cpu",
        help="comma-separated platforms to export for: cpu, cuda, rocm, tpu (default: cpu)",
    )
    p.set_defaults(func=cli_models.cmd_export_xla)

    p = sub.add_parser("convert", help="PyTorch checkpoint (.pth / .pth.tar) -> model file")
    p.add_argument("input", help="PyTorch state dict, bare or under 'state_dict'")
    p.add_argument("output", help="output model file")
    p.add_argument(
        "--arch",
        choices=("wacnn", "mracnn"),
        default="wacnn",
        help="key names: 'wacnn' (public STF; widths read off the shapes) or 'mracnn'",
    )
    p.add_argument("--config", help="a preset or config file whose model block to build")
    p.add_argument("--dtype", choices=("float32", "float16"), default="float32")
    p.set_defaults(func=cli_models.cmd_convert)
    return parser


def main(argv: list[str] | None = None) -> int:
    started = time.perf_counter()
    args = build_parser().parse_args(argv)
    args.started = started
    _quiet_libraries()
    try:
        if args.command in ("compress", "decompress"):
            paths.single_or_batch(args)
        return args.func(args)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if os.environ.get("MRACNN_DEBUG"):
            raise
        print(f"{PROG}: error: {cli_coding.error_text(e)}", file=sys.stderr)
        sys.stderr.flush()
        if any(t.name.startswith("mracnn-") and t.is_alive() for t in threading.enumerate()):
            sys.stdout.flush()
            os._exit(1)  # a range decoder that never finished: do not wait for it at exit
        return 2 if isinstance(e, UsageError) else 1


if __name__ == "__main__":
    sys.exit(main())

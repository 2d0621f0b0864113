"""The ``mracnn`` command line.

    mracnn compress IN [OUT.mrac] [--model M | --quality Q] [--tile N | --no-tile]
    mracnn decompress IN.mrac [OUT.png] [--model M]
    mracnn info IN.mrac
    mracnn models
    mracnn export --config configs/mracnn.py --seed 0 OUT.mracnn
    mracnn convert IN.pth OUT.mracnn [--arch wacnn | --arch mracnn] [--config C]

Inputs are checked before anything heavy is imported, every error is one line on stderr with
exit status 1 (2 for usage errors), and outputs are written to a temporary file that is renamed
into place only on success, so a failed command leaves nothing behind; they get the permissions
``open()`` would give (``mracnn_jax.fileio``). Without OUT, ``compress`` writes ``IN.mrac`` (IN
with its extension replaced) and ``decompress`` ``IN.png``, beside the input; neither overwrites
its input, a default OUT never replaces an existing file (``decompress x.mrac`` after ``compress
x.png`` would replace the original), and ``compress`` refuses an OUT named like an image or a
model file.

Without ``--model``, ``compress`` uses a model bundled in ``mracnn_jax/assets/models/*.mracnn``
(``mracnn_jax.zoo``; ``mracnn models`` lists them): the one whose quality (metadata ``quality``,
else ``q<N>`` in the file name) equals ``--quality``; without ``--quality`` the only one, the one
with metadata ``default: true``, or the middle quality. ``decompress`` picks the bundled model
whose parameter digest the file names. ``--cache-dir``
(or ``$MRACNN_JAX_CACHE_DIR``) keeps compiled JAX functions on disk between runs. Set
``MRACNN_DEBUG=1`` for tracebacks.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import sys
import threading
import warnings

from mracnn_jax import __version__, fileio, zoo

PROG = "mracnn"
BITSTREAM_SUFFIX = ".mrac"
DECODED_SUFFIX = ".png"


class CliError(Exception):
    """A user-facing error: printed as one line, exit status 1."""


# -------------------------------------------------------------------------------------------------
# Helpers.


def _image_extensions() -> set[str]:
    """Every file extension Pillow reads or writes an image format under (``.png``, ...)."""
    from PIL import Image

    Image.init()
    return set(Image.registered_extensions())


def _same_file(a: str, b: str) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)  # hard links
    except OSError:
        return False


def _with_suffix(path: str, suffix: str) -> str:
    return os.path.splitext(path)[0] + suffix


def _default_output(command: str, input_path: str, suffix: str, other: str) -> str:
    """IN with ``suffix`` for its extension, beside IN: never IN itself nor any existing file (the
    natural round trip ``compress x.png; decompress x.mrac`` must not replace the original)."""
    output = _with_suffix(input_path, suffix)
    if _same_file(output, input_path):
        raise CliError(
            f"the default output {output!r} is the input itself: name the output, e.g. {other!r}"
        )
    if os.path.lexists(output):
        raise CliError(
            f"the default output {output!r} already exists: name the output, e.g. {other!r}, "
            f"or `{PROG} {command} {shlex.quote(input_path)} {shlex.quote(output)}` to replace it"
        )
    return output


def _compress_output(args) -> str:
    """``compress``'s OUT: as given unless named like an image or a model file, else IN.mrac."""
    if args.output is None:
        other = _with_suffix(args.input, ".1" + BITSTREAM_SUFFIX)
        return _default_output("compress", args.input, BITSTREAM_SUFFIX, other)
    output = args.output
    ext = os.path.splitext(output)[1].lower()
    kind = "a model file" if zoo.is_model_name(output) else "an image"
    if zoo.is_model_name(output) or ext in _image_extensions():
        raise CliError(
            f"output {output!r} is named like {kind}, but compress writes an .mrac bitstream: "
            f"name it {_with_suffix(output, BITSTREAM_SUFFIX)!r}, or leave the output out to "
            f"write {_with_suffix(args.input, BITSTREAM_SUFFIX)!r}"
        )
    if _same_file(output, args.input):
        raise CliError(f"output {output!r} is the input itself: name another output file")
    return output


def _decompress_output(args) -> str:
    """``decompress``'s OUT: as given, else IN.png; never the input itself."""
    if args.output is None:
        other = _with_suffix(args.input, ".decoded" + DECODED_SUFFIX)
        return _default_output("decompress", args.input, DECODED_SUFFIX, other)
    if _same_file(args.output, args.input):
        raise CliError(f"output {args.output!r} is the input itself: name another output file")
    return args.output


def _check_output(path: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise CliError(f"output directory {directory!r} does not exist")
    if os.path.isdir(path):
        raise CliError(f"output {path!r} is a directory")


def _image_format(path: str) -> str:
    from PIL import Image

    Image.init()
    ext = os.path.splitext(path)[1].lower()
    fmt = Image.registered_extensions().get(ext)
    if fmt is None or fmt not in Image.SAVE:
        raise CliError(f"cannot write an image named {path!r}: use .png, .bmp, .tif, .webp or .jpg")
    return fmt


def _read_bytes(path: str, what: str) -> bytes:
    if not os.path.exists(path):
        raise CliError(f"no such file: {path!r}")
    if os.path.isdir(path):
        raise CliError(f"{path!r} is a directory, not {what}")
    with open(path, "rb") as f:
        return f.read()


def _quiet_libraries() -> None:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import logging

    for name in ("jax._src.xla_bridge", "absl", "tensorflow"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _cache(args) -> None:
    path = getattr(args, "cache_dir", None) or os.environ.get("MRACNN_JAX_CACHE_DIR")
    if path:
        from mracnn_jax import codec

        codec.enable_compilation_cache(path)


def _model_for_compress(args) -> str:
    """``--model``, else the bundled model of ``--quality``, else the default one."""
    if args.model:
        return args.model
    entry = zoo.default() if args.quality is None else zoo.by_quality(args.quality)
    return str(entry.path)


def _quality_help() -> str:
    """``--quality``'s help: each bundled model's quality with the lambda in its metadata."""
    text = "choose a bundled model by its quality"
    try:
        entries = sorted(
            (e for e in zoo.bundled() if e.quality is not None),
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
        f"with, a larger one spending more bits for a better image"
    )


def _load_model(path: str, expect=None):
    """Loads a model file; with ``expect`` (a Bitstream) first checks from the file's header that
    it is the model that wrote it (``zoo.identity_error``, as the codec does after loading)."""
    from mracnn_jax import model_file

    if not os.path.exists(path):
        raise CliError(f"model file {path!r} does not exist")
    if expect is not None:
        header = model_file.read_header(path)
        name = (header.get("model_config") or {}).get("name")
        source = f"the model file {path!r}"
        message = zoo.identity_error(expect, name, header["params_digest"], source)
        if message is not None:
            raise CliError(message)
    from mracnn_jax import codec  # JAX is imported only now

    return codec.LoadedModel.load(path)


def _size(num_bytes: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if num_bytes >= scale:
            return f"{num_bytes / scale:.1f} {unit}"
    return f"{num_bytes} B"


# -------------------------------------------------------------------------------------------------
# Commands.


def cmd_compress(args) -> int:
    if not os.path.exists(args.input):
        raise CliError(f"no such file: {args.input!r}")
    args.output = _compress_output(args)
    from mracnn_jax import codec, images

    _check_output(args.output)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rgb, mode = images.read_image(args.input)
    for w in caught:
        print(f"{PROG}: warning: {w.message}", file=sys.stderr)
    h, w = rgb.shape[:2]
    tile = _choose_tile(args, h, w)
    model_path = _model_for_compress(args)
    _cache(args)
    model = _load_model(model_path)
    image = rgb[:, :, 0] if mode == "L" else rgb
    options = {"estimate_bits": False, "reconstruct": False}  # the file is all compress writes
    if tile is None:
        result = codec.compress_with_info(image, model, **options)
    else:
        result = codec.compress_with_info(
            image, model, tile=tile, keep_latents=False, progress=sys.stderr.isatty(), **options
        )
    fileio.write_atomic(args.output, lambda f: f.write(result.data))
    tiles = ""
    if result.tiling is not None:
        tiles = f", {result.tiling['rows']}x{result.tiling['cols']} tiles of {tile}"
    print(
        f"{args.output}: {len(result.data)} bytes, {8 * len(result.data) / (h * w):.4f} bpp "
        f"({h}x{w} {mode}, model {model.name}{tiles})"
    )
    return 0


def _choose_tile(args, height: int, width: int):
    """The tile size for ``compress``: ``--tile``, none with ``--no-tile``, else automatic (and
    said on stderr)."""
    from mracnn_jax import codec

    if args.tile is not None:
        codec.resolve_tiling(args.tile)  # a clear error for a size the format does not hold
        return args.tile
    if args.no_tile:
        return None
    tile = codec.auto_tile(height, width)
    if tile is not None:
        print(
            f"{PROG}: {height}x{width} image is above {codec.AUTO_TILE_PIXELS} pixels: coding "
            f"{tile}x{tile} tiles one after another (--tile N to choose, --no-tile to refuse)",
            file=sys.stderr,
        )
    return tile


def cmd_decompress(args) -> int:
    from mracnn_jax.coding import container

    data = _read_bytes(args.input, "an .mrac file")
    bs = container.unpack(data)
    args.output = _decompress_output(args)
    _check_output(args.output)
    fmt = _image_format(args.output)
    if args.model:
        model_path = args.model
    else:
        entry = zoo.by_digest(bs.params_digest)
        if entry is None:
            raise zoo.NoModelError(zoo.no_model_message(bitstream=bs))
        model_path = str(entry.path)
    _cache(args)
    model = _load_model(model_path, expect=bs)
    from PIL import Image

    from mracnn_jax import codec

    image = codec.decompress_with_info(
        bs, model, keep_latents=False, progress=sys.stderr.isatty()
    ).image
    pil = Image.fromarray(image, "L" if image.ndim == 2 else "RGB")
    fileio.write_atomic(args.output, lambda f: pil.save(f, format=fmt))
    tiles = "" if bs.tiling is None else f", {len(bs.tiles)} tiles of {bs.tiling.tile}"
    print(f"{args.output}: {bs.height}x{bs.width} {bs.colour_mode}{tiles}")
    return 0


def cmd_info(args) -> int:
    from mracnn_jax.coding import container

    data = _read_bytes(args.input, "an .mrac file")
    bs = container.unpack(data)
    info = {"file": args.input, **container.describe(bs, len(data))}
    print(json.dumps(info, indent=2))
    return 0


def cmd_models(args) -> int:
    """The bundled models as a table, by quality."""
    entries = zoo.bundled()
    if not entries:
        raise zoo.NoModelError(zoo.no_model_message())
    try:
        default = zoo.default().path
    except zoo.NoModelError:
        default = None
    rows = [("quality", "lambda", "size", "params", "name", "file")]
    for e in sorted(entries, key=lambda e: (e.quality is None, e.quality or 0, e.path.name)):
        quality = "-" if e.quality is None else str(e.quality)
        rows.append(
            (
                quality + (" *" if e.path == default else ""),
                "-" if e.lmbda is None else f"{e.lmbda:g}",
                _size(e.size),
                e.params_digest[:16],
                e.name or "-",
                e.path.name,
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    print(f"* the default (compress without --model and --quality); folder {zoo.BUNDLED_DIR}")
    return 0


def cmd_export(args) -> int:
    from mracnn_jax.config_files import load_config

    _check_output(args.output)
    config = load_config(args.config)
    from mracnn_jax import codec  # JAX is imported only now

    model = codec.LoadedModel.from_config(config, seed=args.seed)
    digest = model.save(
        args.output, {"source": "random initialisation", "config": args.config, "seed": args.seed}
    )
    print(f"{args.output}: model {model.name}, params {digest}")
    return 0


def cmd_convert(args) -> int:
    """PyTorch checkpoint (STF/CompressAI key names, see ``mracnn_jax.convert``) -> model file."""
    from mracnn_jax import convert

    if not os.path.exists(args.input):
        raise CliError(f"no such checkpoint: {args.input!r}")
    _check_output(args.output)
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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="MRACNN learned image codec (JAX).")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("compress", help="image -> .mrac")
    p.add_argument("input", help="PNG, JPEG, TIFF, BMP or WebP image")
    p.add_argument(
        "output",
        nargs="?",
        help="output .mrac file (default: the input's name with .mrac for its extension, if no "
        "such file exists)",
    )
    p.add_argument("--model", help="model file (default: the bundled model)")
    p.add_argument("--quality", type=int, metavar="Q", help=_quality_help())
    p.add_argument("--cache-dir", help="persistent JAX compilation cache directory")
    from mracnn_jax.coding import tiling as tiles  # pure Python: no JAX imported here

    group = p.add_mutually_exclusive_group()
    group.add_argument(
        "--tile",
        type=int,
        metavar="N",
        help=f"code N x N tiles one after another (N a multiple of 64; default: tiles of "
        f"{tiles.DEFAULT_TILE} for images of more than {tiles.AUTO_TILE_PIXELS} pixels)",
    )
    group.add_argument(
        "--no-tile", action="store_true", help="never tile (memory grows with the image size)"
    )
    p.set_defaults(func=cmd_compress)

    p = sub.add_parser("decompress", help=".mrac -> image")
    p.add_argument("input", help=".mrac file")
    p.add_argument(
        "output",
        nargs="?",
        help="output image, .png, .bmp, .tif, .webp or .jpg (default: the input's name with .png "
        "for its extension, if no such file exists)",
    )
    p.add_argument("--model", help="model file (default: the bundled model that wrote the file)")
    p.add_argument("--cache-dir", help="persistent JAX compilation cache directory")
    p.set_defaults(func=cmd_decompress)

    p = sub.add_parser("info", help="print a .mrac file's header as JSON")
    p.add_argument("input", help=".mrac file")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser(
        "models", help="list the bundled models: quality, lambda, size, params digest, name"
    )
    p.set_defaults(func=cmd_models)

    p = sub.add_parser("export", help="write a randomly initialised model file")
    p.add_argument(
        "--config",
        required=True,
        help="Python config file with get_config(), e.g. configs/small.py",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("output", help="output model file")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("convert", help="PyTorch checkpoint (.pth / .pth.tar) -> model file")
    p.add_argument("input", help="PyTorch state dict, bare or under 'state_dict'")
    p.add_argument("output", help="output model file")
    p.add_argument(
        "--arch",
        choices=("wacnn", "mracnn"),
        default="wacnn",
        help="key names: 'wacnn' (public STF; widths read off the shapes) or 'mracnn'",
    )
    p.add_argument("--config", help="configs/*.py file whose model block to build")
    p.add_argument("--dtype", choices=("float32", "float16"), default="float32")
    p.set_defaults(func=cmd_convert)
    return parser


def _one_line(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    if isinstance(e, KeyError):
        text = f"missing key {text}"
    return " ".join(text.split())


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _quiet_libraries()
    try:
        return args.func(args)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if os.environ.get("MRACNN_DEBUG"):
            raise
        known = (CliError, zoo.NoModelError, ValueError, OSError)
        prefix = "" if isinstance(e, known) else f"{type(e).__name__}: "
        print(f"{PROG}: error: {prefix}{_one_line(e)}", file=sys.stderr)
        sys.stderr.flush()
        if any(t.name.startswith("mracnn-") and t.is_alive() for t in threading.enumerate()):
            sys.stdout.flush()
            os._exit(1)  # a range decoder that never finished: do not wait for it at exit
        return 1


if __name__ == "__main__":
    sys.exit(main())

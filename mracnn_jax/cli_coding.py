"""The ``mracnn`` commands that code images and read coded files (``mracnn_jax.cli`` holds the
parser and ``main``):

    mracnn compress IN [OUT.mrac] [--model M | --quality Q] [--tile N | --no-tile] [--bits B]
                    [--refine N]
    mracnn compress IN... -o OUTDIR [options]        images and folders -> OUTDIR/<stem>.mrac
    mracnn decompress IN.mrac [OUT.png] [--model M] [--tile N | --no-tile]
    mracnn decompress IN.mrac... -o OUTDIR [options] files and folders -> OUTDIR/<stem>.png
    mracnn info IN.mrac

Without OUT, ``compress`` writes ``IN.mrac`` (IN with its extension replaced) and ``decompress``
``IN.png``, beside the input; neither overwrites its input, a default OUT never replaces an
existing file (``decompress x.mrac`` after ``compress x.png`` would replace the original), and
``compress`` refuses an OUT named like an image or a model file (``mracnn_jax.cli_paths`` decides
these names).

Without ``--model``, ``compress`` uses a model bundled in ``mracnn_jax/assets/models/*.mracnn``
(``mracnn_jax.zoo``; ``mracnn models`` lists them): the one whose quality (metadata ``quality``,
else ``q<N>`` in the file name) equals ``--quality``; without ``--quality`` the only one, the one
with metadata ``default: true``, or the middle quality. A grayscale image (``L``, ``I;16``) gets
the bundled grayscale model of that quality where one is bundled, the colour one otherwise
(``zoo.by_quality`` / ``zoo.default`` with ``channels=1``). ``decompress`` picks the bundled
model whose parameter digest the file names.

Batch form (``-o OUTDIR``, created if missing): every input image (a folder stands for the images
``images.list_images`` finds in it; for ``decompress``, its ``*.mrac`` files) is coded in this one
process, the model loaded once (``decompress``: each model the files name, once), so the
compiled network is reused for every image of a padded shape already seen. One line per file as
in the single form, then a summary line (files, bytes, mean bpp, seconds); a file that fails gets
its one-line error and the others go on; the exit status is 1 if any failed. Outputs are
``OUTDIR/<stem>.mrac`` (``.png``); an existing file there is not replaced without
``--overwrite``, and two inputs of one stem are refused. Several inputs need ``-o``; ``-o`` takes
no OUT.

Large images: above 2²¹ pixels (or with ``--tile N``), g_a and g_s run in tiles with halos so
that memory follows the tile size; the latent is coded as one, so the file is the same and any
file decodes with any tile size (``mracnn_jax.codec.tiles``). ``--no-tile`` computes in one piece.

Compiled JAX functions are kept on disk between runs (JAX's persistent compilation cache), by
default in ``$XDG_CACHE_HOME/mracnn-jax/xla`` (``~/.cache/mracnn-jax/xla``): ``--cache-dir DIR``
or ``$MRACNN_JAX_CACHE_DIR`` chooses another folder, ``--no-cache`` or
``MRACNN_JAX_CACHE_DIR=off`` turns it off (``compilation_cache_dir``).

As in ``cli``: inputs are checked before anything heavy is imported (JAX only inside the command
functions, after the checks), every refusal is a one-line ``CliError``, and outputs are written
atomically (``mracnn_jax.fileio``).
"""

from __future__ import annotations

import json
import os
import sys
import time
import warnings

from mracnn_jax import cli_paths as paths
from mracnn_jax import fileio, zoo
from mracnn_jax.compilation_cache import (  # the folder rule, shared with training
    CACHE_ENV,
    compilation_cache_dir,
)

PROG = paths.PROG
CliError, UsageError = paths.CliError, paths.UsageError


# -------------------------------------------------------------------------------------------------
# Helpers.


def _cache(args) -> None:
    """Turns JAX's persistent compilation cache on (``compilation_cache_dir``), once per command
    and before anything is compiled. A chosen folder that cannot be made is an error; the default
    one is a warning, and the command runs without the cache."""
    if getattr(args, "cache_checked", False):
        return
    args.cache_checked = True
    chosen = getattr(args, "cache_dir", None)
    path = compilation_cache_dir(chosen, getattr(args, "no_cache", False))
    if path is None:
        return
    from mracnn_jax import codec

    try:
        codec.enable_compilation_cache(path)
    except OSError as e:
        if chosen or os.environ.get(CACHE_ENV, "").strip():
            raise CliError(f"cannot use {path!r} for the compilation cache: {_one_line(e)}") from e
        print(
            f"{PROG}: warning: no compilation cache (cannot use {path!r}: "
            f"{e.strerror or _one_line(e)}); --no-cache or {CACHE_ENV}=off silences this",
            file=sys.stderr,
        )


def _model_for_compress(args, mode: str = "RGB") -> str:
    """``--model``, else the bundled model of ``--quality``, else the default one; for an image
    of colour ``mode`` ``'L'``, a grayscale model where one is bundled (``zoo.default``)."""
    if args.model:
        return args.model
    channels = 1 if mode == "L" else 3
    if args.quality is None:
        return str(zoo.default(channels).path)
    return str(zoo.by_quality(args.quality, channels).path)


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


# -------------------------------------------------------------------------------------------------
# Commands.


def cmd_compress(args) -> int:
    if args.output_dir is not None:
        return _batch(args, _compress_batch)
    if not os.path.exists(args.input):
        raise CliError(f"no such file: {args.input!r}")
    if os.path.isdir(args.input):
        raise UsageError(paths.folder_needs_o("compress", args.input))
    args.output = paths.compress_output(args)
    paths.check_output(args.output)

    def model(mode: str):
        model_path = _model_for_compress(args, mode)
        _cache(args)
        return _load_model(model_path)

    _compress_file(args, args.input, args.output, model)
    return 0


def _compress_file(args, src: str, output: str, get_model, label: str = "") -> tuple[int, int]:
    """Codes the image ``src`` into ``output`` with ``get_model(mode)`` and prints its line; returns
    (bytes, pixels). ``label`` prefixes its warnings (the batch form names the file)."""
    from mracnn_jax import codec, images

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        rgb, mode = images.read_image(src, high_depth=True)
    for w in caught:
        print(f"{PROG}: warning: {label}{w.message}", file=sys.stderr)
    h, w = rgb.shape[:2]
    model = get_model(mode)
    image = rgb[:, :, 0] if mode == "L" else rgb
    result = codec.compress_with_info(
        image, model, tile=_tile(args), bits=args.bits, progress=sys.stderr.isatty(),
        estimate_bits=False, reconstruct=False, keep_latents=False,  # the file is all it writes
        refine_steps=args.refine,
    )  # fmt: skip
    fileio.write_atomic(output, lambda f: f.write(result.data))
    depth = "" if rgb.dtype.itemsize == 1 else f" {args.bits or 16}-bit"
    print(
        f"{output}: {len(result.data)} bytes, {8 * len(result.data) / (h * w):.4f} bpp "
        f"({h}x{w} {mode}{depth}, model {model.name}{_tiles_note(result.tiling)}"
        f"{_refinement_note(result.refinement)})"
    )
    return len(result.data), h * w


def _tile(args):
    """The tiles the transforms run in: ``--tile N``, one tile with ``--no-tile``, else
    ``"auto"`` (``codec.auto_tile``). Raises ``CodecError`` for a size the codec cannot use."""
    from mracnn_jax.codec import tiles

    if args.tile is not None:
        try:
            tiles.check_tiling(args.tile, tiles.DEFAULT_HALO)
        except ValueError as e:
            raise CliError(str(e)) from None
        return args.tile
    return None if args.no_tile else "auto"


def _refinement_note(refinement) -> str:
    if refinement is None:
        return ""
    return (
        f", latent refined in {len(refinement.losses) - 1} steps: rate-distortion loss "
        f"{-100 * refinement.gain:+.2f} %, {refinement.seconds:.1f} s"
    )


def _tiles_note(tiling: dict | None) -> str:
    if tiling is None:
        return ""
    return f", computed in {tiling['rows']}x{tiling['cols']} tiles of {tiling['tile']}"


def cmd_decompress(args) -> int:
    if args.output_dir is not None:
        return _batch(args, _decompress_batch)
    from mracnn_jax.coding import container

    if os.path.isdir(args.input):
        raise UsageError(paths.folder_needs_o("decompress", args.input))
    data = paths.read_bytes(args.input, "an .mrac file")
    bs = container.unpack(data)
    args.output = paths.decompress_output(args)
    paths.check_output(args.output)
    fmt = paths.image_format(args.output)
    tile = _tile(args)
    model = _model_for_bitstream(args, bs, {})
    _decode_to_file(bs, model, args.output, fmt, tile)
    return 0


def _model_for_bitstream(args, bs, loaded: dict):
    """The model that decodes ``bs``: ``--model``, else the bundled model whose digest the file
    names; each model file is loaded once per command (``loaded``: path -> model, or the error
    its loading raised)."""
    if args.model:
        model_path = args.model
    else:
        entry = zoo.by_digest(bs.params_digest)
        if entry is None:
            raise zoo.NoModelError(zoo.no_model_message(bitstream=bs))
        model_path = str(entry.path)
    if model_path not in loaded:
        _cache(args)
        try:
            loaded[model_path] = _load_model(model_path, expect=bs)
        except CliError:
            raise  # this file's mismatch (or a missing model file): the next file checks anew
        except Exception as e:
            loaded[model_path] = e  # a model file that does not load: said once per file
            raise
    model = loaded[model_path]
    if isinstance(model, BaseException):
        raise model
    return model  # decompress_with_info checks that it wrote ``bs``


def _decode_to_file(bs, model, output: str, fmt: str, tile) -> None:
    """Decodes ``bs`` with ``model`` into the image file ``output`` (format ``fmt``), g_s in
    ``tile`` (``_tile``), and prints its line."""
    from PIL import Image

    from mracnn_jax import codec, images

    result = codec.decompress_with_info(
        bs, model, tile=tile, keep_latents=False, progress=sys.stderr.isatty()
    )
    image = result.image
    deep = image.dtype.itemsize == 2
    if deep and (fmt != "PNG" if image.ndim == 3 else fmt not in ("PNG", "TIFF")):
        kind = "colour image is written as PNG" if image.ndim == 3 else "image as PNG or TIFF"
        raise CliError(f"a {bs.bits}-bit {kind} only, not {fmt}")
    if deep and image.ndim == 3:  # Pillow writes no 16-bit colour
        fileio.write_atomic(output, lambda f: f.write(images.png16(image)))
    else:
        pil = Image.fromarray(image, "RGB" if image.ndim == 3 else None)
        fileio.write_atomic(output, lambda f: pil.save(f, format=fmt))
    depth = "" if bs.bits == 8 else f" {bs.bits}-bit"
    print(f"{output}: {bs.height}x{bs.width} {bs.colour_mode}{depth}{_tiles_note(result.tiling)}")


# -------------------------------------------------------------------------------------------------
# The batch form: IN... -o OUTDIR.


def error_text(e: BaseException) -> str:
    """The one-line text of an error: its message, with its type for unexpected ones."""
    known = (CliError, zoo.NoModelError, ValueError, OSError)
    prefix = "" if isinstance(e, known) else f"{type(e).__name__}: "
    return prefix + _one_line(e)


def _batch(args, run) -> int:
    """Runs ``run(args, jobs, code)`` over the batch's jobs; ``code(fn, src, output)`` calls
    ``fn(src, output)`` for one file and turns its failure into that file's one-line error.
    Prints the summary line; exit status 1 if any file failed."""
    jobs = paths.batch_jobs(args)
    done: list[tuple[int, int]] = []  # (bytes, pixels) of each file coded

    def code(fn, src: str, output: str) -> None:
        try:
            if not os.path.lexists(src):
                raise CliError(f"no such file: {src!r}")
            paths.check_batch_output(src, output, args.overwrite)
            done.append(fn(src, output))
            sys.stdout.flush()  # each file's line as it is done, also into a pipe
        except Exception as e:
            if os.environ.get("MRACNN_DEBUG"):
                raise
            print(f"{PROG}: error: {src}: {error_text(e)}", file=sys.stderr)
            sys.stderr.flush()

    run(args, jobs, code)
    failed = len(jobs) - len(done)
    verb = "compressed" if args.command == "compress" else "decompressed"
    files = f"{len(done)} file{'' if len(done) == 1 else 's'} {verb}"
    if failed:
        files = f"{len(done)} of {len(jobs)} files {verb} ({failed} failed)"
    total = sum(b for b, _ in done)
    bpp = f"{sum(8 * b / p for b, p in done) / len(done):.4f}" if done else "-"
    seconds = time.perf_counter() - getattr(args, "started", time.perf_counter())
    print(f"{PROG}: {files}: {total} bytes, mean {bpp} bpp, {seconds:.1f} s")
    return 1 if failed else 0


def _compress_batch(args, jobs, code) -> None:
    _model_for_compress(args)  # a model for colour images: its errors end the command
    _tile(args)  # a bad --tile ends the command before anything is written
    paths.make_output_dir(args.output_dir)
    _cache(args)
    loaded: dict = {}  # path -> model, each loaded once

    def model(mode: str):
        path = _model_for_compress(args, mode)
        if path not in loaded:
            loaded[path] = _load_model(path)
        return loaded[path]

    def one(src: str, output: str) -> tuple[int, int]:
        return _compress_file(args, src, output, model, f"{src}: ")

    for src, output in jobs:
        code(one, src, output)


def _decompress_batch(args, jobs, code) -> None:
    if args.model and not os.path.exists(args.model):
        raise CliError(f"model file {args.model!r} does not exist")
    tile = _tile(args)
    paths.make_output_dir(args.output_dir)
    _cache(args)
    loaded: dict = {}

    def one(src: str, output: str) -> tuple[int, int]:
        from mracnn_jax.coding import container

        data = paths.read_bytes(src, "an .mrac file")
        bs = container.unpack(data)
        fmt = paths.image_format(output)
        _decode_to_file(bs, _model_for_bitstream(args, bs, loaded), output, fmt, tile)
        return len(data), bs.height * bs.width

    for src, output in jobs:
        code(one, src, output)


def cmd_info(args) -> int:
    from mracnn_jax.coding import container

    data = paths.read_bytes(args.input, "an .mrac file")
    bs = container.unpack(data)
    info = {"file": args.input, **container.describe(bs, len(data))}
    entry = zoo.by_digest(bs.params_digest)
    if entry is not None:  # the bundled model that decodes it
        info["model"]["bundled"] = {
            "file": entry.path.name, "quality": entry.quality,
            "images": "grayscale" if entry.channels == 1 else "colour",
        }  # fmt: skip
    print(json.dumps(info, indent=2))
    return 0


def _one_line(e: BaseException) -> str:
    text = str(e) or type(e).__name__
    if isinstance(e, KeyError):
        text = f"missing key {text}"
    return " ".join(text.split())

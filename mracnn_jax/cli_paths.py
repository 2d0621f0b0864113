"""Which files an ``mracnn`` command reads and writes: output names, defaults and the batch form.

``compress IN [OUT]`` writes OUT or, by default, ``IN.mrac`` beside IN; ``decompress IN.mrac
[OUT]`` writes OUT or ``IN.png``. A default output is never the input itself and never replaces
an existing file; ``compress`` refuses an OUT named like an image or a model file. In the batch
form (``IN... -o OUTDIR``) every input file, and every image (``images.list_images``) or ``*.mrac``
file of an input folder, gives ``OUTDIR/<stem>.mrac`` / ``.png``; an input named twice is coded
once, two inputs of one stem are refused, and an existing output is kept unless ``--overwrite``.
Every refusal is a ``CliError`` (``UsageError`` for arguments that could mean either form) with a
one-line message, which ``mracnn_jax.cli`` prints.
"""

from __future__ import annotations

import os
import shlex

from mracnn_jax import images, zoo

PROG = "mracnn"
BITSTREAM_SUFFIX = ".mrac"
DECODED_SUFFIX = ".png"


class CliError(Exception):
    """A user-facing error: printed as one line, exit status 1."""


class UsageError(CliError):
    """Arguments that do not say what to do (e.g. several inputs without -o): one line, exit 2."""


def image_extensions() -> set[str]:
    """Every file extension Pillow reads or writes an image format under (``.png``, ...)."""
    from PIL import Image

    Image.init()
    return set(Image.registered_extensions())


def same_file(a: str, b: str) -> bool:
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)  # hard links
    except OSError:
        return False


def with_suffix(path: str, suffix: str) -> str:
    return os.path.splitext(path)[0] + suffix


def default_output(
    command: str, input_path: str, suffix: str, other: str, overwrite: bool = False
) -> str:
    """IN with ``suffix`` for its extension, beside IN: never IN itself nor, unless
    ``overwrite``, any existing file (the natural round trip ``compress x.png; decompress x.mrac``
    must not replace the original)."""
    output = with_suffix(input_path, suffix)
    if same_file(output, input_path):
        raise CliError(
            f"the default output {output!r} is the input itself: name the output, e.g. {other!r}"
        )
    if os.path.lexists(output) and not overwrite:
        raise CliError(
            f"the default output {output!r} already exists: name the output, e.g. {other!r}, "
            f"or `{PROG} {command} {shlex.quote(input_path)} {shlex.quote(output)}` to replace it"
        )
    return output


def compress_output(args) -> str:
    """``compress``'s OUT: as given unless named like an image or a model file, else IN.mrac."""
    if args.output is None:
        other = with_suffix(args.input, ".1" + BITSTREAM_SUFFIX)
        return default_output("compress", args.input, BITSTREAM_SUFFIX, other, args.overwrite)
    output = args.output
    ext = os.path.splitext(output)[1].lower()
    kind = "a model file" if zoo.is_model_name(output) else "an image"
    if zoo.is_model_name(output) or ext in image_extensions():
        raise CliError(
            f"output {output!r} is named like {kind}, but compress writes an .mrac bitstream: "
            f"name it {with_suffix(output, BITSTREAM_SUFFIX)!r}, or leave the output out to "
            f"write {with_suffix(args.input, BITSTREAM_SUFFIX)!r}"
        )
    if same_file(output, args.input):
        raise CliError(f"output {output!r} is the input itself: name another output file")
    return output


def decompress_output(args) -> str:
    """``decompress``'s OUT: as given, else IN.png; never the input itself."""
    if args.output is None:
        other = with_suffix(args.input, ".decoded" + DECODED_SUFFIX)
        return default_output("decompress", args.input, DECODED_SUFFIX, other, args.overwrite)
    if same_file(args.output, args.input):
        raise CliError(f"output {args.output!r} is the input itself: name another output file")
    return args.output


def check_output(path: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise CliError(f"output directory {directory!r} does not exist")
    if os.path.isdir(path):
        raise CliError(f"output {path!r} is a directory")


def image_format(path: str) -> str:
    from PIL import Image

    Image.init()
    ext = os.path.splitext(path)[1].lower()
    fmt = Image.registered_extensions().get(ext)
    if fmt is None or fmt not in Image.SAVE:
        raise CliError(f"cannot write an image named {path!r}: use .png, .bmp, .tif, .webp or .jpg")
    return fmt


def read_bytes(path: str, what: str) -> bytes:
    if not os.path.exists(path):
        raise CliError(f"no such file: {path!r}")
    if os.path.isdir(path):
        raise CliError(f"{path!r} is a directory, not {what}")
    with open(path, "rb") as f:
        return f.read()


def folder_needs_o(command: str, folder: str) -> str:
    what = "images" if command == "compress" else ".mrac files"
    return (
        f"{folder!r} is a folder: {command} its {what} into a folder with "
        f"`{PROG} {command} {shlex.quote(folder)} -o OUTDIR`"
    )


def single_or_batch(args) -> None:
    """Reads the positional paths: ``IN [OUT]`` without ``-o`` (``args.input``, ``args.output``),
    only inputs with it; refuses what could mean either (UsageError)."""
    command, paths = args.command, args.paths
    outputs = "OUT.mrac" if command == "compress" else "OUT.png"
    forms = f"`{PROG} {command} IN [{outputs}]` or `{PROG} {command} IN... -o OUTDIR`"
    if args.output_dir is None:
        if len(paths) > 2:
            raise UsageError(
                f"{len(paths)} paths given without -o: write several files into a folder with "
                f"`{PROG} {command} IN... -o OUTDIR` (without -o, {command} takes one IN and an "
                "optional OUT)"
            )
        args.input, args.output = paths[0], paths[1] if len(paths) == 2 else None
        return
    if command == "compress":
        kind = "an .mrac bitstream"

        def named_like_output(path: str) -> bool:
            return path.lower().endswith(BITSTREAM_SUFFIX)
    else:
        kind = "an image"
        extensions = image_extensions()

        def named_like_output(path: str) -> bool:
            return os.path.splitext(path)[1].lower() in extensions

    for path in paths:
        if named_like_output(path) and not os.path.isdir(path):
            raise UsageError(
                f"-o OUTDIR takes only inputs, and {path!r} is named like an output "
                f"({kind}): use {forms}"
            )
    if named_like_output(args.output_dir) and not os.path.isdir(args.output_dir):
        raise UsageError(
            f"-o names the folder the outputs go to, and {args.output_dir!r} is named like "
            f"{kind}: use {forms}"
        )


def bitstreams_in(folder: str) -> list[str]:
    """The ``*.mrac`` files in ``folder`` (any case, not hidden), sorted."""
    with os.scandir(folder) as entries:
        names = [
            e.path
            for e in entries
            if e.name.lower().endswith(BITSTREAM_SUFFIX)
            and not e.name.startswith(".")
            and e.is_file()
        ]
    return sorted(names)


def batch_jobs(args) -> list[tuple[str, str]]:
    """(input, OUTDIR/<stem>.mrac|.png) for every input file and every file of an input folder,
    in order; an input named twice is coded once; two inputs of one stem are refused."""
    compress = args.command == "compress"
    suffix = BITSTREAM_SUFFIX if compress else DECODED_SUFFIX
    inputs: list[str] = []
    for path in args.paths:
        if not os.path.isdir(path):
            inputs.append(path)
            continue
        found = [str(p) for p in images.list_images(path)] if compress else bitstreams_in(path)
        if not found:
            what = (
                f"image ({', '.join(images.SUFFIXES)})" if compress else f"*{BITSTREAM_SUFFIX} file"
            )
            raise CliError(f"folder {path!r} holds no {what}")
        inputs += found
    jobs, seen, writers = [], set(), {}
    for src in inputs:
        key = os.path.realpath(src)
        if key in seen:
            continue
        seen.add(key)
        stem = os.path.splitext(os.path.basename(os.path.normpath(src)))[0]
        output = os.path.join(args.output_dir, stem + suffix)
        if output in writers:
            raise CliError(
                f"{writers[output]!r} and {src!r} would both be written to {output!r}: "
                "code them in separate runs (or rename one)"
            )
        writers[output] = src
        jobs.append((src, output))
    return jobs


def check_batch_output(src: str, output: str, overwrite: bool) -> None:
    if same_file(output, src):
        raise CliError(f"the output {output!r} is the input itself")
    if os.path.isdir(output):
        raise CliError(f"the output {output!r} is a directory")
    if os.path.lexists(output) and not overwrite:
        raise CliError(f"{output!r} already exists (--overwrite replaces it)")


def make_output_dir(path: str) -> None:
    if os.path.exists(path) and not os.path.isdir(path):
        raise CliError(f"-o {path!r} is a file, not a folder")
    os.makedirs(path, exist_ok=True)


def human_size(num_bytes: int) -> str:
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if num_bytes >= scale:
            return f"{num_bytes / scale:.1f} {unit}"
    return f"{num_bytes} B"

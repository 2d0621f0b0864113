"""Evaluate MRACNN models (and classic anchors) on a folder of images: real files, RD curves,
BD-rates, plots.

    mracnn evaluate --model q1.mracnn q2.mracnn q3.mracnn --data ../shared/data/kodak \\
        --out workdirs/eval_kodak --anchors jpeg,webp,avif,jpeg2000 --anchor-for-bd jpeg

(``python evaluate.py ...`` in a checkout is the same command.)
Several models are several points of one curve when they share a name (the model config's
name, plus the training loss if recorded), or of one curve called --name. --model also takes
folders (every *.mracnn inside). Without --model the models bundled in
mracnn_jax/assets/models/ for the images are used (the grayscale ones when every image is
grayscale and grayscale models are bundled, else the colour ones); without --data the sample images in
mracnn_jax/assets/samples/. --out receives <curve>.json (CompressAI eval_model layout),
<curve>.csv (per image), summary.md (also printed), rd.png and bitstreams/. An interrupted run
resumes: the same command again reuses every model result already measured in --out (--fresh
redoes them). --compare adds other codecs' curves (CompressAI results JSON files, or the shipped
published Kodak curves by name: vtm, bpg444, wacnn, mracnn-paper-table3) to rd.png and to the
BD-rate table; --anchor-for-bd may name one of them:

    mracnn evaluate --data ../shared/data/kodak --compare vtm bpg444 --anchor-for-bd vtm

The published Kodak points of WACNN and of the MRACNN paper are shown by default only when
--data holds Kodak's 24 images (kodim01..kodim24, 768x512 or 512x768): docs/evaluation.md.
Every error is one line on stderr with exit status 1. What is measured:
mracnn_jax/evaluation/runner.py.

The command uses argparse rather than absl (as train.py does) because --model takes several
values after one flag.
"""

from __future__ import annotations

import argparse
import os
import sys

PROG = "evaluate.py"  # the name in messages; `mracnn evaluate` passes its own
DESCRIPTION = " ".join((__doc__ or "").split("\n\n")[0].split())  # the docstring's first paragraph


def _codec_list(text: str) -> list[str]:
    if text.strip().lower() in ("", "none"):
        return []
    from mracnn_jax.evaluation.anchors import CODECS

    if text.strip().lower() == "all":
        return list(CODECS)
    names = [t.strip().lower() for t in text.split(",") if t.strip()]
    for n in names:
        if n not in CODECS:
            choices = ",".join(CODECS)
            raise argparse.ArgumentTypeError(f"unknown anchor {n!r}; choose from {choices}")
    return names


def whole_number(text: str) -> int:
    """argparse type: an integer >= 0 (``--refine N`` here and in ``mracnn compress``)."""
    try:
        n = int(text)
    except ValueError:
        n = -1
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be a whole number >= 0, got {text!r}")
    return n


def build_parser(prog: str = PROG) -> argparse.ArgumentParser:
    from mracnn_jax.evaluation.compare import shipped_names
    from mracnn_jax.evaluation.inputs import SAMPLES_DIR

    p = argparse.ArgumentParser(prog=prog, description=DESCRIPTION)
    p.add_argument(
        "--model",
        nargs="+",
        metavar="M",
        help="model files or folders of them (default: the bundled models for the images: "
        "grayscale ones for grayscale images)",
    )
    p.add_argument("--name", help="put every --model on one curve with this name")
    p.add_argument(
        "--data", default=str(SAMPLES_DIR), help="folder of images (default: %(default)s)"
    )
    p.add_argument(
        "--out", default="workdirs/evaluate", help="output folder (default: %(default)s)"
    )
    p.add_argument(
        "--anchors",
        type=_codec_list,
        default=[],
        metavar="LIST",
        help="Pillow anchors, comma-separated from jpeg,webp,avif,jpeg2000, or 'all'",
    )
    p.add_argument(
        "--anchor-for-bd",
        default="jpeg",
        metavar="CURVE",
        help="curve the BD-rates are taken against: an anchor (run if not in --anchors), a "
        "model curve's name, or a --compare curve (its name, or the shipped name), in any case; "
        "'none' for no BD-rates (default: %(default)s)",
    )
    p.add_argument(
        "--compare",
        nargs="+",
        default=[],
        metavar="CURVE",
        help="reference curves to draw and BD-rate: CompressAI results JSON files, or shipped "
        f"published Kodak curves by name ({', '.join(shipped_names())})",
    )
    p.add_argument(
        "--grayscale",
        action="store_true",
        help="evaluate the images' grayscale versions (Pillow's convert('L'), ITU-R 601 luma), "
        "e.g. a grayscale Kodak from --data kodak",
    )
    p.add_argument(
        "--refine",
        type=whole_number,
        default=0,
        metavar="N",
        help="optimise each image's latent for N gradient steps before coding it (encoder "
        "only; curves named <curve>+refine<N>; codec.latent_refinement)",
    )
    p.add_argument("--save-decoded", action="store_true", help="write decoded PNGs too")
    p.add_argument(
        "--fresh",
        action="store_true",
        help="code every image again instead of reusing results an earlier run left in --out",
    )
    p.add_argument(
        "--cache-dir",
        default=os.environ.get("MRACNN_JAX_CACHE_DIR"),
        help="persistent JAX compilation cache (default: $MRACNN_JAX_CACHE_DIR; none if unset "
        "or off)",
    )
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None, prog: str = PROG) -> int:
    args = build_parser(prog).parse_args(argv)
    from mracnn_jax import zoo
    from mracnn_jax.evaluation import compare, runner

    try:
        references = [compare.load_reference(c) for c in args.compare]  # fail before any work
        models = args.model or None  # None: the bundled models for the images' channels
        if models is None and not zoo.bundled() and not args.anchors:
            raise runner.EvaluationError(zoo.no_model_message() + ", or only --anchors")
        runner.resolve_model_files(models or [])  # fail on a bad path before loading any model
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        if args.cache_dir and args.cache_dir.strip().lower() != "off":  # as `mracnn` reads it
            from mracnn_jax import codec

            codec.enable_compilation_cache(args.cache_dir)
        bd = None if args.anchor_for_bd.lower() == "none" else args.anchor_for_bd
        if bd is not None:  # a --compare curve by what was given, in any case: "vtm" -> "VTM"
            bd = next((r.name for r in references if r.source.lower() == bd.lower()), bd)
        runner.run_evaluation(
            models,
            args.data,
            args.out,
            name=args.name,
            anchor_codecs=args.anchors,
            bd_anchor=bd,
            grayscale=args.grayscale,
            save_decoded=args.save_decoded,
            resume=not args.fresh,
            show_progress=not args.no_progress,
            compared=references,
            refine_steps=args.refine,
        )
    except KeyboardInterrupt:
        print(
            f"{prog}: interrupted; the same command resumes where this run stopped",
            file=sys.stderr,
        )
        return 130
    except (runner.EvaluationError, OSError, ValueError) as e:
        if os.environ.get("MRACNN_DEBUG"):
            raise
        print(f"{prog}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 1
    return 0

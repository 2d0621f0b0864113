"""Evaluate MRACNN models (and classic anchors) on a folder of images: real files, RD curves,
BD-rates, plots.

    python evaluate.py --model q1.mracnn q2.mracnn q3.mracnn --data ../shared/data/kodak \\
        --out workdirs/eval_kodak --anchors jpeg,webp,avif,jpeg2000 --anchor-for-bd jpeg

Several models are several points of one curve when they share a name (the model config's
name, plus the training loss if recorded), or of one curve called --name. --model also takes
folders (every *.mracnn inside). Without --model the models bundled in
mracnn_jax/assets/models/ are used; without --data the sample images in
mracnn_jax/assets/samples/. --out receives <curve>.json (CompressAI eval_model layout),
<curve>.csv (per image), summary.md (also printed), rd.png and bitstreams/. An interrupted run
resumes: the same command again reuses every model result already measured in --out (--fresh
redoes them). Every error is one line on stderr with exit status 1. What is measured:
mracnn_jax/evaluation/runner.py.

This script uses argparse rather than absl (as train.py does) because --model takes several
values after one flag.
"""

from __future__ import annotations

import argparse
import os
import sys

PROG = "evaluate.py"
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


def build_parser() -> argparse.ArgumentParser:
    from mracnn_jax.evaluation.runner import SAMPLES_DIR

    p = argparse.ArgumentParser(prog=PROG, description=DESCRIPTION)
    p.add_argument(
        "--model",
        nargs="+",
        metavar="M",
        help="model files or folders of them (default: the bundled models)",
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
        help="curve the BD-rates are taken against: an anchor (run if not in --anchors) or a "
        "model curve's name; 'none' for no BD-rates (default: %(default)s)",
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


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from mracnn_jax import zoo
    from mracnn_jax.evaluation import runner

    try:
        models = args.model
        if not models:
            models = [str(e.path) for e in zoo.bundled()]
            if not models and not args.anchors:
                raise runner.EvaluationError(zoo.no_model_message() + ", or only --anchors")
        runner.resolve_model_files(models)  # fail on a bad path before importing JAX
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        if args.cache_dir and args.cache_dir.strip().lower() != "off":  # as `mracnn` reads it
            from mracnn_jax import codec

            codec.enable_compilation_cache(args.cache_dir)
        bd = None if args.anchor_for_bd.lower() == "none" else args.anchor_for_bd
        runner.run_evaluation(
            models,
            args.data,
            args.out,
            name=args.name,
            anchor_codecs=args.anchors,
            bd_anchor=bd,
            save_decoded=args.save_decoded,
            resume=not args.fresh,
            show_progress=not args.no_progress,
        )
    except KeyboardInterrupt:
        print(
            f"{PROG}: interrupted; the same command resumes where this run stopped",
            file=sys.stderr,
        )
        return 130
    except (runner.EvaluationError, OSError, ValueError) as e:
        if os.environ.get("MRACNN_DEBUG"):
            raise
        print(f"{PROG}: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

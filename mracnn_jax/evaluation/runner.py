"""Evaluate learned models and classic anchors on a folder of images; the library behind the
top-level ``evaluate.py`` (``run_evaluation``).

The images and model files are read by ``inputs``, each image is coded and scored by
``measure`` (real ``.mrac`` files for the models; the records' fields are listed there), and
this module puts the curves together and writes them out.

Classic anchors (``anchors.CODECS``) run over their default quality sweeps on the same
images. Outputs (``run_evaluation``): per curve ``<curve>.json`` (CompressAI ``eval_model``
layout, see ``results``) and ``<curve>.csv`` (per image), ``summary.md`` (means per point and
BD-rates against one curve), ``rd.png`` (PSNR–bpp and MS-SSIM(dB)–bpp), and the bitstreams
under ``bitstreams/<curve>/<point>/``. Reference curves (``compare``) join the plot and the
BD-rate table: those given (``compared``, ``evaluate.py --compare``) always, the published
WACNN and MRACNN Kodak points only when the images are Kodak's 24 (``compare.kodak_mismatch``;
otherwise the summary says why they are left out).
``completed.jsonl`` journals each model record as it is measured; a rerun into the same folder
takes those from it instead of coding the images again (``journal``; ``resume=False`` starts over).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mracnn_jax import zoo
from mracnn_jax.evaluation import anchors, bd_rate, compare, journal, measure, plots, results
from mracnn_jax.evaluation.inputs import (
    SAMPLES_DIR,
    EvaluationError,
    ModelSpec,
    check_channels,
    describe_dataset,
    describe_models,
    image_files,
    load_images,
    resolve_model_files,
)
from mracnn_jax.evaluation.measure import MODEL_COLUMNS, ModelRun

__all__ = [  # the evaluation's inputs, for evaluate.py, the demo and the scripts
    "SAMPLES_DIR",
    "EvaluationError",
    "image_files",
    "load_images",
    "resolve_model_files",
    "run_evaluation",
]


# -------------------------------------------------------------------------------------------------
# The whole evaluation.


@dataclasses.dataclass
class Evaluation:
    """What ``run_evaluation`` produced (every file is also in ``out``)."""

    curves: list[dict[str, Any]]  # CompressAI-layout results, models first, then anchors
    bd_rates: dict[str, dict[str, float]]  # {curve: {"psnr": %, "ms-ssim-db": %}} vs bd_anchor
    bd_anchor: str | None
    summary: str  # the Markdown summary
    files: dict[str, Path]  # role -> path ("summary", "plot", "<curve>.json", "<curve>.csv")
    seconds: float
    references: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # drawn, BD-rated
    notes: list[str] = dataclasses.field(default_factory=list)  # about the references


def _model_description(specs: Sequence[ModelSpec], dataset: str) -> str:
    models = ", ".join(f"{s.point}: {s.path.name} (params {s.params_digest[:16]})" for s in specs)
    return (
        f"{specs[0].model_name}; real .mrac files (portable range coding) on "
        f"{dataset}; points {models}"
    )


def _default_published(compared: Sequence[compare.Reference]) -> list[dict[str, Any]]:
    """The published Kodak points drawn by default, less those also given as compared curves."""
    try:
        published = compare.default_published()
    except (OSError, ValueError):  # a broken install: plot without them
        return []
    given = {r.name for r in compared}
    return [p.result for p in published if p.name not in given]


def _check_reference_names(compared: Sequence[compare.Reference], taken: Iterable[str]) -> None:
    seen = set(taken)
    for r in compared:
        if r.name in seen:
            raise EvaluationError(
                f"compared curve {r.name!r} ({r.source}) has the name of another curve; give it "
                "another 'name' in its JSON"
            )
        seen.add(r.name)


def run_evaluation(
    model_paths: Sequence[str | Path] | None,
    data_dir: str | Path,
    out_dir: str | Path,
    *,
    name: str | None = None,
    anchor_codecs: Sequence[str] = (),
    bd_anchor: str | None = "jpeg",
    anchor_qualities: dict[str, Sequence[float]] | None = None,
    grayscale: bool = False,
    save_decoded: bool = False,
    resume: bool = True,
    show_progress: bool = True,
    echo: Callable[[str], None] | None = print,
    compared: Sequence[compare.Reference] = (),
    refine_steps: int = 0,
) -> Evaluation:
    """Evaluate model files and anchors on the images of ``data_dir``; write everything to
    ``out_dir`` (module docstring) and return it.

    Args:
      model_paths: model files or folders of them (``resolve_model_files``); may be empty when
        ``anchor_codecs`` is not. None: the bundled models for the images' channels
        (``zoo.for_channels``: the grayscale ones when every image is grayscale).
      data_dir: folder of images (any sizes and orientations).
      out_dir: output folder (created).
      name: put every model on one curve of this name.
      anchor_codecs: Pillow anchors to run (``anchors.CODECS``).
      bd_anchor: the curve every BD-rate is taken against (an anchor codec in any case, run
        even when not in ``anchor_codecs``, a model curve's name, or a compared curve's; a name
        no curve has exactly picks the one curve that has it in other case); None for no
        BD-rates.
      anchor_qualities: per-codec quality sweeps (default ``anchors.DEFAULT_QUALITIES``).
      grayscale: evaluate the images' grayscale versions (``load_images``).
      save_decoded: also write the decoded images as PNG under ``decoded/``.
      resume: reuse the model records that an earlier run into ``out_dir`` finished (``journal``);
        False starts over.
      show_progress: draw a tqdm progress bar on stderr.
      echo: where the summary and notes are printed (None: nowhere).
      compared: reference curves (``compare.load_reference``) drawn and BD-rated beside the
        measured ones on any image set, with a note when the data set they state is not
        recognisably the evaluated one.
      refine_steps: encoder-side latent refinement of every model's files
        (``codec.latent_refinement``); its curves are named ``<curve>+refine<N>``.
    """
    t_start = time.perf_counter()
    say = echo or (lambda _: None)
    out = Path(out_dir)
    anchor_codecs = list(dict.fromkeys(anchor_codecs))
    if bd_anchor is not None and bd_anchor.lower() in anchors.CODECS:  # "JPEG" is jpeg
        bd_anchor = bd_anchor.lower()
    for c in anchor_codecs:
        if c not in anchors.CODECS:
            raise EvaluationError(f"unknown anchor {c!r}; choose from {', '.join(anchors.CODECS)}")
    if bd_anchor in anchors.CODECS and bd_anchor not in anchor_codecs:
        anchor_codecs.append(bd_anchor)
    for c in list(anchor_codecs):
        if not anchors.codec_available(c):
            say(f"note: {c} skipped, this Pillow build cannot write it")
            anchor_codecs.remove(c)
    names, images = load_images(data_dir, grayscale)
    if model_paths is None:
        channels = 1 if all(im.ndim == 2 for im in images) else 3
        model_paths = [e.path for e in zoo.for_channels(channels)]
    files = resolve_model_files(model_paths)
    if not files and not anchor_codecs:
        raise EvaluationError("nothing to evaluate: give --model or --anchors")
    specs = describe_models(files, name)
    if refine_steps:
        for s in specs:
            s.curve, s.refine_steps = f"{s.curve}+refine{refine_steps}", int(refine_steps)
    clash = sorted({s.curve for s in specs} & set(anchor_codecs))
    if clash:
        raise EvaluationError(f"model curve {clash[0]!r} has an anchor's name; use --name")
    _check_reference_names(compared, [s.curve for s in specs] + anchor_codecs)
    check_channels(specs, names, images)
    dataset = describe_dataset(data_dir, images)
    not_kodak = compare.kodak_mismatch(names, [im.shape for im in images])
    if not not_kodak and any(im.ndim == 2 for im in images):
        not_kodak = "grayscale; the published points are for colour Kodak"
    notes = [n for r in compared if (n := compare.dataset_note(r, dataset, not not_kodak))]
    published = [] if not_kodak else _default_published(compared)
    if not_kodak:
        notes.append(
            "note: the published Kodak points (WACNN, MRACNN paper Table 3) are left out: the "
            f"images are not Kodak's 24 ({not_kodak}); --compare wacnn or mracnn-paper-table3 "
            "draws them anyway"
        )
    out.mkdir(parents=True, exist_ok=True)
    done = journal.Journal(out, resume=resume) if specs else None
    if done is not None and done.done:
        say(f"resuming: {len(done.done)} model x image results from {done.path} (--fresh to redo)")

    progress = measure.Progress(len(images) * (len(specs) + len(anchor_codecs)), show_progress)
    curves: list[dict[str, Any]] = []
    model_runs: list[ModelRun] = []
    written: dict[str, Path] = {}
    warmed: set = set()
    try:
        for spec in specs:
            progress.describe(f"{spec.curve} {spec.point}")
            point_dir = Path(measure.slug(spec.curve)) / measure.slug(spec.point)
            model_runs.append(
                measure.evaluate_model(
                    spec,
                    names,
                    images,
                    out / "bitstreams" / point_dir,
                    warmed=warmed,
                    decoded_dir=out / "decoded" / point_dir if save_decoded else None,
                    progress=progress,
                    done=done,
                )
            )
        anchor_records = {}
        for c in anchor_codecs:
            progress.describe(c)
            q = (anchor_qualities or {}).get(c)
            anchor_records[c] = (measure.evaluate_anchor(c, names, images, q, progress), q)
    finally:
        progress.close()

    for curve in dict.fromkeys(s.curve for s in specs):
        runs = [r for r in model_runs if r.spec.curve == curve]
        records = [rec for r in runs for rec in r.records]
        means = measure.summarize(records, "point")
        res = measure.curve_result(
            curve,
            _model_description([r.spec for r in runs], dataset),
            means,
            dataset=dataset,
            num_images=len(images),
            setup_time={r.spec.point: r.setup_s for r in runs},
            first_calls={r.spec.point: r.first_calls for r in runs if r.first_calls},
        )
        curves.append(res)
        order = {m["point"]: i for i, m in enumerate(means)}
        records.sort(key=lambda rec: (order[rec["point"]], rec["image"]))
        written[f"{curve}.json"] = results.write_result_json(
            out / f"{measure.slug(curve)}.json", res
        )
        written[f"{curve}.csv"] = results.write_records_csv(
            out / f"{measure.slug(curve)}.csv",
            [{k: rec[k] for k in MODEL_COLUMNS} for rec in records],
        )
    for c, (records, q) in anchor_records.items():
        means = measure.summarize(records, "quality")
        description = anchors.description(c, q, 1 if all(im.ndim == 2 for im in images) else 3)
        res = measure.curve_result(c, description, means, dataset=dataset, num_images=len(images))
        curves.append(res)
        written[f"{c}.json"] = results.write_result_json(out / f"{measure.slug(c)}.json", res)
        written[f"{c}.csv"] = results.write_records_csv(out / f"{measure.slug(c)}.csv", records)

    references = [r.result for r in compared]
    anchor_result = None
    if bd_anchor is not None:
        anchor_result = _named(curves + references, bd_anchor)
        if anchor_result is None:
            say(f"note: no curve named {bd_anchor!r} to take BD-rates against; none computed")
    others = [c for c in curves + references if c is not anchor_result]
    bd_rates = (
        bd_rate.bd_rate_table(others, anchor_result, min_overlap=0.0) if anchor_result else {}
    )

    title = f"{dataset}: rate–distortion"
    written["plot"] = out / "rd.png"
    plots.plot_rd(
        curves,
        written["plot"],
        published=published,
        compared=references,
        title=title,
        grayscale=all(im.ndim == 2 for im in images),
    )
    summary = _summary_markdown(
        curves + references,
        anchor_result,
        model_runs,
        published,
        dataset,
        time.perf_counter() - t_start,
        notes,
    )
    written["summary"] = out / "summary.md"
    written["summary"].write_text(summary)
    say(summary.rstrip("\n"))
    say(f"wrote {len(written)} files to {out}")
    return Evaluation(
        curves=curves,
        bd_rates=bd_rates,
        bd_anchor=anchor_result["name"] if anchor_result else None,
        summary=summary,
        files=written,
        seconds=time.perf_counter() - t_start,
        references=references + published,
        notes=notes,
    )


def _named(curves: Sequence[dict[str, Any]], name: str) -> dict[str, Any] | None:
    """The curve called ``name``, else the one curve whose name is ``name`` in other case."""
    exact = [c for c in curves if c["name"] == name]
    folded = [c for c in curves if str(c["name"]).casefold() == name.casefold()]
    return exact[0] if exact else folded[0] if len(folded) == 1 else None


def _summary_markdown(
    curves: list[dict[str, Any]],
    anchor: dict[str, Any] | None,
    runs: Sequence[ModelRun],
    published: list[dict[str, Any]],
    dataset: str,
    seconds: float,
    notes: Sequence[str] = (),
) -> str:
    """Means per point, BD-rates against ``anchor`` (with the published Kodak points, when
    shown, as extra rows), the ``notes`` on reference curves, and for the models the estimated
    rate and the first-call (compilation) times."""
    ref = [dict(p, name=f"{p['name']} (published, Kodak)") for p in published]
    md = results.markdown_summary(curves + ref, anchor=anchor, title=f"Evaluation on {dataset}")
    lines = [md.rstrip("\n"), ""]
    if anchor is not None:
        lines += [
            (
                "BD-rates marked – are not computable: fewer than 2 points, quality not "
                "increasing with rate, or no overlap with the anchor."
                + (" Published rows are the papers' Kodak figures (PSNR only)." if ref else "")
            ),
            "",
        ]
    if notes:
        lines += [f"- {n.removeprefix('note: ')}" for n in notes] + [""]
    if runs:
        lines += [
            (
                "Models: file rate against the ideal code length (est. bpp, from the likelihoods "
                "under the coding tables), and the first call on each padded shape (compilation "
                "included; the timed calls above exclude it):"
            ),
            "",
            (
                "| curve | point | model | bpp | payload bpp | est. bpp | file / est. | setup (s) "
                "| first calls |"
            ),
            "|---|---|---|---:|---:|---:|---:|---:|---|",
        ]
        for r in runs:
            bpp = float(np.mean([rec["bpp"] for rec in r.records]))
            payload = float(np.mean([rec["payload_bpp"] for rec in r.records]))
            est = float(np.mean([rec["est_bpp"] for rec in r.records]))
            first = "; ".join(
                f"{f['shape']}: enc {f['encode_first_s']:.1f} s, dec {f['decode_first_s']:.1f} s"
                for f in r.first_calls
            )
            if not first:
                first = "none (already compiled)" if r.resumed < len(r.records) else "none"
            if r.resumed:
                first += f"; {r.resumed} of {len(r.records)} images from an earlier run"
            ratio = f"{bpp / est:.4f}" if est > 0 else "–"
            setup = "–" if r.setup_s is None else f"{r.setup_s:.1f}"
            lines.append(
                f"| {r.spec.curve} | {r.spec.point} | {r.spec.path.name} | {bpp:.4f} | "
                f"{payload:.4f} | {est:.4f} | {ratio} | {setup} | {first} |"
            )
        lines.append("")
    lines.append(f"Total wall time {seconds:.1f} s.")
    return "\n".join(lines) + "\n"

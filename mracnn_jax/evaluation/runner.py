"""Evaluate learned models and classic anchors on a folder of images; the library behind the
top-level ``evaluate.py``.

For every model file and every image the image is compressed to a real ``.mrac`` file, the file
is read back and decompressed, and the record of that pair holds:

    bpp        8 · (file size in bytes) / (H · W), H x W the original size (not the padded one)
    payload_bpp  8 · (payload bytes: the z and y strings, ``container.Bitstream.payload_bytes``)
               / (H · W): CompressAI's count, without the file's header and CRC
    est_bpp    the ideal code length of the coded symbols under the coding tables (−log2 of
               each symbol's quantised probability, as the model's likelihoods predict it),
               over H · W; the file is longer by its header and the range coder's overhead
    psnr       PSNR-RGB in dB of the 8-bit decoded image at the original size
    ms_ssim    MS-SSIM (RGB, 8-bit) and ms_ssim_db = −10·log10(1 − MS-SSIM); NaN for images with
               a side under ``metrics.min_size_for_ms_ssim()`` (161) pixels, where MS-SSIM's
               five scales do not fit
    encode_s   wall seconds of ``codec.compress_with_info`` (networks, range coding, container,
               and the few milliseconds of the ideal-code-length estimate), including the
               encoder's prediction of the decoded image (the synthesis, which the exactness
               check needs and ``mracnn compress`` skips)
    decode_s   wall seconds of ``codec.decompress_with_info`` on the bytes read from the file

Compilation is kept out of encode_s and decode_s: the first image of every padded shape (the
network is compiled once per shape and architecture, shared by all models of one config) is
coded once beforehand, and that first call's time is reported apart (``first_calls``), with
the compile estimate first call − timed call of the same image. Building a model's coding
tables (and the range coder's first compilation) is timed apart as ``setup_s``.

Models are grouped into curves: by default one curve per model name (the config's ``name``,
plus the training loss when the model file records one), each model one point; ``name=``
puts every model on one curve of that name. A point is labelled by the model's metadata
``quality``, else its ``lmbda``, else its file name. Points are stored in order of mean bpp.

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
import math
import os
import re
import sys
import time
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from mracnn_jax import codec, metrics, model_file, zoo
from mracnn_jax.coding import container
from mracnn_jax.evaluation import anchors, bd_rate, compare, journal, plots, results
from mracnn_jax.images import SUFFIXES as IMAGE_SUFFIXES
from mracnn_jax.images import ImageError, list_images, read_image
from mracnn_jax.models.padding import padded_size

PACKAGE_DIR = Path(__file__).resolve().parents[1]
#: The default image set: three Kodak images, two portrait and one landscape.
SAMPLES_DIR = PACKAGE_DIR / "assets" / "samples"

#: Columns of the per-image CSV of a model curve, in order.
MODEL_COLUMNS = (
    "curve",
    "point",
    "model",
    "image",
    "height",
    "width",
    "num_bytes",
    "bpp",
    "payload_bpp",
    "est_bpp",
    "psnr",
    "ms_ssim",
    "ms_ssim_db",
    "encode_s",
    "decode_s",
    "bitstream",
)
#: Per-image keys averaged per point (``ms_ssim_db`` of a point is the dB of its mean MS-SSIM).
MEAN_KEYS = ("bpp", "payload_bpp", "est_bpp", "psnr", "ms_ssim", "encode_s", "decode_s")


class EvaluationError(Exception):
    """A user-facing problem with the inputs (one line: what was wrong and what to do)."""


# -------------------------------------------------------------------------------------------------
# Inputs: model files and images.


@dataclasses.dataclass
class ModelSpec:
    """A model file to evaluate, read from its header only (no parameters loaded)."""

    path: Path
    model_name: str
    curve: str
    point: str
    metadata: dict[str, Any]
    params_digest: str


def resolve_model_files(paths: Iterable[str | Path]) -> list[Path]:
    """Model files from ``paths``: each a model file, or a folder whose model files
    (``zoo.model_files``: ``*.mracnn``) are all taken (sorted). EvaluationError for a missing path
    or a folder without models."""
    out: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            found = zoo.model_files(p)
            if not found:
                raise EvaluationError(f"model folder {str(p)!r} holds no *{zoo.SUFFIX} files")
            out.extend(found)
        elif p.is_file():
            out.append(p)
        else:
            raise EvaluationError(f"no such model file or folder: {str(p)!r}")
    seen: set[Path] = set()
    unique = []
    for p in out:
        if p.resolve() not in seen:
            seen.add(p.resolve())
            unique.append(p)
    return unique


def _point_label(path: Path, metadata: dict[str, Any]) -> str:
    if metadata.get("quality") is not None:
        return f"q{metadata['quality']}"
    if metadata.get("lmbda") is not None:
        return f"lambda={metadata['lmbda']:g}"
    return path.stem


def describe_models(paths: Sequence[str | Path], name: str | None = None) -> list[ModelSpec]:
    """Read the headers of model files and assign curves and point labels (module docstring)."""
    specs = []
    for p in map(Path, paths):
        try:
            header = model_file.read_header(p)
        except (OSError, ValueError) as e:
            raise EvaluationError(f"{str(p)!r} is not a readable model file: {e}") from None
        metadata = dict(header.get("metadata") or {})
        model_name = str((header.get("model_config") or {}).get("name", p.stem))
        curve = name
        if curve is None:
            loss = metadata.get("loss_metric")
            curve = model_name if not loss else f"{model_name}-{loss}"
        point = _point_label(p, metadata)
        digest = str(header.get("params_digest", ""))
        specs.append(ModelSpec(p, model_name, curve, point, metadata, digest))
    for curve in {s.curve for s in specs}:  # two points of a curve must be told apart
        labels = [s.point for s in specs if s.curve == curve]
        if len(set(labels)) != len(labels):
            for s in specs:
                if s.curve == curve:
                    s.point = s.path.stem
    return specs


def image_files(directory: str | Path) -> list[Path]:
    """The image files of a folder (``images.list_images``, not recursive), sorted by name."""
    directory = Path(directory)
    if not directory.is_dir():
        raise EvaluationError(f"image folder {str(directory)!r} does not exist")
    paths = list_images(directory)
    if not paths:
        raise EvaluationError(
            f"no images in {str(directory)!r} (looked for {', '.join(IMAGE_SUFFIXES)})"
        )
    return paths


def load_images(directory: str | Path) -> tuple[list[str], list[np.ndarray]]:
    """(names, RGB uint8 ``[H, W, 3]`` arrays) of every image in ``directory``; grayscale and
    palette images become RGB, images with alpha are refused (``images.read_image``, the
    codec's rules)."""
    names, images = [], []
    for p in image_files(directory):
        try:
            rgb, _ = read_image(p)
        except ImageError as e:
            raise EvaluationError(str(e)) from None
        names.append(p.name)
        images.append(rgb)
    return names, images


# -------------------------------------------------------------------------------------------------
# Scoring.


def score(original: np.ndarray, decoded: np.ndarray) -> dict[str, Any]:
    """PSNR-RGB, MS-SSIM and MS-SSIM dB of ``decoded`` (``[H, W, 3]`` or a stack ``[N, H, W,
    3]``, uint8) against ``original`` ``[H, W, 3]``; MS-SSIM is NaN for images under 161 pixels
    a side (see the module docstring)."""
    h, w = original.shape[:2]
    if min(h, w) >= metrics.min_size_for_ms_ssim():
        return metrics.image_metrics(original, decoded)
    p = np.asarray(metrics.psnr(original, decoded, 255.0), np.float64)
    m = np.full(p.shape, np.nan)
    if p.ndim == 0:
        return {"psnr": float(p), "ms_ssim": math.nan, "ms_ssim_db": math.nan}
    return {"psnr": p, "ms_ssim": m, "ms_ssim_db": m}


def summarize(records: Sequence[dict[str, Any]], key: str) -> list[dict[str, Any]]:
    """Means per point (records grouped by ``key``), sorted by mean bpp: ``key``,
    ``num_images``, the means of ``MEAN_KEYS`` present, and ``ms_ssim_db`` of the mean
    MS-SSIM."""
    groups: dict[Any, list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault(r[key], []).append(r)
    means = []
    for point, rs in groups.items():
        m: dict[str, Any] = {key: point, "num_images": len(rs)}
        for k in MEAN_KEYS:
            if k in rs[0]:
                m[k] = float(np.mean([r[k] for r in rs]))
        m["ms_ssim_db"] = metrics.ms_ssim_db(m["ms_ssim"])
        means.append(m)
    return sorted(means, key=lambda m: m["bpp"])


def _result(name: str, description: str, means: list[dict[str, Any]], **extra: Any) -> dict:
    """A CompressAI-layout result; MS-SSIM is left out when some image had none (NaN)."""
    if any(not math.isfinite(m["ms_ssim"]) for m in means):
        warnings.warn(
            f"{name}: some images are under 161 pixels a side, so the curve has no MS-SSIM",
            stacklevel=2,
        )
        means = [{k: v for k, v in m.items() if k != "ms_ssim"} for m in means]
    return results.make_result(name, description, means, **extra)


# -------------------------------------------------------------------------------------------------
# Running models and anchors.


def slug(name: str) -> str:
    """A file-name-safe form of a curve or point name."""
    s = re.sub(r"[^A-Za-z0-9._+=-]+", "_", name).strip("._")
    return s or "curve"


class _Progress:
    """A tqdm bar over every (model or anchor, image) pair, or nothing."""

    def __init__(self, total: int, enabled: bool):
        self.bar = None
        if enabled and total:
            from tqdm import tqdm

            self.bar = tqdm(total=total, unit="img", dynamic_ncols=True, file=sys.stderr)

    def describe(self, text: str) -> None:
        if self.bar is not None:
            self.bar.set_description(text)

    def update(self) -> None:
        if self.bar is not None:
            self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


@dataclasses.dataclass
class ModelRun:
    """What one model gave on the image set."""

    spec: ModelSpec
    records: list[dict[str, Any]]
    setup_s: float | None  # coding tables and coder start-up; None: never loaded
    first_calls: list[dict[str, Any]]  # one per padded shape compiled for this model
    resumed: int = 0  # records taken from an earlier run's journal


def evaluate_model(
    spec: ModelSpec,
    names: Sequence[str],
    images: Sequence[np.ndarray],
    bitstream_dir: Path,
    *,
    warmed: set,
    decoded_dir: Path | None = None,
    progress: _Progress | None = None,
    done: journal.Journal | None = None,
) -> ModelRun:
    """Code every image with one model through real files (see the module docstring).

    ``warmed`` holds the (architecture, padded shape) pairs already compiled in this process
    and is updated, so that models of one architecture share the warm-up. Images whose record
    ``done`` holds (an earlier, interrupted run into the same folder) are not coded again; every
    new record is added to it as soon as it is measured.
    """
    model, setup_s = None, None  # loaded when the first image needs coding
    bitstream_dir.mkdir(parents=True, exist_ok=True)
    records, first_calls, resumed = [], [], 0
    for name, rgb in zip(names, images):
        path = bitstream_dir / f"{Path(name).stem}.mrac"
        pixels = journal.image_digest(rgb) if done is not None else None
        earlier = done.lookup(spec.params_digest, name, pixels) if done is not None else None
        if (
            earlier is not None
            and path.is_file()
            and os.path.getsize(path) == earlier.get("num_bytes")
            and (decoded_dir is None or (decoded_dir / _png(name)).is_file())
        ):
            earlier.update(
                curve=spec.curve, point=spec.point, model=spec.path.name, bitstream=str(path)
            )
            if "payload_bpp" not in earlier:  # journalled before the field existed
                earlier["payload_bpp"] = _payload_bpp(path.read_bytes())
            records.append(earlier)
            resumed += 1
            if progress is not None:
                progress.update()
            continue
        if model is None:
            model = codec.LoadedModel.load(spec.path)
            t0 = time.perf_counter()
            model.z_coder()
            model.y_coder()
            setup_s = time.perf_counter() - t0
        h, w = rgb.shape[:2]
        shape = padded_size(h, w)
        first = None
        if (id(model.pieces), shape) not in warmed:
            t0 = time.perf_counter()
            warm = codec.compress_with_info(rgb, model)
            t1 = time.perf_counter()
            codec.decompress_with_info(warm.data, model)
            first = (t1 - t0, time.perf_counter() - t1)
            warmed.add((id(model.pieces), shape))

        t0 = time.perf_counter()
        enc = codec.compress_with_info(rgb, model)
        encode_s = time.perf_counter() - t0
        path.write_bytes(enc.data)
        data = path.read_bytes()
        t0 = time.perf_counter()
        dec = codec.decompress_with_info(data, model)
        decode_s = time.perf_counter() - t0
        if not np.array_equal(dec.image, enc.reconstruction):
            raise RuntimeError(
                f"{spec.path}: decoding {path} gave another image than the encoder's "
                "reconstruction"
            )
        if decoded_dir is not None:
            decoded_dir.mkdir(parents=True, exist_ok=True)
            Image.fromarray(dec.image).save(decoded_dir / _png(name))
        if first is not None:
            first_calls.append(
                {
                    "shape": f"{shape[1]}x{shape[0]}",  # padded width x height
                    "image": name,
                    "encode_first_s": first[0],
                    "decode_first_s": first[1],
                    "encode_compile_s": max(first[0] - encode_s, 0.0),
                    "decode_compile_s": max(first[1] - decode_s, 0.0),
                }
            )
        num_bytes = os.path.getsize(path)
        m = score(rgb, dec.image)
        records.append(
            {
                "curve": spec.curve,
                "point": spec.point,
                "model": spec.path.name,
                "image": name,
                "height": h,
                "width": w,
                "num_bytes": num_bytes,
                "bpp": metrics.bpp_from_file_size(num_bytes, h, w),
                "payload_bpp": _payload_bpp(data),
                "est_bpp": float(enc.bits["table"]) / (h * w),
                "psnr": float(m["psnr"]),
                "ms_ssim": float(m["ms_ssim"]),
                "ms_ssim_db": float(m["ms_ssim_db"]),
                "encode_s": encode_s,
                "decode_s": decode_s,
                "bitstream": str(path),
            }
        )
        if done is not None:
            done.add(spec.params_digest, name, pixels, records[-1])
        if progress is not None:
            progress.update()
    return ModelRun(spec, records, setup_s, first_calls, resumed)


def _payload_bpp(data: bytes) -> float:
    """8 · payload bytes (the z and y strings, no header or CRC) / original H·W of a .mrac file:
    the rate CompressAI reports."""
    bs = container.unpack(data)
    return 8 * bs.payload_bytes() / (bs.height * bs.width)


def _png(image_name: str) -> str:
    return f"{Path(image_name).stem}.png"


def evaluate_anchor(
    codec_name: str,
    names: Sequence[str],
    images: Sequence[np.ndarray],
    qualities: Sequence[float] | None = None,
    progress: _Progress | None = None,
) -> list[dict[str, Any]]:
    """Per-image records of one Pillow anchor over its quality sweep (as
    ``anchors.run_codec``, with MS-SSIM NaN on images too small for it)."""
    qualities = tuple(anchors.DEFAULT_QUALITIES[codec_name] if qualities is None else qualities)
    records = []
    for name, image in zip(names, images):
        records += anchors.image_records(codec_name, name, image, qualities, score, label="curve")
        if progress is not None:
            progress.update()
    return records


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
    model_paths: Sequence[str | Path],
    data_dir: str | Path,
    out_dir: str | Path,
    *,
    name: str | None = None,
    anchor_codecs: Sequence[str] = (),
    bd_anchor: str | None = "jpeg",
    anchor_qualities: dict[str, Sequence[float]] | None = None,
    save_decoded: bool = False,
    resume: bool = True,
    show_progress: bool = True,
    echo: Callable[[str], None] | None = print,
    compared: Sequence[compare.Reference] = (),
) -> Evaluation:
    """Evaluate model files and anchors on the images of ``data_dir``; write everything to
    ``out_dir`` (module docstring) and return it.

    Args:
      model_paths: model files or folders of them (``resolve_model_files``); may be empty when
        ``anchor_codecs`` is not.
      data_dir: folder of images (any sizes and orientations).
      out_dir: output folder (created).
      name: put every model on one curve of this name.
      anchor_codecs: Pillow anchors to run (``anchors.CODECS``).
      bd_anchor: the curve every BD-rate is taken against (an anchor codec, run even when not
        in ``anchor_codecs``, a model curve's name, or a compared curve's); None for no
        BD-rates.
      anchor_qualities: per-codec quality sweeps (default ``anchors.DEFAULT_QUALITIES``).
      save_decoded: also write the decoded images as PNG under ``decoded/``.
      resume: reuse the model records that an earlier run into ``out_dir`` finished (``journal``);
        False starts over.
      show_progress: draw a tqdm progress bar on stderr.
      echo: where the summary and notes are printed (None: nowhere).
      compared: reference curves (``compare.load_reference``) drawn and BD-rated beside the
        measured ones on any image set, with a note when the data set they state is not
        recognisably the evaluated one.
    """
    t_start = time.perf_counter()
    say = echo or (lambda _: None)
    out = Path(out_dir)
    anchor_codecs = list(dict.fromkeys(anchor_codecs))
    for c in anchor_codecs:
        if c not in anchors.CODECS:
            raise EvaluationError(f"unknown anchor {c!r}; choose from {', '.join(anchors.CODECS)}")
    if bd_anchor in anchors.CODECS and bd_anchor not in anchor_codecs:
        anchor_codecs.append(bd_anchor)
    for c in list(anchor_codecs):
        if not anchors.codec_available(c):
            say(f"note: {c} skipped, this Pillow build cannot write it")
            anchor_codecs.remove(c)
    files = resolve_model_files(model_paths)
    if not files and not anchor_codecs:
        raise EvaluationError("nothing to evaluate: give --model or --anchors")
    specs = describe_models(files, name)
    clash = sorted({s.curve for s in specs} & set(anchor_codecs))
    if clash:
        raise EvaluationError(f"model curve {clash[0]!r} has an anchor's name; use --name")
    _check_reference_names(compared, [s.curve for s in specs] + anchor_codecs)
    names, images = load_images(data_dir)
    sizes = sorted({f"{im.shape[1]}x{im.shape[0]}" for im in images})
    dataset = f"{Path(data_dir).name or data_dir} ({len(images)} images, {', '.join(sizes)})"
    not_kodak = compare.kodak_mismatch(names, [im.shape for im in images])
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

    progress = _Progress(len(images) * (len(specs) + len(anchor_codecs)), show_progress)
    curves: list[dict[str, Any]] = []
    model_runs: list[ModelRun] = []
    written: dict[str, Path] = {}
    warmed: set = set()
    try:
        for spec in specs:
            progress.describe(f"{spec.curve} {spec.point}")
            point_dir = Path(slug(spec.curve)) / slug(spec.point)
            model_runs.append(
                evaluate_model(
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
            anchor_records[c] = (evaluate_anchor(c, names, images, q, progress), q)
    finally:
        progress.close()

    for curve in dict.fromkeys(s.curve for s in specs):
        runs = [r for r in model_runs if r.spec.curve == curve]
        records = [rec for r in runs for rec in r.records]
        means = summarize(records, "point")
        res = _result(
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
        written[f"{curve}.json"] = results.write_result_json(out / f"{slug(curve)}.json", res)
        written[f"{curve}.csv"] = results.write_records_csv(
            out / f"{slug(curve)}.csv", [{k: rec[k] for k in MODEL_COLUMNS} for rec in records]
        )
    for c, (records, q) in anchor_records.items():
        means = summarize(records, "quality")
        description = anchors.description(c, q)
        res = _result(c, description, means, dataset=dataset, num_images=len(images))
        curves.append(res)
        written[f"{c}.json"] = results.write_result_json(out / f"{slug(c)}.json", res)
        written[f"{c}.csv"] = results.write_records_csv(out / f"{slug(c)}.csv", records)

    references = [r.result for r in compared]
    anchor_result = None
    if bd_anchor is not None:
        anchor_result = next((c for c in curves + references if c["name"] == bd_anchor), None)
        if anchor_result is None:
            say(f"note: no curve named {bd_anchor!r} to take BD-rates against; none computed")
    others = [c for c in curves + references if c is not anchor_result]
    bd_rates = (
        bd_rate.bd_rate_table(others, anchor_result, min_overlap=0.0) if anchor_result else {}
    )

    title = f"{dataset}: rate–distortion"
    written["plot"] = out / "rd.png"
    plots.plot_rd(curves, written["plot"], published=published, compared=references, title=title)
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

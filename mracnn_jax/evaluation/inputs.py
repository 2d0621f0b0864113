"""The inputs of an evaluation: model files, read from their headers (no parameters loaded),
and images, each in its own mode; ``EvaluationError`` is the one error for bad inputs.

Models are grouped into curves: by default one curve per model name (the config's ``name``,
plus the training loss when the model file records one), each model one point; ``name=``
puts every model on one curve of that name. A point is labelled by the model's metadata
``lmbda``, else its ``quality``, else its file name: a training run's export and the bundled file
made from it (which adds ``quality``) are the same point, ``lambda=0.013``. When two points of a
curve would have one label, every point of it is labelled by its file name, and if two files
have one name, by its path below their common folder (``runA/model.mracnn``). Points are stored
in order of mean bpp.

Images are scored in their own mode (``anchors.load_image``): a grayscale image is read as
``[H, W]``, coded by a model as ``mracnn compress`` codes it (one channel for a grayscale
model, three equal ones for a colour model) and by the anchors as grayscale where the codec can
(``anchors``), and its PSNR and MS-SSIM are on its one channel. A grayscale model accepts only
grayscale images (``EvaluationError`` names the first colour one). The published Kodak points
are colour Kodak's and are left out for grayscale images.
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mracnn_jax import model_file, zoo
from mracnn_jax.evaluation import anchors
from mracnn_jax.images import SUFFIXES as IMAGE_SUFFIXES
from mracnn_jax.images import ImageError, list_images, restore_mode

PACKAGE_DIR = Path(__file__).resolve().parents[1]
#: The default image set: three Kodak images, two portrait and one landscape.
SAMPLES_DIR = PACKAGE_DIR / "assets" / "samples"


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
    channels: int = 3  # 1 for a grayscale model (``zoo.header_channels``)
    refine_steps: int = 0  # encoder-side latent refinement (``codec.latent_refinement``)

    @property
    def journal_key(self) -> str:
        """What the journal files this model's results under: its parameters, and the
        refinement, which changes the files."""
        refined = f"+refine{self.refine_steps}" if self.refine_steps else ""
        return self.params_digest + refined


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
    if metadata.get("lmbda") is not None:
        return f"lambda={metadata['lmbda']:g}"
    if metadata.get("quality") is not None:
        return f"q{metadata['quality']}"
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
        channels = zoo.header_channels(header)
        specs.append(ModelSpec(p, model_name, curve, point, metadata, digest, channels))
    for curve in {s.curve for s in specs}:  # two points of a curve must be told apart
        points = [s for s in specs if s.curve == curve]
        if _clash(points):
            for s in points:
                s.point = s.path.stem
        if _clash(points):
            for s, label in zip(points, _relative_labels(points)):
                s.point = label
        clash = _clash(points)
        if clash:
            a, b = clash
            raise EvaluationError(
                f"{str(a.path)!r} and {str(b.path)!r} would be one point ({b.point!r}) of curve "
                f"{curve!r}: rename one of the files"
            )
    return specs


def slug(name: str) -> str:
    """A file-name-safe form of a curve or point name (``measure.slug``)."""
    s = re.sub(r"[^A-Za-z0-9._+=-]+", "_", name).strip("._")
    return s or "curve"


def _clash(points: Sequence[ModelSpec]) -> tuple[ModelSpec, ModelSpec] | None:
    """Two points whose labels do not tell them apart, also as the names of their folders
    (``slug``); None if there are none."""
    seen: dict[str, ModelSpec] = {}
    for s in points:
        key = slug(s.point)
        if key in seen:
            return seen[key], s
        seen[key] = s
    return None


def _relative_labels(points: Sequence[ModelSpec]) -> list[str]:
    """Each point's file as a path below the folder all their files share
    (``runA/model.mracnn``): files of one name in different folders."""
    resolved = [s.path.resolve() for s in points]
    common = Path(os.path.commonpath(resolved))
    return [r.relative_to(common).as_posix() for r in resolved]


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


def load_images(
    directory: str | Path, grayscale: bool = False
) -> tuple[list[str], list[np.ndarray]]:
    """(names, uint8 arrays) of every image in ``directory``, each in its own mode
    (``anchors.load_image``): RGB ``[H, W, 3]`` (palette images too) or grayscale ``[H, W]``;
    images with alpha are refused (the codec's rules). ``grayscale`` turns RGB images into
    their ITU-R 601 luma ``[H, W]`` (``images.restore_mode``: Pillow's ``convert("L")``).
    Two images of one name but the suffix (``kodim01.png``, ``kodim01.jpg``) are refused: an
    image's bitstream and decoded PNG are named by its name without the suffix."""
    paths = image_files(directory)
    stems: dict[str, Path] = {}
    for p in paths:
        other = stems.setdefault(p.stem, p)
        if other is not p:
            raise EvaluationError(
                f"{other.name} and {p.name} in {str(directory)!r} would share their bitstream "
                f"files ({p.stem}.mrac): rename or move one of them"
            )
    names, images = [], []
    for p in paths:
        try:
            image = anchors.load_image(p)
        except ImageError as e:
            raise EvaluationError(str(e)) from None
        names.append(p.name)
        images.append(restore_mode(image, "L") if grayscale and image.ndim == 3 else image)
    return names, images


def describe_dataset(data_dir: str | Path, images: Sequence[np.ndarray]) -> str:
    """``'<folder> (N images[, grayscale | , G grayscale], sizes)'``: the data set as curves,
    summaries and plots name it."""
    sizes = sorted({f"{im.shape[1]}x{im.shape[0]}" for im in images})
    gray = sum(im.ndim == 2 for im in images)
    kind = [] if not gray else ["grayscale"] if gray == len(images) else [f"{gray} grayscale"]
    parts = [f"{len(images)} images", *kind, ", ".join(sizes)]
    return f"{Path(data_dir).name or data_dir} ({', '.join(parts)})"


def check_channels(specs: Sequence[ModelSpec], names: Sequence[str], images) -> None:
    """EvaluationError unless every grayscale model has only grayscale images to code."""
    colour = next((n for n, im in zip(names, images) if im.ndim == 3), None)
    gray_model = next((s for s in specs if s.channels == 1), None)
    if colour is not None and gray_model is not None:
        raise EvaluationError(
            f"{gray_model.path.name} is a grayscale model and {colour} a colour image: evaluate "
            "grayscale models on grayscale images"
        )

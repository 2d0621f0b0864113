"""Reference curves to compare with: CompressAI-layout result files, the published Kodak curves
shipped in ``published/``, and the rule that says whether an image set is Kodak.

A reference curve is drawn in ``rd.png`` and BD-rated in the summary beside the measured ones,
labelled by its ``name``. Published figures are means over one image set; beside another one
they mislead (a mean over two Kodak crops is not Kodak's mean). So:

- the curves shipped here are Kodak's; the default ones (``results.PUBLISHED``) appear only when
  the evaluated images are recognisably Kodak (`kodak_mismatch` returns None);
- a curve asked for by name or file (``evaluate.py --compare``) always appears, with a note
  (`dataset_note`) when the data set it states is not recognisably the evaluated one.

Kodak, recognisably: exactly 24 images whose file names (without suffix, any case) are
kodim01 .. kodim24, each 768x512 or 512x768 (W x H). A subset, a superset, crops or rescaled
copies are not Kodak's average.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mracnn_jax.evaluation import results

KODAK_NAMES: tuple[str, ...] = tuple(f"kodim{i:02d}" for i in range(1, 25))
#: (H, W) of a Kodak image: landscape or portrait.
KODAK_SHAPES: frozenset[tuple[int, int]] = frozenset({(512, 768), (768, 512)})
#: The data set of every shipped curve.
SHIPPED_DATASET = "Kodak (24 images)"


class CompareError(ValueError):
    """A reference curve that cannot be used (one line: which file, what is wrong)."""


@dataclasses.dataclass
class Reference:
    """A reference curve: a CompressAI-layout result and where it came from."""

    result: dict[str, Any]
    source: str  # the shipped name or the path given
    shipped: bool
    dataset: str | None  # the data set the curve states (shipped: Kodak); None if unstated

    @property
    def name(self) -> str:
        return str(self.result["name"])


def shipped_names() -> list[str]:
    """Names of the shipped curves (their file stems), sorted."""
    return sorted(p.stem for p in results.published_dir().glob("*.json"))


def load_reference(spec: str | Path) -> Reference:
    """A reference curve from a shipped name (``vtm``) or a CompressAI-layout JSON file.

    The file must hold ``name`` and ``results`` with ``bpp`` and ``psnr-rgb`` lists of equal
    length (``ms-ssim-rgb`` is optional). CompareError otherwise, or for a missing file.
    """
    text = str(spec)
    shipped = not isinstance(spec, Path) and text in shipped_names()
    path = results.published_dir() / f"{text}.json" if shipped else Path(text)
    if not path.is_file():
        raise CompareError(
            f"no such curve file: {text!r} (give a CompressAI results JSON, or a shipped curve: "
            f"{', '.join(shipped_names())})"
        )
    try:
        result = results.read_result_json(path)
    except (TypeError, ValueError) as e:
        why = str(e).removeprefix(f"{path}: ")
        raise CompareError(f"{text!r} is not a CompressAI results JSON: {why}") from None
    res = result["results"]
    if "psnr-rgb" not in res or not res["bpp"]:
        raise CompareError(
            f"curve {result['name']!r} in {text!r} has no bpp and psnr-rgb points to compare with"
        )
    for key in ("bpp", "psnr-rgb", "ms-ssim-rgb"):
        if key in res and not all(_is_number(v) for v in res[key]):
            raise CompareError(f"curve {result['name']!r} in {text!r}: {key} holds a non-number")
    result["name"] = str(result["name"])
    dataset = SHIPPED_DATASET if shipped else result.get("dataset")
    return Reference(result, text, shipped, None if dataset is None else str(dataset))


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def default_published() -> list[Reference]:
    """The shipped curves drawn by default (``results.PUBLISHED``: WACNN and the MRACNN
    paper's Table 3)."""
    return [load_reference(n) for n in results.PUBLISHED]


def kodak_mismatch(names: Sequence[str], shapes: Sequence[Sequence[int]]) -> str | None:
    """None if the images are Kodak's 24 (module docstring), else why not, as a phrase.

    Args:
      names: file names of the images (suffixes and case are ignored).
      shapes: their array shapes, ``(H, W, ...)``, in the same order.
    """
    stems = [Path(n).stem.lower() for n in names]
    if len(stems) != len(KODAK_NAMES) or set(stems) != set(KODAK_NAMES):
        missing = [k for k in KODAK_NAMES if k not in stems]
        extra = sorted({Path(n).name for n, s in zip(names, stems) if s not in KODAK_NAMES})
        parts = [f"{len(stems)} images"]
        if missing:
            shown = ", ".join(missing[:3]) + (", …" if len(missing) > 3 else "")
            parts.append(f"{len(missing)} of kodim01..kodim24 missing ({shown})")
        if extra:
            shown = ", ".join(extra[:3]) + (", …" if len(extra) > 3 else "")
            parts.append(f"others besides them ({shown})")
        return "; ".join(parts)
    for n, shape in zip(names, shapes):
        if (int(shape[0]), int(shape[1])) not in KODAK_SHAPES:
            return f"{Path(n).name} is {shape[1]}x{shape[0]}, not 768x512 or 512x768"
    return None


def states_kodak(dataset: str | None) -> bool:
    """Whether a curve's stated data set is Kodak's 24 images: it names Kodak, and a count of
    images it states (``"(N images"``) is 24."""
    if not dataset or "kodak" not in dataset.lower():
        return False
    counts = re.findall(r"(\d+)\s+images", dataset)
    return all(int(c) == len(KODAK_NAMES) for c in counts)


def dataset_note(ref: Reference, evaluated: str, is_kodak: bool) -> str | None:
    """A one-line note when ``ref`` states a data set that is not recognisably the evaluated
    one (``evaluated``: the evaluation's description of its images; ``is_kodak``: whether they
    are Kodak's 24); None when it matches or the curve states none."""
    if ref.dataset is None or ref.dataset == evaluated:
        return None
    if is_kodak and states_kodak(ref.dataset):
        return None
    return (
        f"note: compared curve {ref.name!r} was measured on {ref.dataset}, not on the evaluated "
        f"images ({evaluated}); its BD-rates compare different image sets"
    )

"""Result files: CompressAI eval JSON, per-image CSV, and a Markdown summary.

The JSON layout is the one CompressAI's `eval_model` writes and the field's plotting scripts
read:

    {"name": str, "description": str,
     "results": {"psnr-rgb": [...], "ms-ssim-rgb": [...], "bpp": [...],
                 "encoding_time": [...], "decoding_time": [...]}}

one list entry per RD point (a model's λ or a codec's quality), each the mean over the image
set. Extra per-point lists (e.g. "quality", "est_bpp", "payload_bpp") and extra top-level keys
(e.g. "compile_time") are allowed and kept; readers look metrics up by name.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
from collections.abc import Iterable, Mapping, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from mracnn_jax.evaluation import bd_rate as bd

#: Keys of the per-point means (as `anchors.summarize` returns them) → CompressAI result keys.
MEAN_TO_RESULT_KEY: dict[str, str] = {
    "psnr": "psnr-rgb",
    "ms_ssim": "ms-ssim-rgb",
    "bpp": "bpp",
    "encode_s": "encoding_time",
    "decode_s": "decoding_time",
}
#: Per-point keys that are derived or bookkeeping and not written to the JSON.
_SKIPPED_MEAN_KEYS = frozenset({"ms_ssim_db", "num_images"})

PUBLISHED = ("wacnn", "mracnn-paper-table3")


def make_result(
    name: str,
    description: str,
    means: Sequence[Mapping[str, Any]],
    **extra: Any,
) -> dict[str, Any]:
    """A CompressAI-layout result dict from per-point means.

    Args:
      name: curve name, e.g. "mracnn-mse" or "jpeg".
      description: what the curve is (settings, checkpoint, source).
      means: one mapping per RD point, ordered as it should be stored, with keys bpp, psnr,
        ms_ssim, encode_s, decode_s (renamed per `MEAN_TO_RESULT_KEY`); any other numeric key
        (e.g. quality, est_bpp) becomes a list of its own name; ms_ssim_db and num_images
        are dropped (ms_ssim_db follows from ms-ssim-rgb).
      extra: extra top-level entries (e.g. compile_time=..., dataset="kodak").
    """
    results: dict[str, list[Any]] = {}
    for m in means:
        for k, v in m.items():
            if k in _SKIPPED_MEAN_KEYS:
                continue
            results.setdefault(MEAN_TO_RESULT_KEY.get(k, k), []).append(_plain(v))
    out: dict[str, Any] = {"name": name, "description": description, "results": results}
    out.update(extra)
    return validate_result(out)


def _plain(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    return v


def validate_result(result: Mapping[str, Any]) -> dict[str, Any]:
    """Check the CompressAI layout: a name, a description, results with a `bpp` list and
    every list as long as it. Returns the result as a dict; TypeError or ValueError otherwise."""
    if not isinstance(result, Mapping):
        raise TypeError(f"a result must be a JSON object, got {type(result).__name__}")
    for key in ("name", "results"):
        if key not in result:
            raise ValueError(
                f"result lacks the {key!r} entry (CompressAI layout: name, description, results)"
            )
    res = result["results"]
    if not isinstance(res, Mapping) or "bpp" not in res:
        raise ValueError(
            f"result {result['name']!r}: 'results' must be an object with a 'bpp' list"
        )
    n = len(res["bpp"])
    for k, v in res.items():
        if not isinstance(v, list):
            raise TypeError(f"result {result['name']!r}: results[{k!r}] must be a list")
        if len(v) != n:
            raise ValueError(
                f"result {result['name']!r}: results[{k!r}] has {len(v)} entries, bpp has {n}"
            )
    out = dict(result)
    out.setdefault("description", "")
    return out


def write_result_json(path: str | Path, result: Mapping[str, Any]) -> Path:
    """Write a result dict (validated) as indented JSON; creates parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(validate_result(result), indent=2) + "\n")
    return path


def read_result_json(path: str | Path) -> dict[str, Any]:
    """Read and validate a CompressAI-layout JSON file."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    try:
        return validate_result(data)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: {e}") from None


def published_dir() -> Path:
    """The folder of published reference results shipped with the package."""
    return Path(str(resources.files("mracnn_jax.evaluation").joinpath("published")))


def load_published(names: Iterable[str] = PUBLISHED) -> list[dict[str, Any]]:
    """Published Kodak results shipped with the package (file stems, default WACNN and the
    MRACNN paper's Table 3). Their `description` credits the source."""
    return [read_result_json(published_dir() / f"{n}.json") for n in names]


def write_records_csv(path: str | Path, records: Sequence[Mapping[str, Any]]) -> Path:
    """Write per-image records (one dict per image and RD point) as CSV. Columns are the union
    of the records' keys in first-seen order; missing values are left empty."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fields: list[str] = []
    for r in records:
        fields.extend(k for k in r if k not in fields)
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=fields)
        w.writeheader()
        for r in records:
            w.writerow({k: _plain(v) for k, v in r.items()})
    return path


def read_records_csv(path: str | Path) -> list[dict[str, Any]]:
    """Read a CSV written by `write_records_csv`; numeric fields come back as int or float."""

    def conv(v: str) -> Any:
        if v == "":
            return None
        for t in (int, float):
            try:
                return t(v)
            except ValueError:
                pass
        return v

    with Path(path).open(newline="") as f:
        return [{k: conv(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _fmt(v: Any, spec: str) -> str:
    if v is None or (isinstance(v, float) and not math.isfinite(v)):
        return "–"
    return format(v, spec)


def markdown_summary(
    results: Sequence[Mapping[str, Any]],
    anchor: Mapping[str, Any] | str | None = None,
    title: str | None = None,
) -> str:
    """A short Markdown report: one table of RD points per curve (labelled by the results'
    "quality" or "point" list, else numbered; mean bpp (file), payload bpp (strings only, as
    CompressAI counts; – for results without it), PSNR-RGB, MS-SSIM dB, encode/decode
    seconds) and, given an anchor (a result or the name of one in
    `results`), a table of BD-rates (PSNR and MS-SSIM dB, PCHIP; negative = fewer bits) and one
    of every point's PSNR against the anchor's at the point's rate."""
    lines: list[str] = []
    if title:
        lines += [f"# {title}", ""]
    lines += [
        "| curve | point | bpp | payload bpp | PSNR (dB) | MS-SSIM (dB) | enc (s) | dec (s) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in results:
        res = r["results"]
        n = len(res["bpp"])
        ms = res.get("ms-ssim-rgb")
        labels = res.get("quality", res.get("point", [None] * n))
        for i in range(n):
            msdb = None
            if ms is not None and ms[i] is not None and ms[i] < 1:
                msdb = -10.0 * math.log10(1.0 - ms[i])
            q = labels[i]
            lines.append(
                "| {} | {} | {} | {} | {} | {} | {} | {} |".format(
                    r["name"],
                    i + 1 if q is None else q,
                    _fmt(res["bpp"][i], ".4f"),
                    _fmt(res.get("payload_bpp", [None] * n)[i], ".4f"),
                    _fmt(res.get("psnr-rgb", [None] * n)[i], ".2f"),
                    _fmt(msdb, ".2f"),
                    _fmt(res.get("encoding_time", [None] * n)[i], ".3f"),
                    _fmt(res.get("decoding_time", [None] * n)[i], ".3f"),
                )
            )
    if anchor is not None:
        if isinstance(anchor, str):
            found = [r for r in results if r["name"] == anchor]
            if not found:
                raise ValueError(f"anchor {anchor!r} is not among the results")
            anchor = found[0]
        others = [r for r in results if r is not anchor]
        # Partial overlaps are flagged in the table (†) rather than warned about.
        table = bd.bd_rate_table(others, dict(anchor), min_overlap=0.0)
        lines += [
            "",
            f"BD-rate against {anchor['name']} (PCHIP; negative = fewer bits):",
            "",
            "| curve | BD-rate PSNR (%) | BD-rate MS-SSIM dB (%) |",
            "|---|---:|---:|",
        ]
        flagged = False
        for r in others:
            cells = []
            for m in bd.METRICS:
                v = table[r["name"]][m]
                cell = _fmt(v, "+.2f")
                if (
                    math.isfinite(v)
                    and bd.overlap_fraction(bd.curve(anchor, m)[1], bd.curve(r, m)[1]) < 0.75
                ):
                    cell += " †"
                    flagged = True
                cells.append(cell)
            lines.append(f"| {r['name']} | {cells[0]} | {cells[1]} |")
        if flagged:
            note = (
                "† the quality ranges overlap by less than 75 % of their union; the BD-rate "
                "covers only the common range."
            )
            lines += ["", note]
        lines += _points_against(others, anchor)
    return "\n".join(lines) + "\n"


def _points_against(others: Sequence[Mapping[str, Any]], anchor: Mapping[str, Any]) -> list[str]:
    """A table of every PSNR point of ``others`` against the anchor's PSNR at the point's own rate
    (`bd_rate.quality_at_rate`; – outside the anchor's rates)."""
    name = anchor["name"]
    intro = (
        f"Each point against {name} at the point's own rate (PSNR; {name}'s PCHIP in ln rate, – "
        "outside its rates). A BD-rate also interpolates between a curve's points; these are the "
        "points themselves:"
    )
    lines = [
        "",
        intro,
        "",
        f"| curve | point | bpp | PSNR (dB) | {name} (dB) | difference (dB) |",
        "|---|---:|---:|---:|---:|---:|",
    ]
    for r in others:
        res = r["results"]
        psnr = res.get("psnr-rgb")
        if psnr is None:
            continue
        labels = res.get("quality", res.get("point", [None] * len(psnr)))
        for i, (bpp, d) in enumerate(zip(res["bpp"], psnr, strict=True)):
            ref = None
            if bpp is not None and d is not None and bpp > 0:
                with contextlib.suppress(KeyError, TypeError, ValueError):  # an anchor lacking PSNR
                    ref = bd.quality_at_rate(dict(anchor), bpp, "psnr")
            label = i + 1 if labels[i] is None else labels[i]
            diff = None if ref is None else d - ref
            lines.append(
                f"| {r['name']} | {label} | {_fmt(bpp, '.4f')} | {_fmt(d, '.2f')} | "
                f"{_fmt(ref, '.2f')} | {_fmt(diff, '+.2f')} |"
            )
    return lines


def write_markdown_summary(
    path: str | Path,
    results: Sequence[Mapping[str, Any]],
    anchor: Any = None,
    title: str | None = None,
) -> Path:
    """Write `markdown_summary(...)` to `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(markdown_summary(results, anchor, title))
    return path

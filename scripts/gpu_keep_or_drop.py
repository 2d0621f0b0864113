"""Decide, for each run of scripts/gpu_train_bundled.sh, whether its model is kept.

    python scripts/gpu_keep_or_drop.py WORK [Q ...]        (default Q: 1 2 3)

Reads WORK/qQ/ (config.json, metrics.jsonl, mracnn-bundled-qQ.mracnn) and WORK/qQ.rc (train.py's
exit status). A model is KEPT only when all of these hold:

* train.py exited with status 0 and exported the model file;
* no training record has a NaN/Inf (``null`` in metrics.jsonl) loss, bpp or MSE;
* every parameter of the exported (float16) file is finite (and the file's digest checks out);
* validation ran at step 0 (``train.eval_at_start``: the starting weights) and at the end, and
  the end's validation RD loss (λ·255²·MSE + bpp, the training loss's formula on the held-out
  crops) is lower than the start's.

Prints a summary per quality (start and end validation loss, bpp and PSNR, steps, steps/s, KEEP or
DROP and why), writes WORK/decisions.json and WORK/keep.txt (the kept qualities, one a line).
Reads the model files with ``mracnn_jax``: installed, or on ``PYTHONPATH`` (gpu_train_bundled.sh
runs this from the repository root with ``PYTHONPATH=.``).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

import numpy as np

from mracnn_jax.model_file import flatten_params, load_model
from mracnn_jax.training.run_log import METRICS_FILE, read_metrics


def _finite(v) -> bool:
    return isinstance(v, (int, float)) and math.isfinite(v)


def decide(work: Path, q: int) -> dict:
    wd = work / f"q{q}"
    d: dict = {"quality": q, "keep": False, "reasons": []}
    rc_file = work / f"q{q}.rc"
    d["exit_status"] = int(rc_file.read_text().strip()) if rc_file.exists() else None
    try:
        cfg = json.loads((wd / "config.json").read_text())
        d["lmbda"] = cfg["train"]["lmbda"]
    except (OSError, ValueError, KeyError):
        d["lmbda"] = None
    train, evals = [], []
    if (wd / METRICS_FILE).exists():
        history = read_metrics(wd)
        train, evals = history.train, history.eval
        if history.unreadable:
            d["reasons"].append(f"{history.unreadable} unreadable lines in {METRICS_FILE}")
    else:
        d["reasons"].append(f"no {METRICS_FILE}")

    if d["exit_status"] != 0:
        d["reasons"].append(f"train.py exit status {d['exit_status']}")
    bad = [r["step"] for r in train if not all(_finite(r.get(k)) for k in ("loss", "bpp", "mse"))]
    if bad:
        d["reasons"].append(f"non-finite training loss at step {bad[0]}")
    d["steps"] = train[-1]["step"] if train else 0
    if len(train) >= 2 and train[-1]["time"] > train[0]["time"]:
        # From the first logged step (compilation done) to the last.
        d["steps_per_s"] = (train[-1]["step"] - train[0]["step"]) / (
            train[-1]["time"] - train[0]["time"]
        )
    else:  # one logged window: its rate includes the compilation
        d["steps_per_s"] = None

    start = next((r for r in evals if r["step"] == 0), None)
    end = evals[-1] if evals and evals[-1]["step"] > 0 else None
    d["start"], d["end"] = start, end
    if start is None or not _finite(start.get("loss")):
        d["reasons"].append("no finite validation at step 0")
    if end is None or not _finite(end.get("loss")):
        d["reasons"].append("no finite validation at the end")
    elif end["step"] != d["steps"]:
        d["reasons"].append(f"the last validation is at step {end['step']}, not {d['steps']}")

    model = wd / f"mracnn-bundled-q{q}.mracnn"
    d["model"] = str(model) if model.exists() else None
    if model.exists():
        try:
            _, params, meta = load_model(str(model))
            flat = flatten_params(params)
            nonfinite = [p for p, a in sorted(flat.items()) if not np.all(np.isfinite(a))]
            if nonfinite:
                d["reasons"].append(f"non-finite parameters in the file: {nonfinite[0]}, ...")
            if meta.get("step") != d["steps"]:
                d["reasons"].append(f"the file is of step {meta.get('step')}, not {d['steps']}")
        except Exception as e:  # noqa: BLE001 - any failure to read the file drops it
            d["reasons"].append(f"model file unreadable: {type(e).__name__}: {e}")
    else:
        d["reasons"].append("no model file")

    if not d["reasons"]:
        if end["loss"] < start["loss"]:
            d["keep"] = True
        else:
            d["reasons"].append("validation loss not lower than at the start")
    return d


def _row(name: str, r: dict | None) -> str:
    if r is None:
        return f"    {name:<16} -"
    loss, bpp, psnr = (r.get(k) if _finite(r.get(k)) else math.nan for k in ("loss", "bpp", "psnr"))
    return f"    {name:<16} loss {loss:.4f}   bpp {bpp:.4f}   PSNR {psnr:.2f} dB"


def main(argv: list[str]) -> int:
    if not argv:
        print(__doc__, file=sys.stderr)
        return 2
    work = Path(argv[0])
    qs = [int(a) for a in argv[1:]] or [1, 2, 3]
    decisions = [decide(work, q) for q in qs]
    for d in decisions:
        sps = f"{d['steps_per_s']:.2f}" if _finite(d["steps_per_s"]) else "? (one log point)"
        verdict = "KEEP" if d["keep"] else "DROP"
        print(
            f"q{d['quality']} (lambda {d['lmbda']}): {verdict}: {d['steps']} steps at {sps} "
            f"steps/s, train.py exit status {d['exit_status']}"
        )
        print(_row("start (step 0)", d["start"]))
        end_name = f"end (step {d['end']['step']})" if d["end"] else "end"
        line = _row(end_name, d["end"])
        if (
            d["start"]
            and d["end"]
            and _finite(d["start"].get("loss"))
            and _finite(d["end"].get("loss"))
        ):
            line += f"   ({100 * (d['end']['loss'] / d['start']['loss'] - 1):+.2f} % loss)"
        print(line)
        for reason in d["reasons"]:
            print(f"    why dropped: {reason}")
    (work / "decisions.json").write_text(json.dumps(decisions, indent=1, default=str) + "\n")
    (work / "keep.txt").write_text("".join(f"{d['quality']}\n" for d in decisions if d["keep"]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Training and validation curves of one or more training runs, as one PNG.

    python scripts/plot_training.py RUN[=LABEL] ... --out curves.png [--smooth 20]
        [--export DIR]

RUN is a work directory (its ``metrics.jsonl``) or a ``.jsonl`` file of the same records (e.g. one
written by ``--export``). Each run's history is read with
``mracnn_jax.training.run_log.read_metrics``, so resumed sittings appear once.

Left panel: the training RD loss (λ·255²·MSE + bpp, the mean of each logged window) as a moving
average over ``--smooth`` logged windows, and the validation RD loss (held-out crops, the same
formula) as markers, against the step. Each series is drawn relative to its own first value
(training: the first full moving average, where its line starts; validation: the first
validation), in per cent, so
that runs at different λ share the axes and a gain of 1 % reads the same for all.
Right panel: each run's validation points in the rate–distortion plane (estimated bpp, PSNR),
joined in step order, the last one ringed: a run that improves moves up and to the left.

The training records of ``train.cooldown_steps``' branches are not drawn (a few noisy windows
each); the validation that follows a branch is, at the step of the checkpoint it left from.

``--export DIR`` also writes ``DIR/LABEL.jsonl``: the run's history with only the fields drawn
(step, split, loss, bpp, psnr, lr), small enough to keep beside the plot in the repository.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from mracnn_jax.training.run_log import METRICS_FILE, RunMetrics, read_metrics

#: The fields ``--export`` keeps of each record.
EXPORTED = ("step", "split", "loss", "bpp", "psnr", "lr")


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Mean of the last ``window`` values at each position (fewer at the start); NaN ignored."""
    values = np.asarray(values, dtype=np.float64)
    finite = np.isfinite(values)
    sums = np.cumsum(np.where(finite, values, 0.0))
    counts = np.cumsum(finite)
    lo = np.arange(len(values)) - window
    take = lo >= 0
    sums[window:] -= sums[lo[take]]
    counts[window:] -= counts[lo[take]]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


def _series(records: list[dict], key: str) -> tuple[np.ndarray, np.ndarray]:
    steps = np.array([r["step"] for r in records], dtype=np.float64)
    vals = np.array([r.get(key) if r.get(key) is not None else np.nan for r in records], float)
    return steps, vals


def _relative(values: np.ndarray, start: int) -> np.ndarray:
    """``values`` in per cent of change from ``values[start]``."""
    return 100.0 * (values / values[start] - 1.0)


def draw(runs: list[tuple[str, RunMetrics]], out: Path, smooth: int) -> None:
    fig = Figure(figsize=(12, 4.8))
    FigureCanvasAgg(fig)
    ax_loss, ax_rd = fig.subplots(1, 2)
    colours = [f"C{i % 10}" for i in range(len(runs))]
    for (label, run), colour in zip(runs, colours):
        if run.train:
            steps, loss = _series(run.train, "loss")
            first = min(smooth, len(loss)) - 1  # the first full window
            mean = moving_average(loss, smooth)[first:]
            ax_loss.plot(
                steps[first:], _relative(mean, 0), color=colour, lw=1.2, label=f"{label}: training"
            )
        if run.eval:
            steps, loss = _series(run.eval, "loss")
            ax_loss.plot(
                steps,
                _relative(loss, 0),
                "o",
                color=colour,
                mec="black",
                mew=0.5,
                ms=6,
                label=f"{label}: validation",
            )
            _, bpp = _series(run.eval, "bpp")
            _, psnr = _series(run.eval, "psnr")
            ax_rd.plot(bpp, psnr, "-o", color=colour, ms=4, label=label)
            ax_rd.plot(bpp[-1:], psnr[-1:], "o", color=colour, mfc="none", mec="black", ms=10)
    ax_loss.set_xlabel("step")
    ax_loss.set_ylabel("RD loss λ·255²·MSE + bpp, change from its start (%)")
    ax_loss.set_title(f"training (moving average of {smooth} log windows) and validation")
    ax_loss.grid(True, which="both", alpha=0.3)
    ax_loss.legend(fontsize=7)
    ax_rd.set_xlabel("estimated bpp (validation)")
    ax_rd.set_ylabel("PSNR (dB, validation)")
    ax_rd.set_title("validation points in step order (last one ringed)")
    ax_rd.grid(True, alpha=0.3)
    ax_rd.legend(fontsize=8)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=110)


def export(run: RunMetrics, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as f:
        records = run.eval + run.train + run.cooldown
        for rec in sorted(records, key=lambda r: (r["step"], r["split"])):
            kept = {k: rec[k] for k in EXPORTED if k in rec}
            kept.update({k: float(f"{v:.6g}") for k, v in kept.items() if isinstance(v, float)})
            f.write(json.dumps(kept) + "\n")


def _parse_run(arg: str) -> tuple[str, Path]:
    path, _, label = arg.partition("=")
    p = Path(path)
    return (label or (p.stem if p.suffix == ".jsonl" else p.name)), p


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", metavar="RUN[=LABEL]")
    ap.add_argument("--out", type=Path, required=True, help="the PNG to write")
    ap.add_argument("--smooth", type=int, default=20, help="logged windows per moving average")
    ap.add_argument("--export", type=Path, metavar="DIR", help="also write DIR/LABEL.jsonl")
    args = ap.parse_args(argv)
    if args.smooth < 1:
        ap.error("--smooth must be at least 1")
    runs = []
    for arg in args.runs:
        label, path = _parse_run(arg)
        file = path / METRICS_FILE if path.is_dir() else path
        if not file.is_file():
            ap.error(f"{arg}: no {METRICS_FILE} there")
        run = read_metrics(file)
        if not run.train and not run.eval:
            ap.error(f"{arg}: no training or validation records in {file}")
        runs.append((label, run))
        if args.export:
            export(run, args.export / f"{label}.jsonl")
        last = run.eval[-1] if run.eval else None
        print(
            f"{label}: {len(run.train)} training records up to step "
            f"{run.train[-1]['step'] if run.train else '-'}, {len(run.eval)} validations"
            + (
                f", the last at step {last['step']}: loss {last['loss']:.4f}, "
                f"{last['bpp']:.4f} bpp, {last['psnr']:.2f} dB"
                if last
                else ""
            )
            + (f"; {run.unreadable} unreadable lines skipped" if run.unreadable else "")
        )
    draw(runs, args.out, args.smooth)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

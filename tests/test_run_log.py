"""metrics.jsonl read back as a run's history (``run_log.read_metrics``), and the training-curve
plot built on it (``scripts/plot_training.py``)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mracnn_jax.training.run_log import read_metrics

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
import plot_training  # a script, imported for its functions


def _write(path: Path, records: list[dict], tail: str = "") -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + tail)


def _sitting(steps, split, offset=0.0):
    return [{"step": s, "split": split, "loss": float(s) + offset} for s in steps]


def test_a_resumed_sitting_replaces_what_it_logged_again(tmp_path):
    # First sitting: validation at 0, training logged to 50, killed after its checkpoint at 30
    # (the line being written when it died is cut). Second sitting: validation again at 30
    # (eval_at_start), training 40..80 logged again from the checkpoint, validation at the end.
    first = _sitting([0], "eval") + _sitting(range(10, 60, 10), "train")
    second = _sitting([30], "eval", 0.5) + _sitting(range(40, 90, 10), "train", 0.5)
    second += _sitting([80], "eval", 0.5)
    _write(tmp_path / "metrics.jsonl", first, tail='{"step": 50, "spl')
    with (tmp_path / "metrics.jsonl").open("a") as f:
        f.write("\n" + "".join(json.dumps(r) + "\n" for r in second))
    run = read_metrics(tmp_path)  # the work directory or the file
    assert run.unreadable == 1
    assert [r["step"] for r in run.train] == [10, 20, 30, 40, 50, 60, 70, 80]
    assert [r["loss"] for r in run.train] == [10, 20, 30, 40.5, 50.5, 60.5, 70.5, 80.5]
    assert [(r["step"], r["loss"]) for r in run.eval] == [(0, 0.0), (30, 30.5), (80, 80.5)]
    assert read_metrics(tmp_path / "metrics.jsonl") == run


def test_moving_average_matches_a_loop():
    rng = np.random.default_rng(0)
    values = rng.standard_normal(57)
    values[[3, 20, 21]] = np.nan  # a non-finite loss is logged as null and skipped
    for window in (1, 5, 13, 100):
        naive = []
        for i in range(len(values)):
            w = values[max(0, i - window + 1) : i + 1]
            w = w[np.isfinite(w)]
            naive.append(w.mean() if len(w) else np.nan)
        np.testing.assert_allclose(plot_training.moving_average(values, window), naive, rtol=1e-12)


def test_plot_script_draws_and_exports_the_history(tmp_path):
    wd = tmp_path / "wd"
    wd.mkdir()
    rng = np.random.default_rng(1)
    train = [
        {
            "step": s,
            "split": "train",
            "loss": 2 - s / 100 + 0.1 * rng.random(),
            "bpp": 0.5,
            "psnr": 30.0,
            "lr": 1e-4,
            "time": 1.0,
        }
        for s in range(10, 110, 10)
    ]
    evals = [
        {"step": s, "split": "eval", "loss": loss, "bpp": bpp, "psnr": psnr, "ms_ssim": 0.9}
        for s, loss, bpp, psnr in ((0, 2.0, 0.6, 29.0), (100, 1.5, 0.55, 29.5))
    ]
    _write(wd / "metrics.jsonl", evals[:1] + train + evals[1:])
    out, exported = tmp_path / "curves.png", tmp_path / "logs"
    cmd = [
        sys.executable,
        str(REPO / "scripts" / "plot_training.py"),
        f"{wd}=q9",
        "--out",
        str(out),
        "--smooth",
        "3",
        "--export",
        str(exported),
    ]
    res = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, check=True)
    assert "q9: 10 training records up to step 100, 2 validations" in res.stdout
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    back = read_metrics(exported / "q9.jsonl")  # the export reads back as the same history
    assert [r["step"] for r in back.train] == list(range(10, 110, 10))
    assert [r["loss"] for r in back.eval] == [2.0, 1.5]
    assert set(back.train[0]) == {"step", "split", "loss", "bpp", "psnr", "lr"}
    # A second plot from the exported file alone.
    plot_training.main([str(exported / "q9.jsonl"), "--out", str(tmp_path / "again.png")])
    assert (tmp_path / "again.png").stat().st_size > 1000


def test_plot_script_refuses_a_folder_without_metrics(tmp_path, capsys):
    with pytest.raises(SystemExit):
        plot_training.main([str(tmp_path), "--out", str(tmp_path / "x.png")])
    assert "no metrics.jsonl there" in capsys.readouterr().err

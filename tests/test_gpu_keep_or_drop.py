"""scripts/gpu_keep_or_drop.py: which models a GPU lease brings back. A model comes back only if
its run ended cleanly, nothing in it is NaN/Inf and its validation RD loss went down; and which
file each quality of a lease starts from."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mracnn_jax import model_file

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))
import gpu_keep_or_drop  # a script, imported for its functions


def _run(work: Path, q: int, *, end_loss=1.8, train_loss=1.9, param=0.5, rc=0, file_step=20):
    """A finished run of gpu_train_bundled.sh for quality q: 20 steps, validation at 0 and 20."""
    wd = work / f"q{q}"
    wd.mkdir(parents=True)
    (work / f"q{q}.rc").write_text(f"{rc}\n")
    (wd / "config.json").write_text(json.dumps({"train": {"lmbda": 0.01 * q}}))
    recs = [{"step": 0, "split": "eval", "loss": 2.0, "bpp": 0.6, "psnr": 29.0}]
    recs += [
        {
            "step": s,
            "split": "train",
            "loss": train_loss if s == 10 else 1.9,
            "bpp": 0.5,
            "mse": 1e-3,
            "time": float(s),
        }
        for s in (5, 10, 15, 20)
    ]
    recs += [{"step": 20, "split": "eval", "loss": end_loss, "bpp": 0.58, "psnr": 29.3}]
    # metrics.jsonl writes non-finite values as null
    text = "".join(
        json.dumps(
            {
                k: (None if isinstance(v, float) and not math.isfinite(v) else v)
                for k, v in r.items()
            }
        )
        + "\n"
        for r in recs
    )
    (wd / "metrics.jsonl").write_text(text)
    params = {"g_a": {"kernel": np.full((3, 3), param, np.float32)}}
    model_file.save_model(
        wd / f"mracnn-bundled-q{q}.mracnn",
        {"name": "t"},
        params,
        metadata={"step": file_step},
        dtype="float16",
    )


def test_keeps_only_sane_improved_models(tmp_path, capsys):
    _run(tmp_path, 1)
    _run(tmp_path, 2, train_loss=math.nan)
    _run(tmp_path, 3, end_loss=2.1)
    _run(tmp_path, 4, param=math.inf)
    _run(tmp_path, 5, rc=1)
    _run(tmp_path, 6, file_step=15)
    assert gpu_keep_or_drop.main([str(tmp_path), "1", "2", "3", "4", "5", "6"]) == 0
    assert (tmp_path / "keep.txt").read_text() == "1\n"
    decisions = {d["quality"]: d for d in json.loads((tmp_path / "decisions.json").read_text())}
    assert decisions[1]["keep"] and decisions[1]["reasons"] == []
    assert decisions[1]["steps_per_s"] == 1.0 and decisions[1]["lmbda"] == 0.01
    assert decisions[2]["reasons"] == ["non-finite training loss at step 10"]
    assert decisions[3]["reasons"] == ["validation loss not lower than at the start"]
    assert decisions[4]["reasons"] == ["non-finite parameters in the file: g_a/kernel, ..."]
    assert decisions[5]["reasons"] == ["train.py exit status 1"]
    assert decisions[6]["reasons"] == ["the file is of step 15, not 20"]
    out = capsys.readouterr().out
    assert "q1 (lambda 0.01): KEEP: 20 steps at 1.00 steps/s" in out
    assert "(-10.00 % loss)" in out


def test_a_run_without_a_log_or_file_is_dropped(tmp_path):
    (tmp_path / "q1").mkdir()
    d = gpu_keep_or_drop.decide(tmp_path, 1)
    assert not d["keep"]
    assert "no metrics.jsonl" in d["reasons"] and "no model file" in d["reasons"]


def test_a_lease_starts_a_new_quality_from_its_bundled_neighbour(bundled_quality_lambdas):
    """gpu_train_bundled.sh's λ and start file per quality: a bundled quality from its own file,
    q0 and q4 (not bundled yet) from the bundled quality nearest in ln λ; λ rises with quality."""
    from mracnn_jax.configs import bundled

    assert bundled.QUALITY_LAMBDAS == bundled_quality_lambdas
    assert {q: bundled.start_quality(q) for q in range(5)} == {0: 1, 1: 1, 2: 2, 3: 3, 4: 3}
    lambdas = [bundled.quality_lambda(q) for q in range(5)]
    assert lambdas == sorted(lambdas) and len(set(lambdas)) == 5
    assert not set(bundled.NEW_QUALITY_LAMBDAS) & set(bundled.QUALITY_LAMBDAS)
    with pytest.raises(ValueError, match=r"^no quality 5: the qualities are \[0, 1, 2, 3, 4\]$"):
        bundled.start_quality(5)


def _lease_script(cwd: Path, qualities: str, *args: str):
    env = dict(os.environ, QUALITIES=qualities, PYTHON=sys.executable, WORK=str(cwd / "work"))
    return subprocess.run(
        ["bash", str(REPO / "scripts" / "gpu_train_bundled.sh"), *args],
        check=False,
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_the_lease_refuses_a_bad_quality_list_in_one_line(tmp_path):
    cases = {"2 2": "names a quality twice", "0 5": "no quality 5", "0 1 2 3": "one to three"}
    for qualities, message in cases.items():
        done = _lease_script(tmp_path, qualities, "data", "out", "10")
        assert done.returncode == 1 and message in done.stderr, qualities
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert not (tmp_path / "work").exists(), qualities  # refused before any work


def test_a_lease_whose_runs_all_fail_exits_1_with_its_summary_where_the_caller_said(tmp_path):
    """Relative folders are the caller's; every train.py failing (here: no data) is exit status 1,
    with summary.txt and the logs written all the same."""
    done = _lease_script(tmp_path, "1", "nodata", "out", "10")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "q1: train.py exit status 1" in done.stdout
    assert {p.name for p in (tmp_path / "out").iterdir()} == {"summary.txt", "logs.tar.gz"}
    assert "drop" in (tmp_path / "out" / "summary.txt").read_text()

"""benchmarks/bench_optimizer_compile.py: both layouts measured, the per-leaf reference first, and
the ratios of the flat one's times to the reference's; a failed layout gives no ratio and exit 1."""

from __future__ import annotations

import json
import pathlib

import pytest
from load_script import load_script  # a sibling helper module

REPO = pathlib.Path(__file__).resolve().parents[1]


def _bench(monkeypatch, rows_by_layout):
    bench = load_script(REPO / "benchmarks" / "bench_optimizer_compile.py")
    calls = []

    def run_one(flag, args, timeout):
        calls.append((flag, args))
        layout = args[args.index("--optimizer") + 1]
        return dict(rows_by_layout[layout])

    monkeypatch.setattr(bench, "run_one", run_one)
    return bench, calls


ROWS = {
    "per-leaf": {"lower_s": 30.0, "compile_s": 50.0, "seconds_per_step": 0.8, "loss": 3.0},
    "flat": {"lower_s": 20.0, "compile_s": 30.0, "seconds_per_step": 0.6, "loss": 3.0},
}


def test_both_layouts_in_fresh_processes_and_their_ratios(monkeypatch, tmp_path, capsys):
    bench, calls = _bench(monkeypatch, ROWS)
    out = tmp_path / "rows.json"
    argv = ["bench", "--config", "small", "--steps", "2", "--json", str(out)]
    monkeypatch.setattr("sys.argv", argv)
    assert bench.main() == 0
    assert [a[a.index("--optimizer") + 1] for _, a in calls] == ["per-leaf", "flat"]
    assert all(flag == "" and a[:2] == ["--config", "small"] for flag, a in calls)
    rows = json.loads(out.read_text())
    assert bench.ratios(rows) == pytest.approx(
        {"lower": 2 / 3, "compile": 0.6, "lower+compile": 50 / 80, "step": 0.75}
    )
    assert (
        "flat / per-leaf: lower 0.67x, compile 0.60x, lower+compile 0.62x"
        in capsys.readouterr().out
    )


def test_a_failed_layout_gives_no_ratio(monkeypatch, capsys):
    bench, _ = _bench(monkeypatch, {**ROWS, "flat": {"error": "out of memory"}})
    monkeypatch.setattr("sys.argv", ["bench"])
    assert bench.main() == 1
    assert "flat: failed: out of memory" in capsys.readouterr().out

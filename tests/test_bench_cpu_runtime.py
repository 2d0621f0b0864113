"""benchmarks/bench_cpu_runtime.py: each runtime's flag reaches its own process, and a failure or
a timeout is a row that says so, never a crash."""

from __future__ import annotations

import pathlib

from load_script import load_script  # a sibling helper module

REPO = pathlib.Path(__file__).resolve().parents[1]
STAND_IN = """
import json, os, sys, time
if "--fail" in sys.argv:
    sys.exit("bench: the step could not be built")
if "--slow" in sys.argv:
    time.sleep(30)
print("compiling...")
print(json.dumps({"xla_flags": os.environ["XLA_FLAGS"], "platforms": os.environ["JAX_PLATFORMS"],
                  "args": sys.argv[1:]}))
"""


def _bench(tmp_path, monkeypatch):
    bench = load_script(REPO / "benchmarks" / "bench_cpu_runtime.py")
    stand_in = tmp_path / "bench_train_step.py"
    stand_in.write_text(STAND_IN)
    monkeypatch.setattr(bench, "STEP_BENCHMARK", stand_in)
    monkeypatch.setenv("XLA_FLAGS", "--xla_backend_optimization_level=0")
    return bench


def test_each_runtime_gets_its_flag_beside_the_callers(tmp_path, monkeypatch):
    bench = _bench(tmp_path, monkeypatch)
    rows = {
        name: bench.run_one(flag, ["--steps", "3"], 60) for name, flag in bench.RUNTIMES.items()
    }
    default, older = rows["thunk (default)"], rows["whole-program"]
    assert default["xla_flags"] == "--xla_backend_optimization_level=0"
    assert older["xla_flags"].split() == [
        "--xla_backend_optimization_level=0",
        "--xla_cpu_use_thunk_runtime=false",
    ]
    assert default["platforms"] == older["platforms"] == "cpu"
    assert default["args"] == older["args"] == ["--steps", "3"]


def test_a_failure_or_a_timeout_is_a_row(tmp_path, monkeypatch):
    bench = _bench(tmp_path, monkeypatch)
    assert bench.run_one("", ["--fail"], 60) == {"error": "bench: the step could not be built"}
    row = bench.run_one("", ["--slow"], 1)
    assert row == {"error": "no result within 1 s (compilation and steps)"}

"""``mracnn train`` and ``mracnn evaluate``, the presets behind ``--config``, and ``train.py``.

The training runs here swap the preset's model for tiny_training's ``TinyCodec`` (the loop, the
config handling and the outputs are the real ones), so that they take seconds; the real small
model is trained by ``mracnn train`` in test_wheel.py.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cli_stand_in import error_line  # a sibling helper module
from tiny_training import TinyCodec, write_images  # a sibling helper module

from mracnn_jax import cli, config_files, configs

REPO = Path(__file__).resolve().parents[1]


def test_every_preset_loads_by_name_and_path_alike():
    for name in configs.PRESETS:
        by_name = config_files.load_config(name)
        by_path = config_files.load_config(str(configs.preset_path(name)))
        assert by_name.to_dict() == by_path.to_dict(), name
        assert {"model", "train", "data"} <= set(by_name), name


def test_overrides_are_parsed_as_train_py_parses_them():
    config = config_files.load_config(
        "small", ["--config.train.lmbda=0.05", "--config.train.lr_decay_at=(0.5,)"]
    )
    assert config.train.lmbda == 0.05 and tuple(config.train.lr_decay_at) == (0.5,)
    with pytest.raises(ValueError, match=r"unknown config field train\.lmbdaa \(did you mean"):
        config_files.load_config("small", ["--config.train.lmbdaa=1"])
    with pytest.raises(ValueError, match="could not convert"):
        config_files.load_config("small", ["--config.train.lmbda=abc"])
    assert config_files.expand_preset_flag(["t.py", "--config=small", "--config", "wacnn"]) == [
        "t.py",
        f"--config={configs.preset_path('small')}",
        "--config",
        str(configs.preset_path("wacnn")),
    ]


@pytest.fixture()
def tiny_model(monkeypatch):
    """The preset's model replaced by TinyCodec in the training loop."""
    from mracnn_jax.training import train_lib

    monkeypatch.setattr(train_lib, "build_model", lambda cfg: TinyCodec())


def test_train_with_a_preset_data_folder_and_overrides_runs(tmp_path, tiny_model, capsys):
    write_images(tmp_path / "photos", 6, seed=3)
    wd = tmp_path / "wd"
    argv = [
        "train", "--config", "small", "--workdir", str(wd), "--data", str(tmp_path / "photos"),
        "--val-data", "none", "--config.train.num_steps=2", "--config.train.batch_size", "2",
        "--config.train.checkpoint_every=2", "--config.train.log_every=1",
        "--config.train.export_name=",
    ]  # fmt: skip
    assert cli.main(argv) == 0
    out = capsys.readouterr()
    assert f"{wd}: trained to step 2 (config small)" in out.out
    assert "compiling the training step" in out.err and "steps/s=" in out.err
    saved = json.loads((wd / "config.json").read_text())
    assert saved["train"]["num_steps"] == 2 and saved["train"]["batch_size"] == 2
    assert saved["data"]["train_dirs"] == [str(tmp_path / "photos")]
    assert saved["model"]["name"] == config_files.load_config("small").model.name
    assert (wd / "checkpoints" / "2").is_dir() and list((wd / "tb").iterdir())


@pytest.mark.parametrize(
    "args, message",
    [
        (["--data", "NOWHERE"], "data.train_dirs: image folder"),
        (["--data", "EMPTY"], "data.train_dirs: no .png"),
        (["--data", "EMPTY", "--config.train.lmbdaa=1"], "unknown config field train.lmbdaa"),
        (["--data", "EMPTY", "--config.data.val_dir=x", "stray"], "unrecognised argument 'stray'"),
    ],
)
def test_train_errors_are_one_line_within_a_second_and_make_no_workdir(
    tmp_path, capsys, args, message
):
    (tmp_path / "EMPTY").mkdir()
    args = [str(tmp_path / a) if a in ("NOWHERE", "EMPTY") else a for a in args]
    wd = tmp_path / "wd"
    t0 = time.perf_counter()
    code = cli.main(["train", "--config", "small", "--workdir", str(wd), *args])
    assert code in (1, 2) and time.perf_counter() - t0 < 1.0
    assert message in error_line(capsys)
    assert not wd.exists()


def test_train_with_an_unknown_preset_lists_the_presets(tmp_path, capsys):
    assert cli.main(["train", "--config", "smal", "--workdir", str(tmp_path / "wd")]) == 1
    line = error_line(capsys)
    assert "'smal' is neither a preset nor a file" in line and ", small)" in line, line


def test_help_lists_train_evaluate_and_the_presets(capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--help"])
    assert e.value.code == 0
    top = capsys.readouterr().out
    assert "train" in top and "evaluate" in top
    with pytest.raises(SystemExit) as e:
        cli.main(["train", "--help"])
    assert e.value.code == 0
    text = capsys.readouterr().out
    assert text.startswith("usage: mracnn train") and all(p in text for p in configs.PRESETS)


def test_evaluate_runs_evaluate_py_under_its_name(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["evaluate", "--help"])
    assert e.value.code == 0
    assert capsys.readouterr().out.startswith("usage: mracnn evaluate")
    missing = str(tmp_path / "missing.mracnn")
    assert cli.main(["evaluate", "--model", missing, "--out", str(tmp_path / "out")]) == 1
    assert "missing.mracnn" in error_line(capsys, "mracnn evaluate")


def test_train_py_takes_a_preset_name_and_says_what_is_wrong_in_one_line(tmp_path):
    wd = tmp_path / "wd"
    proc = subprocess.run(
        [sys.executable, str(REPO / "train.py"), "--config=small", f"--workdir={wd}",
         f"--config.data.val_dir={tmp_path / 'nowhere'}"],
        check=False, capture_output=True, text=True, cwd=tmp_path, timeout=120,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("train.py: error: data.val_dir:"), proc.stderr
    assert not wd.exists()


def test_an_interrupted_run_is_one_line_and_the_signal_s_exit_status(tmp_path, monkeypatch, capsys):
    """``mracnn train`` stopped by a signal (train_lib raises ``stopping.Interrupted`` after its
    checkpoint) prints where to resume from and exits 128 + the signal's number."""
    from mracnn_jax.training import stopping, train_lib

    def interrupted(config, workdir):
        raise stopping.Interrupted(signal.SIGINT, 42, f"{workdir}/checkpoints")

    monkeypatch.setattr(train_lib, "train_and_evaluate", interrupted)
    write_images(tmp_path / "photos", 2, seed=3)
    wd = tmp_path / "wd"
    argv = ["train", "--config", "small", "--workdir", str(wd), "--data", str(tmp_path / "photos"),
            "--val-data", "none"]  # fmt: skip
    assert cli.main(argv) == 128 + signal.SIGINT
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"mracnn train: stopped by SIGINT at step 42, checkpoint saved in {wd}/checkpoints: "
        "run the same command again to resume"
    )

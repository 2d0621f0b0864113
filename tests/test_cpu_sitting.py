"""scripts/cpu_sitting.sh: the command lines of one CPU sitting (PRINT=1), checked against the
config they must produce and the bundled qualities' table (configs/bundled.py)."""

from __future__ import annotations

import shlex
import subprocess
import sys

import pytest

from mracnn_jax.config_files import load_config
from mracnn_jax.configs import bundled


def _commands(repo_root, *args, **env):
    out = subprocess.run(
        ["bash", str(repo_root / "scripts" / "cpu_sitting.sh"), *args],
        env={"PATH": "/usr/bin:/bin", "PYTHON": sys.executable, "PRINT": "1", **env},
        cwd=repo_root,
        capture_output=True,
        text=True,
        check=False,
    )
    return out.returncode, [shlex.split(line) for line in out.stdout.splitlines()], out.stderr


@pytest.mark.parametrize("quality", [0, 2, 4])
def test_a_sitting_trains_the_quality_at_its_lambda_from_its_start(repo_root, quality):
    rc, (train, evaluate, gain), _ = _commands(repo_root, str(quality), "900")
    assert rc == 0
    assert train[1:3] == ["train.py", "--config=bundled"]
    overrides = [a for a in train if a.startswith("--config.")]
    config = load_config("bundled", overrides)  # every field exists and takes its value
    t = config.train
    start = bundled.start_quality(quality)
    assert t.lmbda == bundled.quality_lambda(quality)
    assert t.init_from == f"mracnn_jax/assets/models/mracnn-bundled-q{start}.mracnn"
    assert (repo_root / t.init_from).is_file()
    assert t.learning_rate == (3e-5 if start == quality else 1e-4)
    assert t.time_limit_s == 900 and t.cooldown_steps == 600 and t.eval_at_start
    assert (t.batch_size, t.crop_size, t.num_eval_images) == (2, 256, 8)
    workdir = f"workdirs/colour-q{quality}"
    assert f"--workdir={workdir}" in train
    assert evaluate[1] == "evaluate.py" and f"{workdir}/model.mracnn" in evaluate
    assert gain[1:] == ["scripts/replacement_gain.py", f"{workdir}/kodak/mracnn-bundled-mse.json"]


def test_settings_and_a_wrong_quality(repo_root, tmp_path):
    rc, commands, _ = _commands(repo_root, "1", WORKDIR="/tmp/w", KODAK="none", LR="2e-5")
    assert rc == 0 and len(commands) == 1  # no Kodak: training only
    assert "--workdir=/tmp/w" in commands[0]
    assert "--config.train.learning_rate=2e-5" in commands[0]
    # relative folders are the caller's, not the repository's
    out = subprocess.run(
        ["bash", str(repo_root / "scripts" / "cpu_sitting.sh"), "2"],
        env={
            "PATH": "/usr/bin:/bin",
            "PYTHON": sys.executable,
            "PRINT": "1",
            "WORKDIR": "w",
            "KODAK": "k",
        },
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=True,
    )
    train, evaluate, _ = (shlex.split(line) for line in out.stdout.splitlines())
    assert f"--workdir={tmp_path}/w" in train
    assert evaluate[evaluate.index("--data") + 1] == f"{tmp_path}/k"
    rc, commands, err = _commands(repo_root, "7")
    assert rc == 1 and not commands
    assert err.strip() == "cpu_sitting.sh: no quality 7: the qualities are [0, 1, 2, 3, 4]"

"""The ``mracnn`` command's messages: one-line errors that say what to do, help texts that are
whole, ``--version``, and the packaging metadata behind it.
"""

from __future__ import annotations

import importlib.metadata
import pathlib
import pickle
import re
import warnings

import numpy as np
import pytest
from cli_stand_in import error_line  # a sibling helper module
from load_script import load_script  # a sibling helper module

import mracnn_jax
import mracnn_jax.coding
from mracnn_jax import cli, zoo

REPO = pathlib.Path(__file__).resolve().parents[1]


# -------------------------------------------------------------------------------------------------
# 1. One-line errors that say what to do; help texts that are whole.


def test_export_with_an_image_for_config_says_what_a_config_is(picture, tmp_path, capsys):
    out = tmp_path / "x.mracnn"
    assert cli.main(["export", "--config", str(picture), str(out)]) == 1
    line = error_line(capsys)
    assert "is not a Python config file" in line and "a preset (mracnn" in line, line
    assert "AttributeError" not in line and not out.exists()


def test_convert_an_image_says_what_convert_takes(picture, tmp_path, capsys):
    """Needs no torch: an image is told apart before torch is imported."""
    out = tmp_path / "out.mracnn"
    assert cli.main(["convert", str(picture), str(out)]) == 1
    line = error_line(capsys)
    assert f"'{picture}' is a PNG image, not a PyTorch checkpoint" in line, line
    assert "CompressAI / STF layout" in line and line.endswith("under 'state_dict')")
    assert not out.exists()


def test_convert_refuses_to_write_over_its_checkpoint(tmp_path, capsys):
    """Checked before JAX or torch is imported: the checkpoint is left as it was."""
    checkpoint = tmp_path / "w.pth"
    checkpoint.write_bytes(b"PK\x03\x04 weights")
    assert cli.main(["convert", str(checkpoint), str(tmp_path / "." / "w.pth")]) == 1
    assert "is the checkpoint itself: name another file" in error_line(capsys)
    assert checkpoint.read_bytes() == b"PK\x03\x04 weights"


def test_model_and_quality_together_are_a_usage_error(picture, tmp_path, capsys):
    args = ["compress", str(picture), str(tmp_path / "x.mrac"), "--model", "m", "--quality", "1"]
    with pytest.raises(SystemExit) as e:
        cli.main(args)
    assert e.value.code == 2
    assert "not allowed with argument" in capsys.readouterr().err
    assert not (tmp_path / "x.mrac").exists()


class _NotATensor:
    pass


def test_convert_cleans_up_torchs_message(tmp_path, capsys):
    pytest.importorskip("torch")
    out = tmp_path / "out.mracnn"
    cases = {
        "zip.pth": b"PK\x03\x04 not a zip at all",
        "object.pth": pickle.dumps({"weight": [_NotATensor]}, protocol=4),
    }
    for name, content in cases.items():
        (tmp_path / name).write_bytes(content)
        assert cli.main(["convert", str(tmp_path / name), str(out)]) == 1
        line = error_line(capsys)
        match = re.search(r"is not a PyTorch checkpoint torch can read \(([^()]+)\): convert", line)
        assert match, line
        reason = match.group(1)
        # torch's reason only: none of its advice on weights_only, no sentence cut in two
        assert "weights_only" not in line and "Check the documentation" not in line, line
        assert len(reason) < 120 and ". " not in reason, reason
        assert not out.exists()


def test_evaluate_help_has_a_whole_description():
    evaluate = load_script(REPO / "evaluate.py", "evaluate_script")
    description = evaluate.build_parser().description
    assert description.endswith("BD-rates, plots."), description
    first_paragraph = evaluate.__doc__.split("\n\n")[0]
    assert description == " ".join(first_paragraph.split())


def _compress_help(capsys) -> str:
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["compress", "--help"])
    assert exit_info.value.code == 0
    return " ".join(capsys.readouterr().out.split())


def test_quality_help_lists_the_bundled_qualities_and_lambdas(capsys, bundled_quality_lambdas):
    text = _compress_help(capsys)
    lambdas = bundled_quality_lambdas
    assert len(lambdas) >= 2
    middle = sorted(lambdas)[(len(lambdas) - 1) // 2]  # the default: no model file names one
    listed = ", ".join(
        f"{q} (lambda {lmbda:g}{', the default' if q == middle else ''})"
        for q, lmbda in sorted(lambdas.items())
    )
    assert f"--quality Q choose a bundled model by its quality: {listed};" in text, text


def test_quality_help_reads_the_model_files(tmp_path, monkeypatch, capsys):
    """The λ come from the model files' metadata (no copy of the numbers in the CLI)."""
    from mracnn_jax import model_file

    params = {"w": np.zeros(1, np.float32)}
    model_file.save_model(
        tmp_path / "a-q1.mracnn", {"name": "a"}, params, metadata={"lmbda": 0.123}
    )
    model_file.save_model(
        tmp_path / "a-q4.mracnn", {"name": "a"}, params, metadata={"lmbda": 7e-4, "default": True}
    )
    model_file.save_model(tmp_path / "a-q9.mracnn", {"name": "a"}, params)  # no λ recorded
    monkeypatch.setattr(zoo, "BUNDLED_DIR", tmp_path)
    text = _compress_help(capsys)
    assert "quality: 1 (lambda 0.123), 4 (lambda 0.0007, the default), 9;" in text, text
    monkeypatch.setattr(zoo, "BUNDLED_DIR", tmp_path / "none")
    assert "(no model with a quality is bundled)" in _compress_help(capsys)


# -------------------------------------------------------------------------------------------------
# 2. The version, and the packaging metadata.


def test_version(capsys):
    assert re.fullmatch(r"\d+\.\d+\.\d+(\.?(a|b|rc|dev|post)\d+)*", mracnn_jax.__version__)
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out == f"mracnn {mracnn_jax.__version__}\n"


def test_pyproject_reads_the_version_and_has_an_spdx_license():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11
    project = tomllib.loads((REPO / "pyproject.toml").read_text())
    assert "version" not in project["project"] and "version" in project["project"]["dynamic"]
    dynamic = project["tool"]["setuptools"]["dynamic"]
    assert dynamic["version"] == {"attr": "mracnn_jax.__version__"}
    assert project["project"]["license"] == "Apache-2.0"
    assert "setuptools>=77" in project["build-system"]["requires"]  # SPDX strings need 77


def test_pyproject_configures_setuptools_without_deprecation_warnings(monkeypatch):
    setuptools = pytest.importorskip("setuptools")
    if int(setuptools.__version__.split(".")[0]) < 77:
        pytest.skip(f"setuptools {setuptools.__version__} is older than the build requires (77)")
    from setuptools.config.pyprojecttoml import apply_configuration
    from setuptools.dist import Distribution

    monkeypatch.chdir(REPO)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        dist = apply_configuration(Distribution(), REPO / "pyproject.toml")
    assert dist.get_version() == mracnn_jax.__version__
    assert dist.metadata.license_expression == "Apache-2.0"


def test_the_installed_metadata_agrees():
    try:
        installed = importlib.metadata.version("mracnn-jax")
    except importlib.metadata.PackageNotFoundError:
        pytest.skip("mracnn-jax is not installed (pip install -e .)")
    assert installed == mracnn_jax.__version__

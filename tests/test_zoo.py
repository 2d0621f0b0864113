"""``mracnn_jax.zoo``: the bundled models read from their headers, looked up by quality and by
parameter digest, the one no-model message, the one suffix rule, the identity check, and the
``mracnn models`` table. No JAX: only model headers are read."""

from __future__ import annotations

import pathlib
import types

import numpy as np
import pytest

from mracnn_jax import cli, cli_coding, model_file, zoo

REPO = pathlib.Path(__file__).resolve().parents[1]


def _save(
    path: pathlib.Path, name: str = "toy", value: float = 0.0, channels: int | None = None,
    **metadata,
) -> str:  # fmt: skip
    params = {"w": np.full(2, value, np.float32)}
    config = {"name": name} if channels is None else {"name": name, "channels": channels}
    return model_file.save_model(path, config, params, metadata=metadata)


def test_grayscale_images_get_a_grayscale_model(tmp_path, monkeypatch, capsys):
    """``mracnn compress`` picks, for an L image, the grayscale model of the quality where one is
    bundled, the colour one otherwise; ``mracnn models`` and ``info`` say which is which."""
    monkeypatch.setattr(zoo, "BUNDLED_DIR", tmp_path)
    for q in (1, 2, 3):
        _save(tmp_path / f"colour-q{q}.mracnn", f"colour{q}", float(q))
    _save(tmp_path / "gray-q2.mracnn", "gray2", 9.0, channels=1)
    assert zoo.default(channels=1).path.name == "gray-q2.mracnn"
    assert zoo.default().path.name == "colour-q2.mracnn"
    assert zoo.by_quality(1, channels=1).path.name == "colour-q1.mracnn"  # no gray q1: colour
    args = types.SimpleNamespace(model=None, quality=None)
    assert cli_coding._model_for_compress(args, "L").endswith("gray-q2.mracnn")
    assert cli_coding._model_for_compress(args, "RGB").endswith("colour-q2.mracnn")
    assert cli.main(["models"]) == 0
    rows = {line.split()[-1]: line.split() for line in capsys.readouterr().out.splitlines()[1:5]}
    assert "grayscale" in rows["gray-q2.mracnn"] and "colour" in rows["colour-q2.mracnn"]


def test_the_bundled_models(bundled_quality_lambdas):
    """Three colour models and three grayscale ones, at the same qualities and λ."""
    entries = zoo.bundled()
    for channels, name in ((3, "mracnn-bundled"), (1, "mracnn-bundled-gray")):
        own = [e for e in entries if e.channels == channels]
        assert [e.quality for e in own] == [1, 2, 3]
        assert {e.quality: e.lmbda for e in own} == bundled_quality_lambdas
        for e in own:
            assert e.path.parent == zoo.BUNDLED_DIR and e.path.suffix == ".mracnn"
            assert e.size == e.path.stat().st_size > 1_000_000
            assert e.name == name
            assert e.params_digest == model_file.read_header(e.path)["params_digest"]
            assert len(e.params_digest) == 64
        assert zoo.for_channels(channels) == own
        assert zoo.default(channels) == zoo.by_quality(2, channels) == own[1]
    assert len(entries) == 6 and len({e.params_digest for e in entries}) == 6
    assert zoo.qualities() == [1, 2, 3]


def test_lookup_by_digest_prefix():
    for e in zoo.bundled():
        full = bytes.fromhex(e.params_digest)
        assert zoo.by_digest(full[:16]) == e  # a bitstream's 16 bytes
        assert zoo.by_digest(e.params_digest[:8]) == e
        assert zoo.by_digest(e.params_digest.upper()) == e
    assert zoo.by_digest(b"\x00" * 16) is None
    assert zoo.by_digest("") is None


def test_no_model_message_for_an_empty_folder(tmp_path, monkeypatch):
    monkeypatch.setattr(zoo, "BUNDLED_DIR", tmp_path)
    assert zoo.bundled() == [] and zoo.by_digest("ab") is None
    for call in (zoo.default, lambda: zoo.by_quality(2)):
        with pytest.raises(zoo.NoModelError) as e:
            call()
        message = str(e.value)
        assert "no model is bundled in" in message and str(tmp_path) in message
        assert "pass --model FILE" in message and "mracnn export" in message
        assert "\n" not in message


def test_no_model_message_names_the_qualities(tmp_path, monkeypatch):
    monkeypatch.setattr(zoo, "BUNDLED_DIR", tmp_path)
    _save(tmp_path / "toy-q1.mracnn", value=1.0)
    _save(tmp_path / "toy-q5.mracnn", value=5.0)
    with pytest.raises(zoo.NoModelError, match=r"quality 3 \(bundled: 1, 5\); pass --model FILE"):
        zoo.by_quality(3)
    bs = types.SimpleNamespace(model_name="other", params_digest=b"\x01" * 16)
    message = zoo.no_model_message(bitstream=bs)
    assert "'other'" in message and "not bundled (bundled qualities: 1, 5)" in message
    assert message.endswith("pass --model FILE")


def test_only_mracnn_files_are_models(tmp_path, monkeypatch):
    """The one suffix rule: ``*.mracnn`` (any case); a model saved as .zip or .model is not
    offered, nor is an unreadable .mracnn."""
    monkeypatch.setattr(zoo, "BUNDLED_DIR", tmp_path)
    _save(tmp_path / "a-q1.zip")
    _save(tmp_path / "a-q2.model")
    assert zoo.bundled() == [] and zoo.model_files(tmp_path) == []
    (tmp_path / "broken-q4.mracnn").write_bytes(b"not a zip")
    digest = _save(tmp_path / "a-q3.MRACNN")
    assert [p.name for p in zoo.model_files(tmp_path)] == ["a-q3.MRACNN", "broken-q4.mracnn"]
    assert [(e.quality, e.params_digest) for e in zoo.bundled()] == [(3, digest)]
    assert zoo.is_model_name("x.mracnn") and not zoo.is_model_name("x.mrac")
    assert not zoo.is_model_name("x.zip") and not zoo.is_model_name("x.model")


def test_default_and_metadata(tmp_path, monkeypatch):
    monkeypatch.setattr(zoo, "BUNDLED_DIR", tmp_path)
    _save(tmp_path / "m-q1.mracnn", value=1.0, lmbda=0.01)
    _save(tmp_path / "m-q2.mracnn", value=2.0)
    _save(tmp_path / "m-q3.mracnn", value=3.0)
    assert zoo.default().quality == 2  # the middle quality
    _save(tmp_path / "m-q3.mracnn", value=3.0, default=True)  # rewritten: a new header is read
    assert zoo.default().quality == 3
    _save(tmp_path / "named.mracnn", value=4.0, quality=7)
    assert zoo.by_quality(7).path.name == "named.mracnn"
    assert zoo.by_quality(1).lmbda == 0.01 and zoo.by_quality(2).lmbda is None


def test_identity_error():
    digest = "ab" * 32
    bs = types.SimpleNamespace(model_name="m", params_digest=bytes.fromhex(digest)[:16])
    assert zoo.identity_error(bs, "m", digest, "x") is None
    assert zoo.identity_error(bs, "m", bytes.fromhex(digest)[:16], "x") is None
    message = zoo.identity_error(bs, "n", digest, "the model file 'f'")
    assert message == (
        f"the model file 'f' ('n', params {'ab' * 16}) is not the model that wrote this file: "
        f"it was written by model 'm' (params {'ab' * 16}); pass its model file"
    )
    assert zoo.identity_error(bs, "m", "cd" * 32, "x") is not None
    assert zoo.identity_error(bs, "m", digest[:8], "x") is not None  # shorter than the file's


def test_cli_models_table(capsys, bundled_quality_lambdas):
    assert cli.main(["models"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].split() == ["quality", "images", "lambda", "size", "params", "name", "file"]
    lambdas = bundled_quality_lambdas
    ordered = sorted(zoo.bundled(), key=lambda e: (e.channels != 3, e.quality))  # colour first
    assert len(ordered) == 6
    for line, e in zip(lines[1:7], ordered):
        cells = line.split()
        assert cells[0] == str(e.quality)
        star = cells[1] == "*"
        assert star == (e.quality == 2)  # the colour default and the grayscale one
        cells = cells[2:] if star else cells[1:]
        assert cells[0] == ("grayscale" if e.channels == 1 else "colour")
        cells = cells[1:]
        assert float(cells[0]) == lambdas[e.quality]
        assert cells[1:3] == [f"{e.size / 1e6:.1f}", "MB"]
        assert e.params_digest.startswith(cells[3]) and len(cells[3]) == 16
        assert cells[4:] == [e.name, e.path.name]
    assert lines[7].startswith("* the default") and len(lines) == 8


def test_cli_models_without_models(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(zoo, "BUNDLED_DIR", tmp_path)
    assert cli.main(["models"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("mracnn: error: no --model given and no model is bundled in")
    assert "\n" not in err


def test_cli_decompress_with_the_wrong_model_file(tmp_path, capsys):
    """The CLI refuses a model file from its header, with the codec's message."""
    digest = _save(tmp_path / "toy.mracnn")
    bs = types.SimpleNamespace(model_name="toy", params_digest=bytes(16))
    with pytest.raises(cli.CliError) as e:
        cli_coding._load_model(str(tmp_path / "toy.mracnn"), expect=bs)
    assert str(e.value) == zoo.identity_error(
        bs, "toy", digest, f"the model file {str(tmp_path / 'toy.mracnn')!r}"
    )

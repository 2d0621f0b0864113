"""A model file whose header has the wrong types, or whose zip is damaged, is refused with one
ModelFileError line by every reader (``read_header``, ``load_model``, ``load_coding_tables``),
so that ``evaluate.py`` and ``mracnn models`` report it in one line instead of a traceback.

The files are tiny (one parameter, no coding tables): nothing here needs JAX.
"""

from __future__ import annotations

import json
import struct
import zipfile
from pathlib import Path

import numpy as np
import pytest
from load_script import load_script  # a sibling helper module
from PIL import Image

from mracnn_jax import model_file, zoo
from mracnn_jax.evaluation import inputs

REPO = Path(__file__).resolve().parents[1]
KERNEL = "params/g_a/conv_0/kernel.npy"


@pytest.fixture
def good(tmp_path) -> Path:
    path = tmp_path / "good.mracnn"
    params = {"g_a": {"conv_0": {"kernel": np.arange(24, dtype=np.float32).reshape(2, 3, 4)}}}
    model_file.save_model(
        path, {"name": "x", "N": 8}, params, metadata={"lmbda": 0.013}, coding_tables=False
    )
    return path


def _with_header(good: Path, dst: Path, edit) -> Path:
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(dst, "w") as out:
        for name in src.namelist():
            raw = src.read(name)
            if name == model_file.HEADER_NAME:
                header = json.loads(raw)
                edit(header)
                raw = json.dumps(header).encode()
            out.writestr(name, raw)
    return dst


def _set(key, value):
    return lambda h: h.update({key: value})


def _set_in(section, key, value):
    return lambda h: h[section].update({key: value})


def _set_spec(field, value):
    return lambda h: h["params"]["g_a/conv_0/kernel"].update({field: value})


HEADER_EDITS = {
    "params a list": (_set("params", ["g_a/conv_0/kernel"]), "params is not an object"),
    "params empty": (_set("params", {}), "params is not an object"),
    "a parameter spec a string": (_set_in("params", "g_a/conv_0/kernel", "<f4"), "no shape"),
    "a shape a string": (_set_spec("shape", "2x3x4"), "not a list of sizes"),
    "a shape of floats": (_set_spec("shape", [2.0, 3, 4]), "not a list of sizes"),
    "a dtype a number": (_set_spec("dtype", 4), "not a string"),
    "model_config a list": (_set("model_config", [1]), "model_config is a list"),
    "model_config name a number": (_set_in("model_config", "name", 7), "not a string"),
    "channels a string": (_set_in("model_config", "channels", "3"), "not 1 or 3"),
    "params_digest a number": (_set("params_digest", 12), "not a SHA-256"),
    "metadata a list": (_set("metadata", [1]), "metadata is a list"),
    "lmbda a string": (_set_in("metadata", "lmbda", "0.01"), "lmbda '0.01' is not a number"),
    "lmbda a boolean": (_set_in("metadata", "lmbda", True), "lmbda True is not a number"),
    "quality a string": (_set_in("metadata", "quality", "two"), "not a whole number"),
    "coding a list": (_set("coding", []), "coding is a list"),
    "storage_dtype unknown": (_set("storage_dtype", "int8"), "storage_dtype"),
}


def _one_line_error(call, path, match) -> str:
    with pytest.raises(model_file.ModelFileError, match=match) as e:
        call(path)
    message = str(e.value)
    assert "\n" not in message and str(path) in message
    return message


@pytest.mark.parametrize("case", HEADER_EDITS)
def test_a_header_of_wrong_types_is_one_model_file_error(good, tmp_path, case):
    edit, match = HEADER_EDITS[case]
    bad = _with_header(good, tmp_path / "bad.mracnn", edit)
    for read in (model_file.read_header, model_file.load_model, model_file.load_coding_tables):
        _one_line_error(read, bad, match)
    with pytest.raises(inputs.EvaluationError, match=match):  # evaluate.py's reading
        inputs.describe_models([bad])
    st = bad.stat()
    assert zoo._read(str(bad), st.st_size, st.st_mtime_ns) is None  # `mracnn models` skips it


def test_the_headers_save_model_writes_pass(good, tmp_path):
    """The checks accept what the writer writes: a quality, a grayscale config, coding tables."""
    edited = _with_header(
        good,
        tmp_path / "edited.mracnn",
        lambda h: (h["metadata"].update(quality=2, lmbda=1), h["model_config"].update(channels=1)),
    )
    for path in (good, edited):
        config, params, metadata = model_file.load_model(path)
        assert params["g_a"]["conv_0"]["kernel"].shape == (2, 3, 4)
    assert metadata == {"lmbda": 1, "quality": 2} and config.channels == 1


def _central_record(data: bytes, name: str) -> int:
    """Offset of the central-directory record of the entry ``name`` (the last copy of its name
    in the file is in that record; the first is in the entry's local header)."""
    at = data.rfind(b"PK\x01\x02", 0, data.rfind(name.encode()))
    assert at > data.find(name.encode()) > 0
    return at


def _patched(good: Path, dst: Path, name: str, field: int, value: int) -> Path:
    """``good`` with the 2-byte field at ``field`` of ``name``'s central record set to ``value``."""
    data = bytearray(good.read_bytes())
    at = _central_record(bytes(data), name) + field
    data[at : at + 2] = struct.pack("<H", value)
    dst.write_bytes(bytes(data))
    return dst


# Central-directory fields: 6 version needed to extract, 8 flags, 10 compression method.
DAMAGE = {
    "a zip version from the future": (6, 0xFF, "zip file version"),
    "the encrypted flag": (8, 0x1, "encrypted"),
    "an unknown compression method": (10, 99, "compression method"),
    "deflate on stored data": (10, zipfile.ZIP_DEFLATED, "corrupt"),
}


@pytest.mark.parametrize("entry", [model_file.HEADER_NAME, KERNEL])
@pytest.mark.parametrize("case", DAMAGE)
def test_a_damaged_zip_is_one_model_file_error(good, tmp_path, case, entry):
    field, value, match = DAMAGE[case]
    bad = _patched(good, tmp_path / "bad.mracnn", entry, field, value)
    message = _one_line_error(model_file.load_model, bad, match)
    assert "export it again" in message
    if entry == model_file.HEADER_NAME:
        _one_line_error(model_file.read_header, bad, match)
        st = bad.stat()
        assert zoo._read(str(bad), st.st_size, st.st_mtime_ns) is None


def test_every_single_byte_flip_is_refused_or_harmless(good, tmp_path):
    """No flipped byte anywhere in a file makes a reader raise anything but ModelFileError."""
    data = good.read_bytes()
    bad = tmp_path / "flipped.mracnn"
    for i in range(len(data)):
        for mask in (0x01, 0xFF):
            flipped = bytearray(data)
            flipped[i] ^= mask
            bad.write_bytes(bytes(flipped))
            for read in (model_file.load_model, model_file.load_coding_tables):
                try:
                    read(bad)
                except model_file.ModelFileError as e:
                    assert "\n" not in str(e)


def test_evaluate_reports_a_damaged_model_file_in_one_line(good, tmp_path, capsys):
    evaluate = load_script(REPO / "evaluate.py", "evaluate_script")
    bad = _patched(good, tmp_path / "bad.mracnn", model_file.HEADER_NAME, 6, 0xFF)
    images = tmp_path / "images"
    images.mkdir()
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(images / "a.png")
    argv = ["--model", str(bad), "--data", str(images), "--out", str(tmp_path / "out")]
    assert evaluate.main([*argv, "--anchors", "none", "--no-progress"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("evaluate.py: error:")
    assert "bad.mracnn" in err[0] and "zip file version" in err[0]

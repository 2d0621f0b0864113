"""scripts/make_gpu_kit.py, what a GPU lease carries, and scripts/kit_models.py, how it carries
models: the lossless float16 byte split of a model file, the file each quality of a lease starts from, and the packed models kept in step with their
sources."""

from __future__ import annotations

import io
import json
import pathlib
import shutil
import sys
import zipfile

import numpy as np
import pytest
from load_script import load_script  # a sibling helper module

REPO = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "scripts"))  # make_gpu_kit.py imports kit_models from its folder
import kit_models

kit = load_script(REPO / "scripts" / "make_gpu_kit.py")


def _model_file(seed: int) -> tuple[bytes, list[np.ndarray]]:
    """A stored zip of .npy arrays like a model file's (float16 parameters of two header versions,
    a float32 array, a JSON header), and its float16 arrays."""
    rng = np.random.default_rng(seed)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_STORED) as zf:
        zf.writestr("header.json", json.dumps({"seed": seed}))
        arrays = {
            "params/a.npy": (rng.standard_normal((64, 3)).astype("<f2"), (1, 0)),
            "params/b.npy": (rng.standard_normal(5).astype("<f4"), (1, 0)),
            "params/c.npy": (rng.standard_normal((7, 9)).astype("<f2"), (2, 0)),
        }
        for name, (array, version) in arrays.items():
            f = io.BytesIO()
            np.lib.format.write_array(f, array, version=version)
            zf.writestr(name, f.getvalue())
    return buf.getvalue(), [a for a, _ in arrays.values() if a.dtype == np.float16]


def _model_bytes(seed: int) -> bytes:
    return _model_file(seed)[0]


def test_the_float16_split_restores_the_exact_file_and_checks_it():
    data, halves = _model_file(0)
    # the float16 payloads only, found after their headers
    regions = kit_models._float16_regions(data)
    assert [data[off : off + n] for off, n in regions] == [a.tobytes() for a in halves]
    packed = kit_models.pack_f16s(data)
    assert kit_models.unpack_f16s(packed) == data
    broken = bytearray(packed)
    broken[-1] ^= 1  # a high byte of the last float16
    with pytest.raises(ValueError, match="SHA-256"):
        kit_models.unpack_f16s(bytes(broken))


@pytest.mark.skipif(shutil.which("xz") is None, reason="needs the xz command")
def test_the_gpu_side_unpacker_refuses_a_damaged_model_in_one_line(tmp_path, capsys):
    src, packed, out = tmp_path / "a.mracnn", tmp_path / "a.mracnn.f16s.xz", tmp_path / "out"
    src.write_bytes(_model_bytes(3))
    kit_models.build_model(src.read_bytes(), packed)
    assert kit_models.main([str(packed), str(out)]) == 0
    assert out.read_bytes() == src.read_bytes()
    broken = bytearray(packed.read_bytes())
    broken[len(broken) // 2] ^= 0xFF
    packed.write_bytes(bytes(broken))
    assert kit_models.main([str(packed), str(tmp_path / "out2")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"kit_models.py: {packed}:") and "\n" not in err
    assert not (tmp_path / "out2").exists()


def test_each_quality_starts_from_the_file_given_or_its_bundled_one(tmp_path):
    q0, q3 = tmp_path / "q0.mracnn", tmp_path / "q3.mracnn"
    q0.write_bytes(b"0")
    q3.write_bytes(b"3")
    files = kit.start_files([0, 3, 4], {0: q0, 3: q3})  # q4 starts from q3's file in the lease
    assert files == {"mracnn-bundled-q0": q0, "mracnn-bundled-q3": q3}
    files = kit.start_files([1, 3], {3: q3})
    bundled_q1 = kit.BUNDLED_DIR / "mracnn-bundled-q1.mracnn"
    assert files == {"mracnn-bundled-q1": bundled_q1, "mracnn-bundled-q3": q3}

    with pytest.raises(SystemExit, match=r"quality 0 has no file .* --start 0=MODEL_FILE or add 1"):
        kit.start_files([0, 3, 4], {3: q3})
    with pytest.raises(SystemExit, match="--start for quality 2, not in --qualities"):
        kit.start_files([1, 3], {2: q3})
    with pytest.raises(SystemExit, match="no model file"):
        kit.start_files([3], {3: tmp_path / "missing.mracnn"})
    with pytest.raises(SystemExit, match="no quality 7"):
        kit.start_files([7], {})


def test_start_options_are_checked_in_one_line(capsys):
    with pytest.raises(SystemExit):
        kit.main(["--qualities", "0", "1", "2", "3"])
    assert "one to three different qualities" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        kit.main(["--start", "q3"])
    assert "give Q=MODEL_FILE" in capsys.readouterr().err


@pytest.mark.skipif(shutil.which("xz") is None, reason="needs the xz command")
def test_packed_models_follow_their_sources(tmp_path):
    """A source that changes is packed again, one that does not is left alone, and a model the
    lease no longer starts from leaves the kit; each unpacks to its source's exact bytes."""
    src = tmp_path / "sources"
    src.mkdir()
    (src / "a.mracnn").write_bytes(_model_bytes(1))
    (src / "b.mracnn").write_bytes(_model_bytes(2))
    box = tmp_path / "kit"
    kit_models.pack_models(box, {"mracnn-bundled-q0": src / "a.mracnn"}, force=False)
    packed = box / "models" / "mracnn-bundled-q0.mracnn.f16s.xz"
    record = json.loads((box / "models" / "mracnn-bundled-q0.source.json").read_text())
    assert record["source"] == str(src / "a.mracnn")
    first = packed.stat().st_mtime_ns

    kit_models.pack_models(box, {"mracnn-bundled-q0": src / "a.mracnn"}, force=False)
    assert packed.stat().st_mtime_ns == first  # the same source: not packed again

    kit_models.pack_models(box, {"mracnn-bundled-q0": src / "b.mracnn"}, force=False)
    out = tmp_path / "unpacked.mracnn"
    kit_models.unpack_model(str(packed), str(out))
    assert out.read_bytes() == (src / "b.mracnn").read_bytes()

    kit_models.pack_models(box, {"mracnn-bundled-q3": src / "a.mracnn"}, force=False)
    assert sorted(p.name for p in (box / "models").iterdir()) == [
        "mracnn-bundled-q3.mracnn.f16s.xz",
        "mracnn-bundled-q3.source.json",
    ]

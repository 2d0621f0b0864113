"""Model files in a GPU kit: packed losslessly on the development machine, restored on the GPU.

    python scripts/kit_models.py IN.mracnn.f16s.xz OUT.mracnn    (on the GPU side: the exact file)

A kit (scripts/make_gpu_kit.py) holds each model it carries as ``models/NAME.mracnn.f16s.xz``:
the model file (a stored zip of ``.npy`` arrays, mostly float16 parameters) with every float16
payload's low and high bytes moved into two separate streams at the end, the rest of the zip as it
is, then ``xz -9 -T2``. The low byte of a float16 is mantissa noise (8.0 bits/byte), the high byte
sign and exponent (5.7 bits/byte); interleaved, xz gets 17.46 MB per 19.9 MB model, split 16.44 MB,
which leaves 3 MB more of the 64 MiB a device call carries for training data.

The packed layout ("f16s"): ``F16S_MAGIC``, an 8-byte little-endian index length, the JSON index
``{"size", "sha256", "regions": [[offset, nbytes], ...]}`` (the original file's size and SHA-256,
and where its float16 payloads lie), the bytes outside the regions in order, then the low bytes of
all regions, then the high bytes. Unpacking checks the SHA-256, so a damaged kit cannot hand the
GPU a wrong model. Restoring needs numpy's ``.npy`` header reader on the packing side only; the
unpacking side needs the standard library alone.

Beside each packed model, ``NAME.source.json`` records the source file's path and SHA-256: the
lease prints it, and ``pack_models`` packs again only when the source changed.
"""

from __future__ import annotations

import hashlib
import io
import json
import lzma
import os
import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
F16S_MAGIC = b"MRACNN-F16SPLIT1\n"


def _float16_regions(data: bytes) -> list[tuple[int, int]]:
    """(offset, nbytes) of every float16 .npy payload stored in the model zip ``data``."""
    import numpy as np  # the packing side only: the GPU side unpacks without it

    regions = []
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        for info in z.infolist():
            if not info.filename.endswith(".npy") or info.compress_type != zipfile.ZIP_STORED:
                continue
            h = info.header_offset
            name_len = int.from_bytes(data[h + 26 : h + 28], "little")
            extra_len = int.from_bytes(data[h + 28 : h + 30], "little")
            start = h + 30 + name_len + extra_len
            f = io.BytesIO(data[start : start + info.file_size])
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                _, _, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                _, _, dtype = np.lib.format.read_array_header_2_0(f)
            payload = info.file_size - f.tell()
            if dtype == np.dtype("<f2") and payload % 2 == 0 and payload > 0:
                regions.append((start + f.tell(), payload))
    return sorted(regions)


def pack_f16s(data: bytes) -> bytes:
    """``data`` (a model file) with its float16 payloads' low and high bytes moved to the end."""
    regions = _float16_regions(data)
    rest, lo, hi, pos = [], [], [], 0
    for off, n in regions:
        rest.append(data[pos:off])
        lo.append(data[off : off + n : 2])
        hi.append(data[off + 1 : off + n : 2])
        pos = off + n
    rest.append(data[pos:])
    index = json.dumps(
        {"size": len(data), "sha256": hashlib.sha256(data).hexdigest(), "regions": regions}
    ).encode()
    return b"".join([F16S_MAGIC, len(index).to_bytes(8, "little"), index, *rest, *lo, *hi])


def unpack_f16s(packed: bytes) -> bytes:
    """The inverse of ``pack_f16s``; raises ValueError when the result's SHA-256 is wrong."""
    if not packed.startswith(F16S_MAGIC):
        raise ValueError("not an f16s-packed model file")
    p = len(F16S_MAGIC)
    n = int.from_bytes(packed[p : p + 8], "little")
    index = json.loads(packed[p + 8 : p + 8 + n])
    body = memoryview(packed)[p + 8 + n :]
    total = sum(k for _, k in index["regions"])
    rest_len = index["size"] - total
    rest = body[:rest_len]
    lo, hi = body[rest_len : rest_len + total // 2], body[rest_len + total // 2 :]
    out = bytearray(index["size"])
    pos = rpos = half = 0
    for off, k in index["regions"]:
        seg = off - pos
        out[pos:off] = rest[rpos : rpos + seg]
        rpos += seg
        out[off : off + k : 2] = lo[half : half + k // 2]
        out[off + 1 : off + k : 2] = hi[half : half + k // 2]
        half += k // 2
        pos = off + k
    out[pos:] = rest[rpos:]
    if hashlib.sha256(out).hexdigest() != index["sha256"]:
        raise ValueError("unpacked model file has the wrong SHA-256")
    return bytes(out)


def unpack_model(src: str, dst: str) -> None:
    """``src`` (``.mracnn.f16s.xz``, or a plain ``.mracnn.xz``) → ``dst``, the exact model file."""
    with lzma.open(src) as f:
        data = f.read()
    if data.startswith(F16S_MAGIC):
        data = unpack_f16s(data)
    tmp = dst + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.replace(tmp, dst)
    print(f"{dst}: {len(data)} bytes, sha256 {hashlib.sha256(data).hexdigest()}")


def build_model(data: bytes, dst: Path) -> None:
    """``dst``: the model file ``data`` packed (f16s, then ``xz -9 -T2``), after checking that it
    unpacks exactly."""
    packed = pack_f16s(data)
    if unpack_f16s(packed) != data:  # unpack_f16s checks the SHA-256 too
        raise RuntimeError(f"f16s round trip of the model for {dst} failed")
    tmp = dst.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        subprocess.run(["xz", "-9", "-T2", "-c"], input=packed, stdout=f, check=True)
    os.replace(tmp, dst)


def shown(path: Path) -> str:
    """``path`` relative to the repository where it lies inside it."""
    path = path.resolve()
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def pack_models(kit: Path, sources: dict[str, Path], force: bool) -> list[tuple[str, int]]:
    """``kit/models/NAME.mracnn.f16s.xz`` for each NAME: its source file, packed again when the
    source's SHA-256 differs from the one recorded beside it (or ``force``); every other model in
    ``kit/models`` is removed. Returns (part, bytes) for make_gpu_kit.py's size table."""
    (kit / "models").mkdir(parents=True, exist_ok=True)
    for old in (kit / "models").iterdir():
        if old.name.split(".")[0] not in sources:
            old.unlink()
    sizes = []
    for name, src in sources.items():
        if not src.is_file():
            raise SystemExit(f"make_gpu_kit.py: no model file {src}")
        dst = kit / "models" / f"{name}.mracnn.f16s.xz"
        record_path = kit / "models" / f"{name}.source.json"
        data = src.read_bytes()
        record = {"source": shown(src), "sha256": hashlib.sha256(data).hexdigest()}
        for old in (kit / "models").glob(f"{name}.mracnn*"):
            if old != dst:
                old.unlink()
        have = json.loads(record_path.read_text()) if record_path.exists() else None
        if force or not dst.exists() or have is None or have["sha256"] != record["sha256"]:
            print(f"packing {record['source']} as {dst.name} (xz -9 -T2) ...", flush=True)
            build_model(data, dst)
        record_path.write_text(json.dumps(record) + "\n")
        part = f"models/{dst.name} (from {record['source']}, {len(data)} bytes)"
        sizes.append((part, dst.stat().st_size))
    return sizes


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 2:
        print("usage: kit_models.py IN.mracnn.f16s.xz OUT.mracnn", file=sys.stderr)
        return 2
    try:
        unpack_model(argv[0], argv[1])
    except (OSError, lzma.LZMAError, ValueError) as e:
        print(f"kit_models.py: {argv[0]}: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

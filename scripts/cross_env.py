"""Files written by one software stack, decoded by another: the portability matrix.

    python scripts/cross_env.py encode OUT_DIR [--images A.png ...] [--tiled-image B.png]
    python scripts/cross_env.py decode IN_DIR OUT_DIR

``encode`` codes the images (by default the samples but the tiled image) with the bundled colour
models, the first model on the first image, the second on the second and so on, cycling through
the images (``q<N>-<image>.mrac``); one image with the middle model with g_a in 256-pixel tiles
(``tiled-q2-<image>.mrac``, decoded with g_s in tiles of that size too) and, where grayscale
models are bundled, that image's luma with the default grayscale model
(``gray-q<N>-<image>.mrac``), and writes the encoder's prediction of the decoded image next to
each file (``.enc.png``). ``decode`` decodes every ``.mrac`` of IN_DIR into OUT_DIR (``.png``),
or writes ``.err`` with the one-line error. It also
writes ``stack.json``: Python, numpy, jax and the device, so a report can say which stack did what.

Run ``encode`` on one stack (``.venv``: jax 0.4.34, numpy 1.26; ``.venv-new``: the newest jax,
numpy 2; a GPU machine) and ``decode`` on another; ``compare`` then gives, file by file, whether it
decoded and the PSNR of the decoded image against the encoder's prediction:

    python scripts/cross_env.py compare ENC_DIR DEC_DIR

``tests/test_cross_env.py`` runs the matrix between ``.venv`` and ``.venv-new`` in ``make test``;
``scripts/gpu_portability.sh`` runs it between a GPU and a CPU.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import platform
import sys

import numpy as np
from PIL import Image

from mracnn_jax import codec, images, zoo
from mracnn_jax.coding import container

SAMPLES = images.SAMPLES_DIR
TILE = 256


def _stack() -> dict:
    import jax

    return {
        "python": platform.python_version(),
        "numpy": np.__version__,
        "jax": jax.__version__,
        "devices": [str(d) for d in jax.devices()],
    }


def _models() -> dict[str, codec.LoadedModel]:
    """The bundled colour models by ``q<N>``, and the default grayscale one as ``gray-q<N>``."""
    models = {f"q{e.quality}": codec.LoadedModel.load(e.path) for e in zoo.for_channels(3)}
    gray = zoo.default(channels=1)
    if gray.channels == 1:
        models[f"gray-q{gray.quality}"] = codec.LoadedModel.load(gray.path)
    return models


def encode(out: pathlib.Path, paths: list[pathlib.Path], tiled_image: pathlib.Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    models = _models()
    colour = [q for q in models if not q.startswith("gray-")]
    # one file per model, the images in turn: every model and every image appear once, at a
    # third of the time of all pairs (the matrix runs in every `make test`)
    jobs = [(q, paths[i % len(paths)], None) for i, q in enumerate(colour)]
    jobs.append(("q2", tiled_image, TILE))
    jobs += [(q, tiled_image, None) for q in models if q.startswith("gray-")]
    for q, img, tile in jobs:
        rgb, _ = images.read_image(img)
        image = images.restore_mode(rgb, "L") if q.startswith("gray-") else rgb
        name = f"{'tiled-' if tile else ''}{q}-{img.stem}"
        res = codec.compress_with_info(image, models[q], tile=tile, estimate_bits=False)
        (out / f"{name}.mrac").write_bytes(res.data)
        Image.fromarray(res.reconstruction).save(out / f"{name}.enc.png")
        print(f"{name}: {len(res.data)} bytes", flush=True)
    (out / "stack-encode.json").write_text(json.dumps(_stack()))


def decode(src: pathlib.Path, out: pathlib.Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    models = {m.identity: m for m in _models().values()}
    for f in sorted(src.glob("*.mrac")):
        data = f.read_bytes()
        try:
            bs = container.unpack(data)
            tile = TILE if f.stem.startswith("tiled-") else None
            image = codec.decompress(data, models[bs.params_digest], tile=tile)
        except (codec.CodecError, KeyError) as e:
            (out / f"{f.stem}.err").write_text(f"{type(e).__name__}: {e}")
            print(f"{f.stem}: {type(e).__name__}: {e}", flush=True)
            continue
        Image.fromarray(image).save(out / f"{f.stem}.png")
        print(f"{f.stem}: decoded", flush=True)
    (out / "stack-decode.json").write_text(json.dumps(_stack()))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)


def compare(enc: pathlib.Path, dec: pathlib.Path) -> list[dict]:
    """One row per file of ``enc``: decoded or the error, and the PSNR against the encoder's
    prediction."""
    rows = []
    for f in sorted(enc.glob("*.mrac")):
        err = dec / f"{f.stem}.err"
        row = {"file": f.name, "bytes": f.stat().st_size}
        if err.exists():
            row["error"] = err.read_text()
        elif not (dec / f"{f.stem}.png").exists():
            row["error"] = "not decoded"
        else:
            ref = np.asarray(Image.open(enc / f"{f.stem}.enc.png"))
            got = np.asarray(Image.open(dec / f"{f.stem}.png"))
            row["psnr_db"] = psnr(ref, got)
            row["identical"] = bool(np.array_equal(ref, got))
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("encode")
    e.add_argument("out", type=pathlib.Path)
    e.add_argument(
        "--images",
        type=pathlib.Path,
        nargs="+",
        help="default: the sample images but the tiled one",
    )
    e.add_argument("--tiled-image", type=pathlib.Path, default=SAMPLES / "kodim23.png")
    d = sub.add_parser("decode")
    d.add_argument("src", type=pathlib.Path)
    d.add_argument("out", type=pathlib.Path)
    c = sub.add_parser("compare")
    c.add_argument("enc", type=pathlib.Path)
    c.add_argument("dec", type=pathlib.Path)
    args = p.parse_args(argv)
    if args.cmd == "encode":
        # By default the colour files use the two portrait samples, so that the colour models,
        # which share an architecture, share its compiled pieces (one image shape); the
        # landscape sample goes to the tiled and grayscale files.
        paths = args.images or [p for p in images.list_images(SAMPLES) if p != args.tiled_image]
        encode(args.out, paths, args.tiled_image)
    elif args.cmd == "decode":
        decode(args.src, args.out)
    else:
        stacks = [
            json.loads(p.read_text())
            for p in (args.enc / "stack-encode.json", args.dec / "stack-decode.json")
        ]
        print(f"encoded on {stacks[0]}\ndecoded on {stacks[1]}")
        rows = compare(args.enc, args.dec)
        for r in rows:
            print(json.dumps(r))
        bad = [r for r in rows if "error" in r or r["psnr_db"] < 60]
        print(f"{len(rows) - len(bad)} decoded at >= 60 dB, {len(bad)} not")
        return 1 if bad else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())

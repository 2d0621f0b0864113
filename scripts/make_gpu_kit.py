"""Build ``.kit/``: what a GPU machine lacks to train the bundled models (scripts/gpu_lease.sh).

    python scripts/make_gpu_kit.py [--kit .kit] [--data ../shared/data] [--limit-mib 63]
        [--qualities 1 2 3] [--start Q=MODEL_FILE ...]
    python scripts/make_gpu_kit.py portability [--kit .kit-port] [--models NAME ...]

``portability`` builds the smaller kit of scripts/gpu_portability.sh instead: the named bundled
models (default: colour q2 and q3 and grayscale q2, the files scripts/cross_env.py then writes on
the GPU: q2 and q3 on the sample images, q2 tiled, gray q2) packed as below, and the wheels; no
data. The GPU image's package list (2026-11-17) has numba; where an image has none, the coding
kernels run as plain Python (mracnn_jax/coding/jit.py), with the same bytes.

A device call carries the working tree (tracked + untracked-not-ignored files) and the carried
folders, 64 MiB in all. The tracked model files (19.9 MB each, colour and grayscale) are moved
aside for the call,
so the budget is: the rest of the working tree + ``.kit`` <= ``--limit-mib`` (63 MiB, leaving 1 MiB
for files that appear in the tree before the call). The builder fills the training data up to
``--target-mib`` (62.5 MiB), prints every part's size and exits with status 1 when the total is
over the limit. What it writes:

* ``qualities.txt``: ``--qualities``, the qualities the lease trains (scripts/gpu_lease.sh's
  default ``QUALITIES``).
* ``models/mracnn-bundled-qQ.mracnn.f16s.xz``: the file each quality Q of ``--qualities`` starts
  from: the one ``--start Q=MODEL_FILE`` names (the export of a CPU sitting, so that the GPU
  continues what the CPU trained; written by ``bundle_finetuned.py --out DIR``, it carries the
  provenance that bundling the lease's model adds to), else the bundled file. A quality with neither
  (0 and 4, unless given) has no file of its own, and the lease starts it from its neighbour's
  (``configs/bundled.start_quality``), which must then be in the kit. Beside each,
  ``mracnn-bundled-qQ.source.json`` records the source's path and SHA-256 (the lease prints it; the
  file is packed again when the source changes). Each model is packed losslessly, its float16
  parameters' low and high bytes as separate streams, then ``xz -9 -T2`` (scripts/kit_models.py,
  which restores the exact file on the GPU side and checks its SHA-256).
* ``whl/``: wheels of the Python packages the GPU machine lacks (``pip download --no-deps
  --only-binary=:all: --python-version 3.12``): only ml_collections (absl-py, PyYAML, flax, optax,
  orbax-checkpoint, numpy, pillow and tqdm are in its image; grain and TensorFlow are not needed
  by training). ``--wheels`` names others (e.g. pinned flax, optax, orbax-checkpoint versions).
* ``data/train/bsds500/val/``: the held-out validation set, unchanged: the first 8 files (sorted
  by path) of ../shared/data/train/bsds500/val, the ones ``load_eval_images`` reads for
  ``num_eval_images = 8``, so the validation numbers compare with docs/models.md.
* ``data/train/{bsds500/train,bsds500/test,cid22}/``: the training subset, in ../shared/data's
  layout (``MRACNN_DATA=.kit/data`` makes the default ``data.train_dirs`` read it). One random
  256x256 crop per photo, each from a different photo, taken in a seeded random order of all 586
  photos (400 BSDS500 train+test, 186 CID22) until the budget is spent, so the subset keeps the
  mixture the models were trained on. Why: at about 29 KB a crop the budget holds only about two
  thirds of the photos, and distinct photos are worth more than more pixels of the same photo
  (training at batch 16 for ~1,000 steps sees each file ~35 times; two crops of one photo, or a
  bigger crop to shift a 256 window in, would share content; the model has seen all 586 photos
  before, so the subset is a sample of its own training distribution). JPEG quality 92 with 4:4:4
  chroma (optimised Huffman tables, progressive): 40.6 dB mean, 35.4 dB minimum against the crop
  (80 crops measured), 10 dB or more above the models' own distortion (26-30 dB), where quality
  85 (28 % smaller) reaches only 32 dB on textured crops; 4:2:0 would blur the chroma the models learn to code. The input
  pipeline reads .png/.jpg only (no WebP/AVIF), and a PNG crop would cost 4 times as much.
"""

from __future__ import annotations

import argparse
import io
import random
import shutil
import subprocess
import sys
from pathlib import Path

import kit_models  # the script's folder

REPO = Path(__file__).resolve().parents[1]
MIB = 1 << 20
QUALITIES = (1, 2, 3)
BUNDLED_DIR = REPO / "mracnn_jax" / "assets" / "models"
PORTABILITY_MODELS = ("mracnn-bundled-q2", "mracnn-bundled-q3", "mracnn-bundled-gray-q2")
TRAIN_FOLDERS = ("bsds500/train", "bsds500/test", "cid22")
VAL_FOLDER = "bsds500/val"
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


# -------------------------------------------------------------------------------------------------
# Sizes.


def working_tree_bytes() -> tuple[int, int]:
    """(bytes, files) of what a device call sends without the carried folders: tracked and
    untracked-not-ignored files, less the bundled model files that are moved aside for it."""
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        check=True,
        capture_output=True,
    ).stdout.decode()
    total = files = 0
    for rel in sorted(set(filter(None, out.split("\0")))):
        if rel.startswith("mracnn_jax/assets/models/") and rel.endswith(".mracnn"):
            continue
        p = REPO / rel
        if p.is_file() and not p.is_symlink():
            total += p.stat().st_size
            files += 1
    return total, files


def tree_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


# -------------------------------------------------------------------------------------------------
# Data.


def list_images(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.rglob("*")
        if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".")
    )


def crop_jpeg(path: Path, crop: int, quality: int, seed: int) -> bytes:
    """One random ``crop``² window of ``path`` (seeded by the file name), as a JPEG."""
    from PIL import Image

    with Image.open(path) as im:
        im = im.convert("RGB")
        w, h = im.size
        rng = random.Random(f"{seed}:{path.name}")
        x = rng.randrange(0, max(w - crop, 0) + 1)
        y = rng.randrange(0, max(h - crop, 0) + 1)
        c = im.crop((x, y, x + min(crop, w), y + min(crop, h)))
    buf = io.BytesIO()
    c.save(buf, "JPEG", quality=quality, subsampling=0, optimize=True, progressive=True)
    return buf.getvalue()


def build_data(args, kit: Path, budget: int) -> tuple[int, int, dict[str, int]]:
    """Writes the training crops, in a seeded random order of all photos, until ``budget`` bytes
    are used. Returns (bytes, files, files per folder)."""
    root = Path(args.data) / "train"
    photos = [(sub, p) for sub in TRAIN_FOLDERS for p in list_images(root / sub)]
    random.Random(args.seed).shuffle(photos)
    used = files = 0
    per: dict[str, int] = dict.fromkeys(TRAIN_FOLDERS, 0)
    for sub in TRAIN_FOLDERS:
        (kit / "data" / "train" / sub).mkdir(parents=True, exist_ok=True)
    for sub, p in photos:
        jpeg = crop_jpeg(p, args.crop, args.quality, args.seed)
        if used + len(jpeg) > budget:
            break
        (kit / "data" / "train" / sub / (p.stem + ".jpg")).write_bytes(jpeg)
        used += len(jpeg)
        files += 1
        per[sub] += 1
    return used, files, per


# -------------------------------------------------------------------------------------------------


def start_files(qualities: list[int], given: dict[int, Path]) -> dict[str, Path]:
    """{kit model name: source file} for a lease of ``qualities`` (module docstring): the file
    ``given`` for a quality, else its bundled file; SystemExit (one line) for a given file that is
    missing, a quality given but not trained, or a quality that has no file and whose neighbour's
    is not in the kit either."""
    from mracnn_jax.configs import bundled

    if extra := sorted(set(given) - set(qualities)):
        raise SystemExit(f"make_gpu_kit.py: --start for quality {extra[0]}, not in --qualities")
    files = {}
    for q in qualities:
        try:
            bundled.quality_lambda(q)
        except ValueError as e:
            raise SystemExit(f"make_gpu_kit.py: {e}") from None
        src = given.get(q, BUNDLED_DIR / f"mracnn-bundled-q{q}.mracnn")
        if src.is_file():
            files[f"mracnn-bundled-q{q}"] = src
        elif q in given:
            raise SystemExit(f"make_gpu_kit.py: no model file {src} (--start {q}=...)")
    for q in qualities:
        start = bundled.start_quality(q)
        if f"mracnn-bundled-q{q}" not in files and f"mracnn-bundled-q{start}" not in files:
            raise SystemExit(
                f"make_gpu_kit.py: quality {q} has no file of its own and starts from quality "
                f"{start}'s, which the kit lacks: give --start {q}=MODEL_FILE or add {start} to "
                "--qualities"
            )
    return files


def fetch_wheels(kit: Path, want: list[str]) -> list[tuple[str, int]]:
    """``kit/whl``: the wheels of ``want`` (pip specs) for the GPU image's Python 3.12, fetched
    again only when the set changed; returns (part, bytes) for the size table."""
    have = list((kit / "whl").glob("*.whl"))
    norm = lambda s: s.split("==")[0].replace("-", "_").lower()
    if sorted(norm(w) for w in want) != sorted(h.name.split("-")[0].lower() for h in have):
        for h in have:
            h.unlink()
        subprocess.run(
            [
                sys.executable,
                "-m",
                "pip",
                "download",
                "-q",
                "--no-deps",
                "--only-binary=:all:",
                "--python-version",
                "3.12",
                "--implementation",
                "cp",
                "--platform",
                "manylinux2014_x86_64",
                "-d",
                str(kit / "whl"),
                *want,
            ],
            check=True,
        )
    return [(f"whl/{h.name}", h.stat().st_size) for h in sorted((kit / "whl").glob("*.whl"))]


def report(sizes: list[tuple[str, int]], kit: Path, tree: int, limit_mib: float) -> int:
    """Prints the size table; 1 when the working tree and the kit are over ``limit_mib``."""
    kit_total = tree_bytes(kit)
    total = tree + kit_total
    for name, size in sizes:
        print(f"{size:>12,d}  {name}")
    print(f"{kit_total:>12,d}  kit in all ({kit})")
    print(
        f"{total:>12,d}  TOTAL {total / MIB:.2f} MiB (limit {limit_mib:g} MiB; "
        "a device call carries 64 MiB)"
    )
    if total > limit_mib * MIB:
        print(f"over the limit of {limit_mib} MiB", file=sys.stderr)
        return 1
    return 0


def build_portability(args) -> int:
    kit = Path(args.kit).resolve()
    for sub in ("models", "whl"):
        (kit / sub).mkdir(parents=True, exist_ok=True)
    for stray in set(kit.iterdir()) - {kit / "models", kit / "whl"}:
        shutil.rmtree(stray) if stray.is_dir() else stray.unlink()
    tree, tree_files = working_tree_bytes()
    sizes = [(f"working tree without the model files ({tree_files} files)", tree)]
    sizes += kit_models.pack_models(
        kit, {m: BUNDLED_DIR / f"{m}.mracnn" for m in args.models}, args.force
    )
    sizes += fetch_wheels(kit, args.wheels.split())
    return report(sizes, kit, tree, args.limit_mib)


def build(args) -> int:
    kit = Path(args.kit).resolve()
    (kit / "models").mkdir(parents=True, exist_ok=True)
    (kit / "whl").mkdir(exist_ok=True)
    sizes: list[tuple[str, int]] = []

    tree, tree_files = working_tree_bytes()
    sizes.append((f"working tree without the model files ({tree_files} files)", tree))
    sizes += kit_models.pack_models(kit, start_files(args.qualities, dict(args.start)), args.force)
    (kit / "qualities.txt").write_text(" ".join(map(str, args.qualities)) + "\n")

    sizes += fetch_wheels(kit, args.wheels.split())

    # The data are rebuilt each time (a few seconds), so the budget is always the current one.
    shutil.rmtree(kit / "data", ignore_errors=True)
    val_dst = kit / "data" / "train" / VAL_FOLDER
    val_dst.mkdir(parents=True)
    val = list_images(Path(args.data) / "train" / VAL_FOLDER)[: args.num_val]
    for p in val:
        shutil.copyfile(p, val_dst / p.name)
    sizes.append((f"data/train/{VAL_FOLDER}: the first {len(val)} files", tree_bytes(val_dst)))

    for stray in set(kit.iterdir()) - {kit / n for n in ("models", "whl", "data", "qualities.txt")}:
        shutil.rmtree(stray) if stray.is_dir() else stray.unlink()
    budget = int(args.target_mib * MIB) - tree - tree_bytes(kit)
    if budget <= 0:
        print(f"no room for training data: {budget} bytes", file=sys.stderr)
        return 1
    used, files, per = build_data(args, kit, budget)
    sizes.append(
        (
            f"data/train: {files} crops of {args.crop}x{args.crop}, JPEG q{args.quality} 4:4:4 ("
            + ", ".join(f"{k} {v}" for k, v in per.items())
            + ")",
            used,
        )
    )
    return report(sizes, kit, tree, args.limit_mib)


def main(argv=None) -> int:
    if argv is None:
        argv = sys.argv[1:]
    if argv[:1] == ["portability"]:
        p = argparse.ArgumentParser(prog="make_gpu_kit.py portability")
        p.add_argument("--kit", default=str(REPO / ".kit-port"))
        p.add_argument("--models", nargs="+", default=list(PORTABILITY_MODELS))
        p.add_argument("--limit-mib", type=float, default=63.0, help="fail above this total")
        p.add_argument("--wheels", default="ml_collections==1.1.0")
        p.add_argument("--force", action="store_true", help="repack the models")
        return build_portability(p.parse_args(argv[1:]))
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--kit", default=str(REPO / ".kit"))
    p.add_argument("--data", default=str(REPO.parent / "shared" / "data"))
    p.add_argument("--limit-mib", type=float, default=63.0, help="fail above this total")
    p.add_argument("--target-mib", type=float, default=62.5, help="fill the data up to this total")
    p.add_argument("--crop", type=int, default=256)
    p.add_argument("--quality", type=int, default=92)
    p.add_argument("--num-val", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--wheels", default="ml_collections==1.1.0", help="pip specs, space-separated")
    p.add_argument("--force", action="store_true", help="repack the models even if up to date")
    p.add_argument(
        "--qualities",
        nargs="+",
        type=int,
        default=list(QUALITIES),
        help="the qualities the lease trains (at most three)",
    )
    p.add_argument(
        "--start",
        action="append",
        type=_start,
        default=[],
        metavar="Q=MODEL_FILE",
        help="the file quality Q starts from (default: its bundled file)",
    )
    args = p.parse_args(argv)
    if not 1 <= len(args.qualities) <= 3 or len(set(args.qualities)) != len(args.qualities):
        p.error(f"--qualities {args.qualities}: one to three different qualities")
    return build(args)


def _start(text: str) -> tuple[int, Path]:
    """``Q=MODEL_FILE`` → (Q, the file), relative paths from the caller's folder."""
    q, sep, path = text.partition("=")
    if not sep or not q.strip().isdigit() or not path:
        example = "3=workdirs/colour-q3/model.mracnn"
        raise argparse.ArgumentTypeError(f"{text!r}: give Q=MODEL_FILE, e.g. {example}")
    return int(q), Path(path).resolve()


if __name__ == "__main__":
    sys.exit(main())

"""Bundle a fine-tuned model: a training run's exported model, written to
``mracnn_jax/assets/models/mracnn-bundled-q<N>.mracnn`` (colour) or
``mracnn-bundled-gray-q<N>.mracnn`` (one channel) with the provenance a user needs.

    .venv/bin/python scripts/bundle_finetuned.py Q WORKDIR INIT.mracnn [--out DIR]

``WORKDIR`` is the ``train.py`` run that fine-tuned the model (its ``model.mracnn`` and
``metrics.jsonl``); ``INIT.mracnn`` the model it started from (``train.init_from``): a model
that was not fine-tuned before (a converted grayscale model from
``scripts/make_grayscale_model.py``, whose metadata names the colour model, or a bundled colour
model, which is then named itself), or an earlier fine-tuned bundled model, when a sitting
continues one whose work directory is gone. In the last case the steps add up, the validation
before is the first run's, and ``fine_tuned.continued`` lists each continuation (its start's
params digest and steps; the optimiser state started afresh there). The parameters, config and
storage dtype are kept as they are (the params digest is checked to be unchanged), and
the metadata gains:

* ``quality``: Q (``zoo`` picks by it);
* ``initialised_from``: the model the first fine-tuning started from: INIT's own
  ``initialised_from`` when it has one (for a converted model, the colour model: file, params
  digest, method), else INIT itself (file, params digest, its step and validation);
* ``fine_tuned``: the steps and the last sitting's batch and crop, from the run's config and metrics,
  and the validation metrics before and after.

Run it with ``.venv`` (jax 0.4.34), the stack whose float arithmetic computed the coding tables of
every bundled model: the file's z coding tables are computed again by ``model_file.save_model``
and must equal the stored ones, which the script checks.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from mracnn_jax import model_file, zoo
from mracnn_jax.training.run_log import read_metrics


def run_summary(workdir: Path, gray: bool) -> dict:
    """Steps, the last sitting's batch and the first and last validation of a training run's
    metrics (``gray``: a one-channel model, which trains on luma crops)."""
    history = read_metrics(workdir)
    train, evals = history.train, history.eval
    config = json.loads((workdir / "config.json").read_text())
    t = config.get("train", config)
    keep = ("bpp", "psnr", "ms_ssim", "loss")
    return {
        "steps": int(train[-1]["step"]) if train else 0,
        # config.json is the last sitting's: earlier sittings may have used other batches
        "batch": f"{t.get('batch_size')} {'gray ' if gray else ''}crops of {t.get('crop_size')}² "
        "(the last sitting's)",
        "data": ("the training photos' ITU-R 601 luma" if gray else "the training photos")
        + " (BSDS500 train+test, CID22)",
        "lmbda": t.get("lmbda"),
        "eval_before": {k: evals[0][k] for k in keep if k in evals[0]} if evals else None,
        "eval_after": {k: evals[-1][k] for k in keep if k in evals[-1]} if evals else None,
    }


def continued(before: dict, run: dict, start_digest: str) -> dict:
    """The provenance of a run that continued an already fine-tuned model: steps summed, the
    validation before taken from the first run, the continuation recorded."""
    out = dict(run)
    out["steps"] = int(before["steps"]) + int(run["steps"])
    out["eval_before"] = before.get("eval_before")
    out["continued"] = list(before.get("continued", [])) + [
        {
            "from_params_digest": start_digest,
            "at_step": int(before["steps"]),
            "steps": int(run["steps"]),
            "optimiser": "fresh",
        }
    ]
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("quality", type=int)
    p.add_argument("workdir", type=Path)
    p.add_argument("init", type=Path, help="the model the run started from (train.init_from)")
    p.add_argument("--out", type=Path, default=zoo.BUNDLED_DIR)
    a = p.parse_args(argv)

    source = a.workdir / "model.mracnn"
    config, params, metadata = model_file.load_model(source)
    header = model_file.read_header(source)
    channels = int(config.get("channels", 3))
    gray = channels == 1
    init_header = model_file.read_header(a.init)
    if zoo.header_channels(init_header) != channels:
        sys.exit(
            f"{a.init} has {zoo.header_channels(init_header)} channels, the run's model "
            f"{channels}: not the model the run started from"
        )
    init_meta = init_header.get("metadata") or {}
    metadata = dict(metadata or {})
    metadata["quality"] = a.quality
    metadata["initialised_from"] = init_meta.get("initialised_from") or {
        "file": a.init.name,
        "params_digest": init_header["params_digest"],
        "step": init_meta.get("step"),
        "eval": init_meta.get("eval"),
    }
    metadata["fine_tuned"] = run_summary(a.workdir, gray)
    if init_meta.get("fine_tuned"):
        metadata["fine_tuned"] = continued(
            init_meta["fine_tuned"], metadata["fine_tuned"], init_header["params_digest"]
        )
        metadata["step"] = metadata["fine_tuned"]["steps"]
    out = a.out / f"mracnn-bundled-{'gray-' if gray else ''}q{a.quality}.mracnn"
    digest = model_file.save_model(
        out, config, params, metadata=metadata, dtype=header.get("storage_dtype", "float32")
    )
    if digest != header["params_digest"]:
        sys.exit(f"params digest changed: {header['params_digest']} -> {digest}")
    before, after = model_file.load_coding_tables(source), model_file.load_coding_tables(out)
    if before is not None and not all(
        np.array_equal(before[k], after[k]) for k in model_file.CODING_ARRAYS
    ):
        sys.exit("the z coding tables computed here differ from the run's: use .venv")
    print(f"{out}: quality {a.quality}, params {digest[:16]}, {out.stat().st_size / 1e6:.1f} MB")
    print(json.dumps(metadata["fine_tuned"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

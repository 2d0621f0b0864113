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
params digest and steps; the optimiser state started afresh there). A run bundled before and
trained on since (INIT is then its own earlier export, or that of a run from the same start)
replaces INIT's last run instead of adding to it: its steps are not counted twice. The run's
start is the params digest train.py recorded (``started_from.json``); for runs older than that
record, an INIT whose last run began with the same validation as this run (its ``eval_before``)
is taken as this run's earlier export. A run that started from neither INIT nor INIT's last
start is refused. The parameters, config and
storage dtype are kept as they are (the params digest is checked to be unchanged), and
the metadata gains:

* ``quality``: Q (``zoo`` picks by it);
* ``initialised_from``: the model the first fine-tuning started from: INIT's own
  ``initialised_from`` when it has one (for a converted model, the colour model: file, params
  digest, method), else INIT itself (file, params digest, its step and validation);
* ``fine_tuned``: the steps and the last sitting's batch and crop, from the run's config and metrics,
  the validation metrics before and after, and ``from_params_digest``, the params digest the
  first run started from (INIT's, for a grayscale model the converted one, not the colour model).

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
from mracnn_jax.configs.bundled import NEW_QUALITY_LAMBDAS, QUALITY_LAMBDAS
from mracnn_jax.training.run_log import read_metrics
from mracnn_jax.training.run_start import read_start

QUALITIES = {**QUALITY_LAMBDAS, **NEW_QUALITY_LAMBDAS}  # colour quality: λ


def run_summary(workdir: Path, gray: bool, exported: dict) -> dict:
    """Steps, the last sitting's batch and the validations before and after of a training run
    (``gray``: a one-channel model, which trains on luma crops). The steps and the validation
    after are the exported model's own (its metadata ``step`` and ``eval``), which must be the
    run's last step: a run stopped before its export, or still training, is refused. The
    validation before is the run's step-0 record (``train.eval_at_start``), if it has one."""
    history = read_metrics(workdir)
    train, evals = history.train, history.eval
    config = json.loads((workdir / "config.json").read_text())
    t = config.get("train", config)
    keep = ("bpp", "psnr", "ms_ssim", "loss")
    last = int(train[-1]["step"]) if train else 0
    if exported.get("step") != last:
        raise ValueError(
            f"{workdir / 'model.mracnn'} is step {exported.get('step')}'s export, the run's "
            f"metrics reach step {last}: the last sitting did not export (stopped, or still "
            "training); rerun it to the end"
        )
    before = evals[0] if evals and int(evals[0]["step"]) == 0 else None
    after = exported.get("eval") or None
    return {
        "steps": last,
        # config.json is the last sitting's: earlier sittings may have used other batches
        "batch": f"{t.get('batch_size')} {'gray ' if gray else ''}crops of {t.get('crop_size')}² "
        "(the last sitting's)",
        "data": ("the training photos' ITU-R 601 luma" if gray else "the training photos")
        + " (BSDS500 train+test, CID22)",
        "lmbda": t.get("lmbda"),
        "eval_before": {k: before[k] for k in keep if k in before} if before else None,
        "eval_after": {k: after[k] for k in keep if k in after} if after else None,
    }


def continued(before: dict, run: dict, start_digest: str) -> dict:
    """The provenance of a run that continued an already fine-tuned model: steps summed, the
    validation before taken from the first run, the continuation recorded."""
    out = dict(run)
    if before.get("from_params_digest"):
        out["from_params_digest"] = before["from_params_digest"]
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


def last_start(fine_tuned: dict, initialised_from: dict) -> str | None:
    """The params digest the last run behind a bundled model started from: its continuation's,
    else the first run's (``fine_tuned.from_params_digest``; files bundled before it was recorded:
    ``initialised_from``'s, which for a grayscale model names the colour model instead)."""
    runs = fine_tuned.get("continued") or []
    if runs:
        return runs[-1]["from_params_digest"]
    return fine_tuned.get("from_params_digest") or initialised_from.get("params_digest")


def before_last(fine_tuned: dict) -> dict | None:
    """A bundled model's provenance without its last run; None when that run was the first."""
    runs = fine_tuned.get("continued") or []
    if not runs:
        return None
    return {**fine_tuned, "steps": int(runs[-1]["at_step"]), "continued": runs[:-1]}


def provenance(run: dict, start: str | None, init_header: dict) -> dict:
    """The ``fine_tuned`` metadata of ``run`` (``run_summary``), which started from the params
    digest ``start`` (None: not recorded), bundled over INIT (``init_header``). Raises
    ``ValueError`` for a run that started from neither INIT nor INIT's last start."""
    init_digest = init_header["params_digest"]
    meta = init_header.get("metadata") or {}
    tuned = meta.get("fine_tuned")
    if not tuned:
        if start is not None and start != init_digest:
            raise ValueError(
                f"the run started from params {start[:16]}, INIT's are {init_digest[:16]}: "
                "name the model the run started from"
            )
        return {**run, "from_params_digest": init_digest}
    if start is None:  # a run from before started_from.json: known by its first validation
        before = tuned.get("eval_before")
        again = not tuned.get("continued") and before is not None and before == run["eval_before"]
    elif start == init_digest:
        again = False
    elif start == last_start(tuned, meta.get("initialised_from") or {}):
        again = True
    else:
        raise ValueError(
            f"the run started from params {start[:16]}: neither INIT ({init_digest[:16]}) nor "
            "the model INIT's last run started from; name the model the run started from"
        )
    if not again:
        return continued(tuned, run, init_digest)
    base = before_last(tuned)
    if base is not None:
        return continued(base, run, start)
    first = tuned.get("from_params_digest") or start
    return {**run, "from_params_digest": first} if first else run


def _write_and_check(staged: Path, source: Path, header: dict, config, params, metadata) -> str:
    """Writes the model to ``staged``; what is wrong with it ('' if nothing): the params digest
    must be unchanged and the z coding tables computed here present and equal to the run's."""
    digest = model_file.save_model(
        staged, config, params, metadata=metadata, dtype=header.get("storage_dtype", "float32")
    )
    if digest != header["params_digest"]:
        return f"params digest changed: {header['params_digest']} -> {digest}"
    before, after = model_file.load_coding_tables(source), model_file.load_coding_tables(staged)
    if after is None:
        return "no z coding tables could be computed for the bundled file"
    if before is None:
        print(
            f"note: {source} has no coding tables to compare with; computed here", file=sys.stderr
        )
    elif not all(np.array_equal(before[k], after[k]) for k in model_file.CODING_ARRAYS):
        return "the z coding tables computed here differ from the run's: use .venv"
    return ""


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
    try:
        metadata["fine_tuned"] = run_summary(a.workdir, gray, metadata)
    except ValueError as e:
        sys.exit(f"bundle_finetuned.py: {e}")
    lmbda = metadata["fine_tuned"]["lmbda"]
    if not gray and a.quality in QUALITIES and lmbda != QUALITIES[a.quality]:
        sys.exit(
            f"bundle_finetuned.py: the run trained at λ {lmbda}, quality {a.quality}'s λ is "
            f"{QUALITIES[a.quality]} (mracnn_jax/configs/bundled.py): not this quality's model"
        )
    start = read_start(a.workdir)
    try:
        metadata["fine_tuned"] = provenance(
            metadata["fine_tuned"], start and start["params_digest"], init_header
        )
    except ValueError as e:
        sys.exit(f"bundle_finetuned.py: {e}")
    metadata["step"] = metadata["fine_tuned"]["steps"]
    out = a.out / f"mracnn-bundled-{'gray-' if gray else ''}q{a.quality}.mracnn"
    # Written beside the bundled file and checked there; it replaces the file only if sound.
    staged = out.with_name(f".{out.name}.staged")
    try:
        problem = _write_and_check(staged, source, header, config, params, metadata)
        if problem:
            sys.exit(f"bundle_finetuned.py: {problem}; {out} is unchanged")
        staged.replace(out)
    finally:
        staged.unlink(missing_ok=True)
    digest = header["params_digest"]
    print(f"{out}: quality {a.quality}, params {digest[:16]}, {out.stat().st_size / 1e6:.1f} MB")
    print(json.dumps(metadata["fine_tuned"]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

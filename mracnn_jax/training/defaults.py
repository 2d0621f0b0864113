"""Default training and data settings: ``config.train = training_config()``,
``config.data = data_config()``.

Every field is documented where it is set. A run overrides them on the command line, e.g.
``train.py --config=mracnn --config.train.lmbda=0.0067 --config.train.num_steps=2000000``.

Paper facts (Yan et al. 2024, §4.1): random 256x256 crops of 310K OpenImages photos, batch 4, Adam,
"initial lr 0.00001", MSE λ ∈ {0.0018, 0.0035, 0.0067, 0.0130, 0.025, 0.05}, MS-SSIM λ ∈
{3, 5, 8, 16, 32, 60}. Epochs and the schedule are not stated. Our defaults follow the common
CompressAI practice the paper's baselines used (batch 8, lr 1e-4 then a step decay);
``PAPER_LEARNING_RATE`` and ``batch_size = 4`` reproduce the paper's stated setting.
"""

from __future__ import annotations

import os
from pathlib import Path

import ml_collections

#: The six MSE-optimised rate points of the paper (λ in λ·255²·MSE + bpp).
MSE_LAMBDAS: tuple[float, ...] = (0.0018, 0.0035, 0.0067, 0.0130, 0.025, 0.05)
#: The six MS-SSIM-optimised rate points of the paper (λ in λ·(1 − MS-SSIM) + bpp).
MS_SSIM_LAMBDAS: tuple[float, ...] = (3.0, 5.0, 8.0, 16.0, 32.0, 60.0)
#: The learning rate the paper states ("initial lr 0.00001"); our default is 1e-4.
PAPER_LEARNING_RATE: float = 1e-5

LR_SCHEDULES: tuple[str, ...] = ("constant", "cosine", "step")
#: ``models.objective.LOSS_METRICS``, repeated so that the config checks import no JAX
#: (test_training.py compares the two).
LOSS_METRICS: tuple[str, ...] = ("mse", "ms-ssim")
DATA_BACKENDS: tuple[str, ...] = ("auto", "grain", "python")
SMALL_IMAGE_POLICIES: tuple[str, ...] = ("pad", "skip")


def lr_decay_boundaries(train_config) -> dict[int, float]:
    """The 'step' schedule's decays as {steps after the warm-up: factor}, one entry per distinct
    step of ``round(fraction · num_steps)``. A ValueError, in one line, for a fraction outside
    (0, 1) or one that falls inside the warm-up (its decay would have nothing to act on)."""
    total, warmup = int(train_config.num_steps), int(train_config.get("warmup_steps", 0))
    factor = float(train_config.get("lr_decay_factor", 0.1))
    boundaries: dict[int, float] = {}
    for frac in train_config.get("lr_decay_at", ()):
        if not 0.0 < float(frac) < 1.0:
            raise ValueError(f"train.lr_decay_at entries must be in (0, 1), got {frac}")
        at = round(float(frac) * total)
        if at <= warmup:
            raise ValueError(
                f"train.lr_decay_at {frac} is step {at} of {total}, inside the warm-up of "
                f"{warmup} steps: decay after the warm-up or shorten it"
            )
        boundaries[at - warmup] = boundaries.get(at - warmup, 1.0) * factor
    return boundaries


def default_data_root() -> Path:
    """Where the image folders are: ``$MRACNN_DATA`` if set, else the first of
    ``<repo>/shared/data`` and ``<repo>/../shared/data`` that exists (the latter is the layout of
    the development machines and CI), else ``<repo>/../shared/data`` (which then fails with a
    clear message when the pipeline lists it)."""
    env = os.environ.get("MRACNN_DATA")
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parents[2]
    for candidate in (repo / "shared" / "data", repo.parent / "shared" / "data"):
        if candidate.is_dir():
            return candidate
    return repo.parent / "shared" / "data"


def training_config() -> ml_collections.ConfigDict:
    """The ``config.train`` block: optimisation, loss, checkpointing, logging and evaluation."""
    c = ml_collections.ConfigDict()
    # Seed of everything random in a run: parameter init, the training noise (U(−½, ½)
    # quantisation proxy; step s uses fold_in(key, s), so a resumed run is bit-exact), and the
    # data order and crops (see data_config: data.seed = -1 means "use this seed").
    c.seed = 0
    # Global batch size (all devices and hosts together). Must be divisible by the number of
    # devices and of processes. Paper: 4; CompressAI practice and our default: 8.
    c.batch_size = 8
    # Side of the square random training crops, in pixels. A multiple of 64 (the model's total
    # stride). MS-SSIM training needs >= 161 (the 5-scale MS-SSIM's minimum).
    c.crop_size = 256
    # Total number of optimiser steps. The paper does not state it; CompressAI-style models train
    # for ~1-2M steps at batch 8. Resuming continues up to this number.
    c.num_steps = 1_000_000
    # Peak learning rate (Adam). Paper: 1e-5 (PAPER_LEARNING_RATE); common practice: 1e-4.
    c.learning_rate = 1e-4
    # Learning-rate schedule, one of LR_SCHEDULES:
    #   'constant': learning_rate throughout (after the warm-up);
    #   'cosine':   cosine decay from learning_rate to learning_rate * lr_final_factor at num_steps;
    #   'step':     piecewise constant, multiplied by lr_decay_factor at each fraction of num_steps
    #               in lr_decay_at — the usual stand-in for CompressAI's ReduceLROnPlateau
    #               (1e-4, then 1e-5 for the last few percent of the run).
    c.lr_schedule = "step"
    # Linear warm-up from 0 over this many steps (0: none). Applies to every schedule.
    c.warmup_steps = 0
    # 'step' schedule: fractions of num_steps at which the rate is multiplied by lr_decay_factor.
    c.lr_decay_at = (0.9, 0.97)
    # 'step' schedule: the multiplier applied at each boundary.
    c.lr_decay_factor = 0.1
    # 'cosine' schedule: final learning rate as a fraction of learning_rate.
    c.lr_final_factor = 0.01
    # Cool-down branch (training/cooldown.py): at the end of each sitting (num_steps or
    # time_limit_s), after the checkpoint, this many more steps with the rate falling linearly to
    # cooldown_final_factor times the schedule's; those parameters are validated and exported,
    # the checkpoint keeps the full-rate state, and a time limit keeps time for them. 0: none.
    c.cooldown_steps = 0
    c.cooldown_final_factor = 0.1
    # Adam moments and epsilon (optax.adam defaults, as torch.optim.Adam's).
    c.adam_b1 = 0.9
    c.adam_b2 = 0.999
    c.adam_eps = 1e-8
    # Clip gradients to this global L2 norm before Adam (CompressAI's clip_max_norm = 1.0);
    # 0 or a negative value disables clipping.
    c.grad_clip_norm = 1.0
    # Distortion term, one of LOSS_METRICS: 'mse' → λ·255²·MSE + bpp; 'ms-ssim' →
    # λ·(1 − MS-SSIM) + bpp (MS-SSIM on [0, 1] images, max_val 1).
    c.loss_metric = "mse"
    # Rate–distortion trade-off λ. Pick from mse_lambdas or ms_ssim_lambdas for the paper's points.
    c.lmbda = 0.0130
    # The paper's λ grids (for sweeps and for reference; not read by the training loop).
    c.mse_lambdas = MSE_LAMBDAS
    c.ms_ssim_lambdas = MS_SSIM_LAMBDAS
    # Exported model file (model_file format) whose parameters start a new run instead of the
    # random initialisation; the optimiser starts fresh at step 0. Ignored when the work
    # directory already has a checkpoint (a resume). '' for none.
    c.init_from = ""
    # Wall-clock budget of this process in seconds (0: none). When it is spent, the run stops
    # after the current step as if num_steps had been reached: checkpoint, validation, export.
    # For fixed-length jobs (a preemptible slot, a lent accelerator); a rerun resumes as usual.
    c.time_limit_s = 0.0
    # Write a checkpoint (train state + data position) every this many steps, and at the end.
    c.checkpoint_every = 5000
    # Keep the newest this many checkpoints; older ones are deleted.
    c.keep_checkpoints = 3
    # Average, print and write training metrics (metrics.jsonl, TensorBoard) every this many
    # steps. The NaN/Inf check also runs at these points and before every checkpoint.
    c.log_every = 100
    # Validate on data.val_dir every this many steps (0: only at the end; negative: never).
    c.eval_every = 10_000
    # Also validate before the first step (step 0 of a new run, the checkpoint's step on a
    # resume): the baseline that the end of the run is compared with (e.g. when training on from
    # train.init_from). Costs one validation (and its compilation) before training starts.
    c.eval_at_start = False
    # Number of validation images (sorted by path, the first ones), each a fixed centre crop of
    # eval_crop_size. 0 disables validation.
    c.num_eval_images = 24
    # Centre-crop side of the validation images (multiple of 64); images smaller than it are
    # reflect-padded, as in training.
    c.eval_crop_size = 256
    # Validation batch size (rounded up to a multiple of the device count; padding is dropped).
    c.eval_batch_size = 8
    # Storage dtype of the exported portable model file at the end of training: 'float32' (exact)
    # or 'float16' (half the size; values are rounded).
    c.export_dtype = "float32"
    # Name of the exported model file, inside the work directory ('' to skip the export).
    c.export_name = "model.mracnn"
    return c


def data_config() -> ml_collections.ConfigDict:
    """The ``config.data`` block: where the images are and how they are read."""
    root = default_data_root()
    c = ml_collections.ConfigDict()
    # Training folders: every image under them (recursive; the suffixes of images.SUFFIXES, in
    # any case).
    # The default is BSDS500 train+test and the 186 CID22 photos (686 images); use OpenImages or
    # CLIC for real runs.
    c.train_dirs = [
        str(root / "train" / "bsds500" / "train"),
        str(root / "train" / "bsds500" / "test"),
        str(root / "train" / "cid22"),
    ]
    # Held-out validation folder (fixed centre crops; see train.num_eval_images). '' disables it.
    c.val_dir = str(root / "train" / "bsds500" / "val")
    # Loader implementation, one of DATA_BACKENDS: 'grain' (worker processes, grain.python
    # DataLoader), 'python' (a thread pool in this process; for machines without grain), or
    # 'auto' (grain when importable, else 'python' with a log line). Both give the same batches.
    c.backend = "auto"
    # Decoding workers: grain worker processes, or threads for the 'python' backend. 0 decodes
    # in the main thread (grain) / uses one thread ('python').
    c.num_workers = 2
    # Elements each decoding worker keeps ready ahead of use (grain's worker_buffer_size; the
    # 'python' backend keeps num_workers * worker_buffer_size decodes in flight).
    c.worker_buffer_size = 16
    # Images whose height or width is below the crop, one of SMALL_IMAGE_POLICIES: 'pad'
    # (reflect-pad up to the crop, then crop) or 'skip' (counted and warned about like an
    # undecodable file).
    c.small_images = "pad"
    # Random horizontal flip (p = ½) of each crop.
    c.random_flip_lr = True
    # Random vertical flip (p = ½) of each crop. Off by default: photos have an up.
    c.random_flip_ud = False
    # Seed of the data order and of the per-image crop/flip draws; -1 uses train.seed.
    c.seed = -1
    return c

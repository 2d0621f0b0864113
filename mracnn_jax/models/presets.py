"""Model configurations: MRACNN (reconstruction A), WACNN, the paper's ablations, small variants.

Every number that shapes a model lives here (or in the presets of ``mracnn_jax/configs/`` that call these).
Fields of ``config.model``:

    name                  label written into exported models and bitstreams
    channels              image channels in and out: 3 (RGB) or 1 (grayscale); model files
                          written before the field existed mean 3 (``with_defaults``)
    N, M, Z               intermediate, latent (y) and hyper-latent (z) channels
    transform             'mracb' (MRACD/MRACU, 3x3 strided) or 'conv5' (WACNN's conv5x5 + GDN)
    attention             'elam' or 'wam' at 1/4 (N channels) and 1/16 (M channels) resolution
    third_elam            extra attention module after the first MRACU of g_s (ambiguity 5)
    mracb_kernel          n of the 1xn / nx1 / nxn asymmetric convolutions
    deconv_impl           'subpixel' (fast on CPU) or 'dilated' (flax ConvTranspose form)
    elsa.*                ELSA: kernel, heads, group_width, lam, gamma, qk_scale (None: head_dim^-1/2),
                          block ('bare': X + ELSA(X); 'block': ELSABlock with LN + MLP), mlp_ratio
    wam.*                 WAM: heads, window/shift at N channels (8/4) and at M channels (4/2)
    hyper_analysis_widths   output widths of h_a's first four convs (the fifth outputs Z)
    hyper_synthesis_widths  widths of h_s's first four layers (the last outputs M)
    entropy.num_slices    channel slices of y
    entropy.max_support   decoded slices a slice sees (-1: all before it)
    entropy.cc_widths     hidden widths of the cc_mean / cc_scale / lrp conv stacks
    entropy.cc_kernel     their kernel size
    entropy.support_attention  'clab' (MRACNN) or 'none' (WACNN)
    entropy.clab_dim      CLAB's squeezed width
    prior_filters, prior_init_scale   the factorized prior of z
    compute_dtype         'float32' or 'bfloat16': the dtype the transforms, CLAB and the
                          cc/LRP stacks compute in (parameters, optimizer state, likelihoods and
                          the loss stay float32; mracnn_jax/layers/precision.py)
"""

from __future__ import annotations

import copy

import ml_collections

#: Fields added to the model config after model files were first written: a config without one
#: (an older model file's) means the value ``mracnn()`` gives it.
LATER_FIELDS: tuple[str, ...] = ("channels", "compute_dtype")


def with_defaults(cfg) -> ml_collections.ConfigDict:
    """A copy of the model config ``cfg`` (ConfigDict, FrozenConfigDict or dict) with each of
    ``LATER_FIELDS`` it lacks set as ``mracnn()`` sets it."""
    if isinstance(cfg, ml_collections.FrozenConfigDict):
        out = cfg.as_configdict()
    elif isinstance(cfg, ml_collections.ConfigDict):
        out = copy.deepcopy(cfg)
    else:
        out = ml_collections.ConfigDict(dict(cfg))
    base = mracnn()
    for field in LATER_FIELDS:
        if field not in out:
            out[field] = base[field]
    return out


def _elsa(**overrides) -> ml_collections.ConfigDict:
    cfg = ml_collections.ConfigDict(
        {
            "kernel": 7,
            "heads": 8,
            "group_width": 8,
            "lam": 1.0,
            "gamma": 1.0,
            "block": "bare",
            "mlp_ratio": 3,
        }
    )
    cfg.qk_scale = ml_collections.FieldReference(None, field_type=float)
    cfg.update(overrides)
    return cfg


def mracnn() -> ml_collections.ConfigDict:
    """Reconstruction A of architecture.md §4 (55,346,739 parameters with quantiles)."""
    return ml_collections.ConfigDict(
        {
            "name": "mracnn",
            "channels": 3,
            "N": 192,
            "M": 320,
            "Z": 192,
            "transform": "mracb",
            "attention": "elam",
            "third_elam": False,
            "mracb_kernel": 3,
            "deconv_impl": "subpixel",
            "elsa": _elsa(),
            "wam": {"heads": 8, "window_n": 8, "shift_n": 4, "window_m": 4, "shift_m": 2},
            "hyper_analysis_widths": (320, 288, 256, 224),
            "hyper_synthesis_widths": (192, 224, 256, 288),
            "entropy": {
                "num_slices": 5,
                "max_support": -1,
                "cc_widths": (224, 128),
                "cc_kernel": 3,
                "support_attention": "clab",
                "clab_dim": 128,
            },
            "prior_filters": (3, 3, 3, 3),
            "prior_init_scale": 10.0,
            "compute_dtype": "float32",
        }
    )


def wacnn() -> ml_collections.ConfigDict:
    """The public WACNN (architecture.md §1; 75,235,779 parameters with quantiles)."""
    cfg = mracnn()
    cfg.name = "wacnn"
    cfg.transform = "conv5"
    cfg.attention = "wam"
    cfg.entropy.update(
        {
            "num_slices": 10,
            "max_support": 5,
            "cc_widths": (224, 176, 128, 64),
            "support_attention": "none",
        }
    )
    return cfg


def wacnn_mracb() -> ml_collections.ConfigDict:
    """Table 3 ablation "+MRACB": WACNN with MRACD/MRACU transforms."""
    cfg = wacnn()
    cfg.name = "wacnn+mracb"
    cfg.transform = "mracb"
    return cfg


def wacnn_elam() -> ml_collections.ConfigDict:
    """Table 3 ablation "+ELAM": WACNN with ELAM instead of WAM."""
    cfg = wacnn()
    cfg.name = "wacnn+elam"
    cfg.attention = "elam"
    return cfg


def wacnn_clab() -> ml_collections.ConfigDict:
    """Table 3 ablation "+CLAB": WACNN's transforms with the channel-aware squeezing entropy model
    (5 slices, CLAB supports, 3-layer cc/LRP), since CLAB only exists inside that model."""
    cfg = wacnn()
    cfg.name = "wacnn+clab"
    cfg.entropy = mracnn().entropy
    return cfg


def small(
    base: ml_collections.ConfigDict | None = None, width: int = 16
) -> ml_collections.ConfigDict:
    """A narrow copy of ``base`` (default MRACNN) for tests: every width divided down."""
    cfg = mracnn() if base is None else base
    cfg.name = f"{cfg.name}-small"
    cfg.N, cfg.M, cfg.Z = width, width * 5 // 2, width
    cfg.hyper_analysis_widths = (cfg.M, width * 2, width * 2, width)
    cfg.hyper_synthesis_widths = (width, width, width * 2, width * 2)
    cfg.entropy.cc_widths = tuple(max(8, w // 8) for w in cfg.entropy.cc_widths)
    cfg.entropy.clab_dim = width
    return cfg

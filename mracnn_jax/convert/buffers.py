"""What PyTorch stores beside the parameters, and CompressAI's single layers.

A CompressAI model keeps buffers next to its weights: GDN's pedestals and bounds, the window
attention's relative-position index, the entropy bottleneck's quantiles and coding tables, the
Gaussian conditional's bounds and scale table. On import the ones that encode a setting are
checked against ours; on export they are written so that a PyTorch model loads with
``strict=True``.

* GDN / IGDN: CompressAI stores ``beta`` and ``gamma`` through ``NonNegativeParametrizer``
  (stored ``p = sqrt(max(v + pedestal, pedestal))``, pedestal ``2^-36``) and so do we
  (``mracnn_jax.layers.gdn``): the stored tensors are copied unchanged, ``gamma[i, j]`` being
  output i, input j in both. The buffers ``*_reparam.pedestal`` and ``*_reparam.lower_bound.bound``
  must hold CompressAI's defaults (beta_min 1e-6), otherwise the import fails.
* EntropyBottleneck: ``_matrix{k}`` / ``_bias{k}`` / ``_factor{k}`` map to our ``matrix_k`` /
  ``bias_k`` / ``factor_k`` with identical shapes (``[C, f_{k+1}, f_k]``, ``[C, f_{k+1}, 1]``).
  ``quantiles [C, 1, 3]`` is *not* a parameter here: we quantise z around the exact median of each
  channel's density (bisection, ``FactorizedPrior.medians``), the point CompressAI's auxiliary loss
  drives ``quantiles[:, 0, 1]`` to. The import reports the largest distance between the two
  (``ConversionReport.max_median_deviation``); on export the quantiles are recomputed from the
  density at the logits ``(-t, 0, t)``, ``t = ln(2 / tail_mass - 1)``, the auxiliary loss's
  targets.
* GaussianConditional has no parameters. ``scale_bound`` and the lower bounds must be 0.11 and
  1e-9 (ours); a non-empty ``scale_table`` that differs from ours (64 scales from 0.11 to 256) is
  noted in the report, since it only changes the coder's tables.
* Entropy-coding tables (``_offset``, ``_quantized_cdf``, ``_cdf_length``) are ignored on import
  (our coder builds its own) and exported empty, as in a PyTorch model before ``update()``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import jax.numpy as jnp
import numpy as np

from mracnn_jax.convert.checkpoints import ConversionError, normalize_state_dict
from mracnn_jax.entropy.factorized import LIKELIHOOD_BOUND as Z_LIKELIHOOD_BOUND
from mracnn_jax.entropy.factorized import logit_quantiles
from mracnn_jax.entropy.gaussian import LIKELIHOOD_BOUND as Y_LIKELIHOOD_BOUND
from mracnn_jax.entropy.gaussian import SCALE_BOUND
from mracnn_jax.layers.gdn import BETA_MIN, PEDESTAL
from mracnn_jax.layers.wam import relative_position_index

TAIL_MASS = 1e-9  # CompressAI's EntropyBottleneck default: quantiles at logits +-ln(2/tail - 1)
CODING_BUFFERS = ("_offset", "_quantized_cdf", "_cdf_length")


# -------------------------------------------------------------------------------------------------
# Buffers: what PyTorch stores beside the parameters.


def gdn_buffers(prefix: str) -> dict[str, np.ndarray]:
    """CompressAI GDN's buffers (``prefix`` ends with '.' or is empty) and their values."""

    def f(v):
        return np.asarray([v], np.float32)

    return {
        f"{prefix}beta_reparam.pedestal": f(PEDESTAL),
        f"{prefix}beta_reparam.lower_bound.bound": f((BETA_MIN + PEDESTAL) ** 0.5),
        f"{prefix}gamma_reparam.pedestal": f(PEDESTAL),
        f"{prefix}gamma_reparam.lower_bound.bound": f(PEDESTAL**0.5),
    }


def _relative_position_index(window: int) -> np.ndarray:
    return np.asarray(relative_position_index(window), np.int64)


def empty_tables(prefix: str) -> dict[str, np.ndarray]:
    return {f"{prefix}.{b}": np.zeros((0,), np.int32) for b in CODING_BUFFERS}


def expected_buffers(key_map: Mapping[str, tuple[str, str, int]], shapes: Mapping[str, Any]):
    """``{torch key: value}`` of the buffers PyTorch keeps beside these parameters.

    Values that must match on import are real arrays; ``None`` marks buffers whose value we do
    not use (coding tables, quantiles, target, scale table), checked separately or ignored.
    """
    out: dict[str, np.ndarray | None] = {}
    for path, (key, _, _) in key_map.items():
        if key.endswith(".beta") and path.rsplit("/", 2)[-2].split("_")[0] in ("gdn", "igdn"):
            out.update(gdn_buffers(key[: -len("beta")]))
        if key.endswith(".relative_position_bias_table"):
            rows = shapes[path][0]
            window = (math.isqrt(rows) + 1) // 2
            out[key.replace("relative_position_bias_table", "relative_position_index")] = (
                _relative_position_index(window)
            )
    for name in ("target", "quantiles", *CODING_BUFFERS):
        out[f"entropy_bottleneck.{name}"] = None
    for name in ("scale_table", *CODING_BUFFERS):
        out[f"gaussian_conditional.{name}"] = None
    out["entropy_bottleneck.likelihood_lower_bound.bound"] = np.asarray(
        [Z_LIKELIHOOD_BOUND], np.float32
    )
    out["gaussian_conditional.likelihood_lower_bound.bound"] = np.asarray(
        [Y_LIKELIHOOD_BOUND], np.float32
    )
    out["gaussian_conditional.scale_bound"] = np.asarray([SCALE_BOUND], np.float32)
    out["gaussian_conditional.lower_bound_scale.bound"] = np.asarray([SCALE_BOUND], np.float32)
    return out


def check_buffer(key: str, value: np.ndarray, expected: np.ndarray) -> None:
    """Raises ``ConversionError`` unless the buffer ``key`` holds ``expected`` (integers exactly,
    floats to 1e-5 relative; a same-sized reshape is accepted)."""
    value = np.asarray(value)
    if value.shape != expected.shape and value.size == expected.size:
        value = value.reshape(expected.shape)
    if value.shape != expected.shape:
        raise ConversionError(f"buffer {key!r} has shape {value.shape}, expected {expected.shape}")
    if np.issubdtype(expected.dtype, np.integer):
        ok = np.array_equal(value, expected)
    else:
        ok = np.allclose(value.astype(np.float64), expected.astype(np.float64), rtol=1e-5, atol=0)
    if not ok:
        raise ConversionError(
            f"buffer {key!r} = {value.ravel()[:4].tolist()} differs from ours "
            f"{expected.ravel()[:4].tolist()}: this layer's settings are not supported"
        )


# -------------------------------------------------------------------------------------------------
# The factorized prior's quantiles.


def density_quantiles(eb: Mapping[str, np.ndarray], tail_mass: float = TAIL_MASS) -> np.ndarray:
    """``[C, 1, 3]`` float32: per channel the points where the cumulative logit is ``-t, 0, t``
    (``t = ln(2 / tail_mass - 1)``), CompressAI's ``quantiles`` at convergence
    (``entropy.factorized.logit_quantiles``)."""
    t = math.log(2.0 / tail_mass - 1.0)
    num_layers = sum(1 for k in eb if k.startswith("matrix_"))
    eb = {k: jnp.asarray(v, jnp.float32) for k, v in eb.items()}
    q = logit_quantiles(eb, jnp.asarray([-t, 0.0, t], jnp.float32), num_layers)
    return np.array(q, np.float32)[:, None, :]  # a writable copy, as torch.from_numpy wants


# -------------------------------------------------------------------------------------------------
# Single CompressAI layers (for other CompressAI-layout models).


def gdn_from_torch(state_dict: Mapping[str, Any], prefix: str = "") -> dict[str, np.ndarray]:
    """CompressAI ``GDN`` (or IGDN) state dict -> our ``GDN`` params ``{'beta', 'gamma'}``.

    ``prefix`` is the module's key prefix (``'g_a.1.'`` or ``''``). Buffers present are checked.
    """
    sd = normalize_state_dict(state_dict)
    out = {}
    for name in ("beta", "gamma"):
        if prefix + name not in sd:
            raise ConversionError(f"missing key {prefix + name!r}")
        out[name] = np.asarray(sd[prefix + name], np.float32)
    c = out["beta"].shape[0]
    if out["gamma"].shape != (c, c):
        raise ConversionError(
            f"key {prefix + 'gamma'!r} has shape {out['gamma'].shape}, expected {(c, c)}"
        )
    for key, value in gdn_buffers(prefix).items():
        if key in sd:
            check_buffer(key, sd[key], value)
    return out


def entropy_bottleneck_from_torch(
    state_dict: Mapping[str, Any], prefix: str = "entropy_bottleneck."
) -> dict[str, np.ndarray]:
    """CompressAI ``EntropyBottleneck`` state dict -> our ``FactorizedPrior`` params.

    Reads ``{prefix}_matrix{k}`` (STF) or ``{prefix}matrices.k`` (CompressAI 1.2), and likewise
    biases and factors; ``quantiles`` and the coding tables are not needed (module docstring).
    """
    sd = normalize_state_dict(
        {
            "entropy_bottleneck." + k[len(prefix) :]: v
            for k, v in state_dict.items()
            if k.startswith(prefix)
        }
        if prefix
        else {"entropy_bottleneck." + k: v for k, v in state_dict.items()}
    )
    num_layers = 0
    while f"entropy_bottleneck._matrix{num_layers}" in sd:
        num_layers += 1
    if num_layers == 0:
        raise ConversionError(f"missing key {prefix + '_matrix0'!r}")
    out = {}
    for k in range(num_layers):
        names = [("matrix", "_matrix"), ("bias", "_bias")] + (
            [("factor", "_factor")] if k < num_layers - 1 else []
        )
        for ours, theirs in names:
            key = f"entropy_bottleneck.{theirs}{k}"
            if key not in sd:
                raise ConversionError(f"missing key {prefix + theirs + str(k)!r}")
            out[f"{ours}_{k}"] = np.asarray(sd[key], np.float32)
    return out

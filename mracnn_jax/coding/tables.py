"""Range-coding tables computed once and stored, identical on every machine; no TensorFlow.

Layout (tensorflow-compression's): a table is a flat int32 concatenation of rows
``[-precision, 0, c_1, ..., 2^precision]`` (negative precision: escapes on), one per channel or
scale, with ``cdf_offset[r]``, the symbol of row r's first bin; the last bin of a row is the
escape ("overflow") bin.

Quantisation (``pmf_to_quantized_cdf``, tfc 2.14's ``PmfToQuantizedCdf`` kernel): a pmf
``p_0..p_{n-1}`` (float32) becomes frequencies ``f_i = max(rint(p_i 2^P), 1)`` (round half to even).
While ``sum f > 2^P``, the bin of least penalty ``p_i (log2 f_i - log2(f_i - 1))`` (infinite for
``f_i <= 1``) loses 1; while ``sum f < 2^P``, the bin of greatest gain
``p_i (log2(f_i + 1) - log2 f_i)`` gains 1. Each bin greedily costs or saves the least code length
``-sum p_i log2 f_i``. Ties go as in the kernel: it sorts (bin, penalty) once with libstdc++'s
``std::sort`` (introsort: median-of-3 quicksort down to 16 elements, heapsort past depth
2 floor(log2 n), then insertion sort), which is emulated here, and after each step moves the bin
behind every bin of equal or smaller penalty. The cdf is ``[0, cumsum f]``. The kernel evaluates
``log2`` of integers in double precision with glibc (>= 2.28); here ``log2 k`` is the correctly
rounded value (exact decimal arithmetic), except for the seven ``k <= 2^16 + 1`` where glibc
rounds up instead (``_GLIBC_UP``). TensorFlow runs kernels with denormals-are-zero, so a
subnormal float32 p_i counts as 0 in penalties and gains. All else is IEEE double arithmetic.

z (``z_coding_tables``), as ``tfc_models.z_tables`` defines them: channel c's offset m_c is its
median (``l_K(m_c) = 0``, bisection, ``channel_medians``), the coded symbol is
``s = round(z - m_c)``, and for ``s`` in ``[floor(lo_c - m_c), ceil(hi_c - m_c)]`` (``z_support``;
lo_c, hi_c: the ``tail_mass / 2`` and ``1 - tail_mass / 2`` quantiles, ``logit_quantiles``, clipped
to 4096 symbols either side)
``P(s) = CDF_c(m_c + s + 1/2) - CDF_c(m_c + s - 1/2)`` (the model's likelihood, float32); the
escape bin gets ``max(1 - sum P, 0)`` (float64 sum).

y (``gaussian_tables``): tfc's ``LocationScaleIndexedEntropyModel(NoisyNormal, 64 scales
exp(linspace(ln 0.11, ln 256, 64)), tail_mass 2^-8, precision 12)``, built once with TensorFlow
(``scripts/make_gaussian_tables.py``) and shipped as ``assets/gaussian_tables.npz``.
"""

from __future__ import annotations

import functools
import heapq
import importlib.resources
import math
from collections.abc import Callable, Mapping
from decimal import Context, Decimal
from typing import Any

import numpy as np

TAIL_MASS = 2.0**-8
PRECISION = 12
MAX_HALF_WIDTH = 4096  # a z table spans at most this many symbols either side of the median
GAUSSIAN_ASSET = "gaussian_tables.npz"

__all__ = [
    "GAUSSIAN_ASSET",
    "PRECISION",
    "TAIL_MASS",
    "gaussian_tables",
    "pmf_to_quantized_cdf",
    "prior_params_of",
    "z_coding_tables",
    "z_support",
]

# -------------------------------------------------------------------------------------------------
# pmf -> quantised cdf.

# log2 k lies 0.49993 ulp above a double for these k; glibc 2.28+ rounds up (checked for all
# k <= 2^16 + 1 by tests/test_tables.py::test_log2_is_glibcs).
_GLIBC_UP = frozenset({1621, 3242, 6484, 12968, 25936, 51872, 57803})
_CTX = Context(prec=50)
_LN2 = _CTX.ln(Decimal(2))


@functools.cache
def _log2(k: int) -> float:
    """log2 of an integer k >= 1 as glibc's ``log2`` gives it (see the module docstring)."""
    if k & (k - 1) == 0:
        return float(k.bit_length() - 1)
    x = float(_CTX.divide(_CTX.ln(Decimal(k)), _LN2))  # float(Decimal) rounds correctly
    return math.nextafter(x, math.inf) if k in _GLIBC_UP else x


def _std_sort(a: list) -> None:
    """libstdc++ (GCC 9) ``std::sort`` of ``[key, payload]`` items by ``key`` (``<``), in place."""

    def ins(i):  # __unguarded_linear_insert
        v = a[i]
        while v[0] < a[i - 1][0]:
            a[i] = a[i - 1]
            i -= 1
        a[i] = v

    def sift(lo, hole, n, v):  # __adjust_heap on a[lo:lo + n], then __push_heap
        top, child = hole, hole
        while child < (n - 1) // 2:
            child = 2 * (child + 1)
            if a[lo + child][0] < a[lo + child - 1][0]:
                child -= 1
            a[lo + hole] = a[lo + child]
            hole = child
        if n % 2 == 0 and child == (n - 2) // 2:
            child = 2 * (child + 1)
            a[lo + hole] = a[lo + child - 1]
            hole = child - 1
        parent = (hole - 1) // 2
        while hole > top and a[lo + parent][0] < v[0]:
            a[lo + hole] = a[lo + parent]
            hole, parent = parent, (parent - 1) // 2
        a[lo + hole] = v

    def loop(first, last, depth):  # __introsort_loop
        while last - first > 16:
            if depth == 0:  # heapsort: __make_heap, then __sort_heap
                n = last - first
                for parent in range((n - 2) // 2, -1, -1):
                    sift(first, parent, n, a[first + parent])
                for end in range(last - 1, first, -1):
                    v, a[end] = a[end], a[first]
                    sift(first, 0, end - first, v)
                return
            depth -= 1
            mid, x, z = first + (last - first) // 2, first + 1, last - 1  # median of 3 to first
            ka, kb, kc = a[x][0], a[mid][0], a[z][0]
            if ka < kb:
                m = mid if kb < kc else (z if ka < kc else x)
            else:
                m = x if ka < kc else (z if kb < kc else mid)
            a[first], a[m] = a[m], a[first]
            pivot, lo, hi = a[first][0], first + 1, last  # __unguarded_partition
            while True:
                while a[lo][0] < pivot:
                    lo += 1
                hi -= 1
                while pivot < a[hi][0]:
                    hi -= 1
                if not lo < hi:
                    break
                a[lo], a[hi] = a[hi], a[lo]
                lo += 1
            loop(lo, last, depth)
            last = lo

    n = len(a)
    if n < 2:
        return
    loop(0, n, 2 * (n.bit_length() - 1))
    for i in range(1, min(n, 16)):  # __insertion_sort of the first 16, then unguarded
        if a[i][0] < a[0][0]:
            a.insert(0, a.pop(i))
        else:
            ins(i)
    for i in range(16, n):
        ins(i)


def _quantize_row(pmf: np.ndarray, precision: int) -> np.ndarray:
    normalizer = 1 << precision
    scaled = pmf.astype(np.float64) * normalizer  # exact: the kernel's float32 product
    if scaled.size and scaled.max() >= 2.0**31 / len(pmf):
        raise ValueError("pmf values too large: the kernel's int32 sum would overflow")
    freq = np.maximum(np.rint(scaled), 1).astype(np.int64).tolist()
    mass = np.where(pmf < np.finfo(np.float32).tiny, 0, pmf).astype(np.float64).tolist()  # DAZ
    excess = sum(freq) - normalizer
    step = -1 if excess > 0 else 1  # decrease (penalty queue) or increase (gain queue)

    def key(i):  # smallest key first: penalty, or minus the gain
        f = freq[i]
        if step < 0:
            return math.inf if f <= 1 else mass[i] * (_log2(f) - _log2(f - 1))
        return math.inf if f < 1 else -(mass[i] * (_log2(f + 1) - _log2(f)))

    if excess:
        queue = [[key(i), i] for i in range(len(freq))]
        _std_sort(queue)
        # The kernel's queue stays sorted by key, and an updated bin goes behind every bin of
        # equal key: a heap ordered by (key, time of insertion) pops the same bins in order.
        heap = [(k, t, i) for t, (k, i) in enumerate(queue)]  # sorted, hence a heap
        for t in range(len(heap), len(heap) + abs(excess)):
            i = heap[0][2]
            if step < 0 and freq[i] <= 1:
                raise ValueError("pmf has more bins than 2^precision: cannot be quantised")
            freq[i] += step
            heapq.heapreplace(heap, (key(i), t, i))
    return np.concatenate([[0], np.cumsum(freq)]).astype(np.int32)


def pmf_to_quantized_cdf(pmf, precision: int) -> np.ndarray:
    """tfc 2.14's ``pmf_to_quantized_cdf``, bit-exact: ``pmf [..., n]`` -> int32 ``[..., n + 1]``.

    ``pmf`` is cast to float32 (the kernel's input type) and must be finite and non-negative,
    with ``n >= 2``; ``precision`` in [1, 16]. Rows start at 0 and end at ``2^precision``.
    """
    if not 1 <= int(precision) <= 16:
        raise ValueError(f"precision must be in [1, 16], got {precision}")
    pmf = np.asarray(pmf, np.float32)
    if pmf.ndim < 1 or pmf.shape[-1] < 2:
        raise ValueError(f"pmf must have at least 2 elements in its last axis, got {pmf.shape}")
    if not (np.all(np.isfinite(pmf)) and np.all(pmf >= 0)):
        raise ValueError("pmf has non-finite or negative elements")
    shape = pmf.shape[:-1] + (pmf.shape[-1] + 1,)
    rows = [_quantize_row(r, int(precision)) for r in pmf.reshape(-1, pmf.shape[-1])]
    return np.stack(rows).reshape(shape) if rows else np.zeros(shape, np.int32)


# -------------------------------------------------------------------------------------------------
# z: the factorized prior's tables.


def prior_params_of(params: Mapping[str, Any]) -> dict | None:
    """The factorized prior ``params['entropy_bottleneck']`` if it is well formed, else None."""
    prior = params.get("entropy_bottleneck") if isinstance(params, Mapping) else None
    if not isinstance(prior, Mapping) or "matrix_0" not in prior:
        return None
    k = sum(1 for name in prior if name.startswith("matrix_"))
    expected = {f"matrix_{i}" for i in range(k)} | {f"bias_{i}" for i in range(k)}
    expected |= {f"factor_{i}" for i in range(k - 1)}
    if set(prior) != expected:
        return None
    c, width = np.shape(prior["matrix_0"])[0], 1
    for i in range(k):
        shape = np.shape(prior[f"matrix_{i}"])
        out = shape[1] if len(shape) == 3 else -1
        if shape != (c, out, width) or np.shape(prior[f"bias_{i}"]) != (c, out, 1):
            return None
        if i < k - 1 and np.shape(prior[f"factor_{i}"]) != (c, out, 1):
            return None
        width = out
    return dict(prior) if width == 1 else None


@functools.cache
def _prior_functions() -> tuple[Callable, Callable, Callable]:
    """``entropy.factorized``'s medians, quantiles and likelihood, jitted: ``(medians(params,
    num_layers), quantiles(params, targets, num_layers), likelihood(params, z))``.

    JAX is imported here, where z tables are computed from a prior, and nowhere else in this
    module: the integer tables, the Gaussian asset and the coders built on them need no JAX.
    """
    import jax

    from mracnn_jax.entropy.factorized import FactorizedPrior, channel_medians, logit_quantiles

    def likelihood(prior_params, z):
        k = sum(1 for name in prior_params if name.startswith("matrix_"))
        filters = tuple(prior_params[f"matrix_{i}"].shape[1] for i in range(k - 1))
        return FactorizedPrior(z.shape[-1], filters).apply({"params": prior_params}, z)

    return (
        jax.jit(channel_medians, static_argnames=("num_layers",)),
        jax.jit(logit_quantiles, static_argnames=("num_layers", "iterations", "bound")),
        jax.jit(likelihood),
    )


def _float32(prior_params: Mapping[str, Any]) -> dict[str, np.ndarray]:
    return {k: np.asarray(v, np.float32) for k, v in prior_params.items()}


def z_support(
    prior_params: Mapping[str, Any], offsets, tail_mass: float = TAIL_MASS
) -> tuple[np.ndarray, np.ndarray]:
    """First symbol and number of symbols of each channel's z table: ``([C] int32, [C] int32)``.

    Symbols ``floor(lo_c - m_c) .. ceil(hi_c - m_c)``, clipped to ``MAX_HALF_WIDTH`` either side
    of 0, where ``lo_c``, ``hi_c`` are the ``tail_mass / 2`` and ``1 - tail_mass / 2`` quantiles
    (``entropy.factorized.logit_quantiles``, 64 halvings) and ``m_c = offsets[c]``.
    """
    num_layers = sum(1 for k in prior_params if k.startswith("matrix_"))
    p = tail_mass / 2
    targets = np.asarray([np.log(p / (1 - p)), np.log((1 - p) / p)], np.float32)
    quantiles = _prior_functions()[1]
    tails = quantiles(_float32(prior_params), targets, num_layers=num_layers)
    tails = np.asarray(tails, np.float64)
    offsets = np.asarray(offsets, np.float32).astype(np.float64)
    lo = np.clip(np.floor(tails[:, 0] - offsets), -MAX_HALF_WIDTH, 0)
    hi = np.clip(np.ceil(tails[:, 1] - offsets), 0, MAX_HALF_WIDTH)
    return lo.astype(np.int32), (hi - lo + 1).astype(np.int32)


def z_coding_tables(
    prior_params: Mapping[str, Any],
    likelihood_fn: Callable | None = None,
    *,
    offsets=None,
    tail_mass: float = TAIL_MASS,
    precision: int = PRECISION,
) -> dict[str, Any]:
    """The z offsets and range-coding tables of a factorized prior (see the module docstring).

    Args:
      prior_params: ``matrix_k``, ``bias_k``, ``factor_k`` (``params['entropy_bottleneck']``).
      likelihood_fn: ``z [L, C]`` (NumPy float32) ``-> P(unit bin around z) [L, C]``; default:
        ``FactorizedPrior``'s.
      offsets: per-channel offsets ``[C]``; default: the medians, as the model's ``z_offsets()``.

    Returns:
      ``{"z_offsets": float32 [C], "z_cdf": int32 flat, "z_cdf_offset": int32 [C],
      "precision": int, "tail_mass": float}``.
    """
    medians, _, likelihood = _prior_functions()
    prior_params = _float32(prior_params)
    num_layers = sum(1 for k in prior_params if k.startswith("matrix_"))
    if offsets is None:
        offsets = medians(prior_params, num_layers=num_layers)
    offsets = np.asarray(offsets, np.float32)
    minima, lengths = z_support(prior_params, offsets, tail_mass)
    grid = np.arange(int(lengths.max()), dtype=np.float32)[:, None] + minima.astype(np.float32)
    z = grid + offsets[None, :]
    pmf = likelihood(prior_params, z) if likelihood_fn is None else likelihood_fn(z)
    pmf = np.asarray(pmf, np.float64)
    rows = []
    for c in range(len(offsets)):
        q = pmf[: lengths[c], c]
        q = np.concatenate([q, [max(1.0 - q.sum(), 0.0)]])
        rows.append(np.concatenate([[-precision], pmf_to_quantized_cdf(q, precision)]))
    return {
        "z_offsets": offsets,
        "z_cdf": np.concatenate(rows).astype(np.int32),
        "z_cdf_offset": minima,
        "precision": int(precision),
        "tail_mass": float(tail_mass),
    }


# -------------------------------------------------------------------------------------------------
# y: the stored Gaussian tables.


@functools.lru_cache(maxsize=1)
def _gaussian_asset() -> dict[str, np.ndarray]:
    ref = importlib.resources.files("mracnn_jax") / "assets" / GAUSSIAN_ASSET
    with ref.open("rb") as f, np.load(f, allow_pickle=False) as npz:
        out = {k: np.array(npz[k]) for k in npz.files}
    for a in out.values():
        a.setflags(write=False)
    return out


def gaussian_tables() -> dict[str, Any]:
    """The y tables: ``{"cdf": int32 flat, "cdf_offset": int32 [64], "precision": int,
    "tail_mass": float, "scales": float32 [64]}`` (row i is the table of ``scales[i]``)."""
    a = _gaussian_asset()
    return {
        "cdf": a["cdf"],
        "cdf_offset": a["cdf_offset"],
        "precision": int(a["precision"]),
        "tail_mass": float(a["tail_mass"]),
        "scales": a["scales"],
    }

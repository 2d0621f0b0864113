"""Scale indexes that encoder and decoder agree on despite floating-point noise.

The y coder picks, for every latent element, one of the 64 Gaussian tables by its scale index

    k = clip(round(f), 0, 63),        f = scale_to_index(sigma)   (a float, computed on both sides)

The decoder recomputes f from its own decoded slices on its own hardware and library versions, so
its f may differ from the encoder's by float noise. Where f lies near a rounding boundary
(``b + 1/2``) the two sides would pick different tables and the range decoder would read garbage.

Tolerance. The format is sized for a decoder whose f differs from the encoder's by at most
``EPSILON`` = 9 x 10⁻⁴ index steps. One step is ``ln(256/0.11)/63 = 0.1231`` in ``ln sigma``, so
this is a relative difference of sigma up to ``exp(EPSILON * 0.1231) - 1 = 1.11e-4`` (the
portability contract asks for 1e-4).

What the decoder lacks. Where the two sides' f differ by less than the distance of the decoder's
f to its nearest boundary, the decoder's own rounding is the encoder's k; elsewhere the encoder's
k is the decoder's rounding moved one step across that boundary, which flips its parity. So the
decoder needs the parity of k of the elements nearest a boundary, nothing else. Within the
tolerance, these are the elements whose f lies within EPSILON of a boundary ("ambiguous",
``candidates``; about ``2 EPSILON`` of those whose sigma is inside the table), and as noise up to
the tolerance can move each of them either way, about one bit per ambiguous element is the least
that any scheme honouring the tolerance must send. This one sends that plus a few bits per slice.

Syndrome (Slepian–Wolf with a random linear code). A slice's elements (C order of ``[1, h, w, c]``)
form one group, or for large slices G groups of consecutive elements with about
``GROUP_AMBIGUOUS`` ambiguous ones each (which keeps the decoder's GF(2) work small). Per group the
encoder sends the m-bit vector

    s = XOR over the group's elements i with k_i odd of h(i),     h(i) = m pseudo-random bits

with m = (its ambiguous count) + spare rows. The spare rows are what brings the group's block to
``BUDGET`` (0.3 %) of the group's rate as the encoder estimates it from its k (the entropy of each
table, ``_table_bits``), at least ``MARGIN`` (4) and at most ``SPARE_MAX`` (32): small files, whose
ambiguous count alone is near that share, get 4; larger ones get more robustness where it costs
little. The last group also takes the bits up to the next byte boundary as rows (they would
otherwise be padding). h(i) is splitmix64 of ``(i << 8) | word`` (i the element's index in the
slice), integer arithmetic only, so both sides generate the same bits everywhere. The spare-row
rule is the encoder's choice alone: the decoder reads m.

Decoding (ordered statistics). The decoder XORs into s the h(i) of the elements its own rounding
makes odd; what remains, r, is the XOR of h(i) over the elements where the two sides disagree. It
sorts its elements by the distance of its f to the nearest boundary and eliminates over GF(2) the
columns h(i) in that order until ``m - c`` of them are independent, keeping c rows as checks (c =
``CHECKS`` = 8, or half of its rows beyond its own ambiguous count if more, or fewer, down to
``CHECKS_MIN`` = 4, when that is what it takes to solve for all of its ambiguous elements). When
the solution on those pivots passes the c checks, it is the answer: the disagreements were all
among the elements nearest a boundary, within the tolerance or not, and they are corrected at once.
Otherwise some disagreement lies further out (noise beyond the tolerance, which compounds along the
slice chain): the decoder tries flipping one or two further elements within ``OUTLIER_T`` of a
boundary whose columns satisfy the checks, and keeps the hypothesis that moves f the least (the
sum over the flipped elements of their distance to the boundary). No hypothesis:
``AgreementError``.

Guarantees. If every disagreement lies among the p elements nearest a boundary, p <= m - c (within
the tolerance: p = the decoder's ambiguous count, about the encoder's), the answer is the
encoder's unless those p columns are linearly dependent, probability < 2^(p - m) <= 2^-c. Under
realistic float noise (10⁻⁶ of sigma) p is 0 or 1, and the bound about 2^-m. Even then, a
dependent column is most often the last (with probability 1/2 and more), the most reliable of the
p, and takes the decoder's own rounding, which is then usually right; whatever goes wrong is
caught by the file's index digest. Beyond the tolerance the decoder usually still succeeds (rows
past the ambiguous ones, one or two far outliers) but nothing is promised.

Cost per slice: one bit per ambiguous element, the spare rows, a 5–7 bit length code, and the bits
up to a byte boundary (which serve as rows).

Block layout (per slice, before its range-coded string), whose one home is docs/format.md
("Portability: the agreement block"): an Exp-Golomb length code, then one group's syndrome, or
Elias gamma of the group count and each group's length code and syndrome; the last group's rows
end on a byte boundary. At most ``MAX_ROWS`` bits per group. The block is self-delimiting given
the element count.
"""

from __future__ import annotations

import functools
import math

import numpy as np

from mracnn_jax.coding.gf2 import eliminate, hash_rows, pack_rows, to_bits, unpack_rows, xor_hashes

EPSILON = 9e-4  # index steps: the tolerance the syndrome is sized for (sigma relative 1.11e-4)
MARGIN = 4  # least spare syndrome rows per group, beyond the encoder's ambiguous count ...
SPARE_MAX = 32  # ... most ...
BUDGET = 3e-3  # ... and in between, what brings the block to this share of the estimated rate
CHECKS = 8  # the decoder keeps this many rows as checks (more if it has spare rows) ...
CHECKS_MIN = 4  # ... or at least this many, to solve for all its ambiguous elements
OUTLIER_T = 4e-3  # the decoder looks this far from a boundary for one or two outliers
WINDOW = 64  # the decoder eliminates over m + WINDOW candidates at first
PAIR_CANDIDATES = 256  # outlier pairs are looked for among this many nearest non-pivots
GROUP_AMBIGUOUS = 256  # a slice with more ambiguous elements than twice this is cut into groups
MAX_GROUP_ROWS = 1024 + SPARE_MAX  # the encoder cuts finer until no group needs more rows
MAX_ROWS = 1 << 14  # format limit on the rows of one group (the hash's word index is 8 bits)
NUM_SCALES = 64


class AgreementError(ValueError):
    """The scale indexes cannot be agreed on (the message, one line, says why)."""


def _check_finite(f: np.ndarray) -> None:
    """``AgreementError`` unless every f is finite (NaN rounds to no table)."""
    if not np.isfinite(f).all():
        raise AgreementError("the scale indexes f are not finite (NaN or infinity)")


def rounded(f: np.ndarray) -> np.ndarray:
    """The encoder's index: ``clip(round(f), 0, 63)`` as int32."""
    return np.clip(np.round(np.asarray(f, np.float64)), 0, NUM_SCALES - 1).astype(np.int32)


def candidates(f: np.ndarray, eps: float = EPSILON) -> tuple[np.ndarray, np.ndarray]:
    """``(lo, hi)`` int32: the indexes any f' within ``eps`` of ``f`` rounds to."""
    f = np.asarray(f, np.float64)
    lo = np.clip(np.round(f - eps), 0, NUM_SCALES - 1).astype(np.int32)
    hi = np.clip(np.round(f + eps), 0, NUM_SCALES - 1).astype(np.int32)
    return lo, hi


def _boundary(f: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(t, b)``: the distance of f to its nearest boundary ``b + 1/2`` (0 <= b <= 62), where
    rounding changes between b and b + 1."""
    f = np.asarray(f, np.float64)
    b = np.clip(np.floor(f), 0, NUM_SCALES - 2)
    return np.abs(f - (b + 0.5)), b.astype(np.int32)


@functools.lru_cache(maxsize=1)
def _table_bits() -> np.ndarray:
    """Entropy in bits of each table's distribution (unit bins of a centred Gaussian): the
    encoder's estimate of a group's rate, which sets its spare rows."""
    scales = np.exp(np.linspace(np.log(0.11), np.log(256.0), NUM_SCALES))
    out = np.empty(NUM_SCALES)
    for k, s in enumerate(scales):
        half = int(8 * s) + 2
        edges = (np.arange(-half, half + 2) - 0.5) / (s * math.sqrt(2.0))
        p = np.diff(0.5 * (1.0 + np.array([math.erf(e) for e in edges])))
        p = p[p > 0]
        out[k] = -(p * np.log2(p)).sum()
    return out


class _BitWriter:
    def __init__(self):
        self.bits: list[np.ndarray] = []
        self.n = 0

    def raw(self, bits) -> None:
        b = np.asarray(bits, bool)
        self.bits.append(b)
        self.n += len(b)

    def uint(self, value: int, width: int) -> None:
        self.raw(np.array([(value >> (width - 1 - j)) & 1 for j in range(width)], bool))

    def exp_golomb(self, value: int, k: int) -> None:
        """Order-k Exp-Golomb code of ``value >= 0`` (k = 0: Elias gamma of value + 1)."""
        v = (value >> k) + 1
        nb = v.bit_length()
        self.raw(np.zeros(nb - 1, bool))
        self.uint(v, nb)
        self.uint(value & ((1 << k) - 1), k)

    def tobytes(self) -> bytes:
        bits = np.concatenate(self.bits) if self.bits else np.zeros(0, bool)
        return np.packbits(bits).tobytes()


def _eg_len(value: int, k: int) -> int:
    return 2 * ((value >> k) + 1).bit_length() - 1 + k


class _BitReader:
    def __init__(self, data: bytes):
        self.bits = np.unpackbits(np.frombuffer(data, np.uint8)).astype(bool)
        self.pos = 0

    def _need(self, n: int) -> None:
        if self.pos + n > len(self.bits):
            raise AgreementError("the scale-index block of a y slice is truncated")

    def raw(self, n: int) -> np.ndarray:
        self._need(n)
        out = self.bits[self.pos : self.pos + n]
        self.pos += n
        return out

    def uint(self, width: int) -> int:
        value = 0
        for b in self.raw(width):
            value = (value << 1) | int(b)
        return value

    def exp_golomb(self, k: int) -> int:
        zeros = 0
        while True:
            self._need(1)
            if self.bits[self.pos]:
                break
            zeros += 1
            self.pos += 1
            if zeros > 32:
                raise AgreementError("malformed scale-index block (bad length code)")
        return ((self.uint(zeros + 1) - 1) << k) | self.uint(k)

    def consumed_bytes(self) -> int:
        return -(-self.pos // 8)


def _k_bytes(n: int) -> int:
    return max(0, int(n * EPSILON / 4).bit_length() - 1)


def _k_rows(n: int) -> int:
    return max(0, int(n * EPSILON).bit_length() - 1)


def _bounds(n: int, groups: int) -> list[tuple[int, int]]:
    return [(j * n // groups, (j + 1) * n // groups) for j in range(groups)]


def _spare(bits: float, ambiguous: int) -> int:
    """Spare rows for a group whose symbols are estimated at ``bits`` (8: the length code and the
    end of the byte)."""
    return int(min(SPARE_MAX, max(MARGIN, BUDGET * bits - ambiguous - 8)))


def _plan(ambiguous: np.ndarray, rate: np.ndarray) -> tuple[list[tuple[int, int]], list[int]]:
    """The encoder's groups and the rows each needs (ambiguous count + spare rows)."""
    n = len(ambiguous)
    total = int(ambiguous.sum())
    groups = 1 if total <= 2 * GROUP_AMBIGUOUS else -(-total // GROUP_AMBIGUOUS)
    while True:
        bounds = _bounds(n, groups)
        counts = [int(ambiguous[a:b].sum()) for a, b in bounds]
        needs = [c + _spare(float(rate[a:b].sum()), c) for c, (a, b) in zip(counts, bounds)]
        if max(needs) <= MAX_GROUP_ROWS or groups >= n:
            return bounds, needs
        groups = min(n, 2 * groups)


def _last_rows(out_pos: int, need: int, k: int, shift: int) -> tuple[int, int]:
    """(v, m) for the last group: the fewest bytes v after its length code that hold ``need``."""
    v = max(0, need // 8 - 1)
    while True:
        pos = out_pos + _eg_len(v + shift, k)
        m = 8 * (pos // 8 + v) - pos
        if m >= need:
            return v, m
        v += 1


def encode(f: np.ndarray) -> tuple[np.ndarray, bytes]:
    """The encoder's side: pre-rounding indexes ``f`` -> (k int32 of f's shape, block bytes);
    ``AgreementError`` where an f is not finite."""
    f = np.asarray(f)
    _check_finite(f)
    k = rounded(f)
    flat_k = k.reshape(-1)
    n = flat_k.size
    lo, hi = candidates(f.reshape(-1))
    bounds, needs = _plan(lo != hi, _table_bits()[flat_k])
    out = _BitWriter()
    if len(bounds) > 1:
        out.exp_golomb(0, _k_bytes(n))
        out.exp_golomb(len(bounds) - 2, 0)
    for j, ((start, end), need) in enumerate(zip(bounds, needs)):
        if j < len(bounds) - 1:
            m = need
            out.exp_golomb(m, _k_rows(end - start))
        else:
            kb = _k_bytes(end - start)
            shift = 1 if len(bounds) == 1 else 0  # one group: w = v + 1, as w = 0 means several
            v, m = _last_rows(out.n, need, kb, shift)
            out.exp_golomb(v + shift, kb)
        if m > MAX_ROWS:
            raise AgreementError(f"{m} syndrome rows in one group: more than the format holds")
        odd = start + np.flatnonzero(flat_k[start:end] & 1)
        words = -(-m // 64)
        out.raw(to_bits(xor_hashes(odd.astype(np.int64), words), m))
    return k, out.tobytes()


_MISMATCH = (
    "the scale indexes cannot be agreed on: the decoder's entropy parameters differ from the "
    "encoder's by more than the format's tolerance"
)


def _nearest(t: np.ndarray, count: int) -> np.ndarray:
    """Indexes of the ``count`` smallest t, smallest first."""
    if count >= len(t):
        idx = np.arange(len(t))
    else:
        near = np.flatnonzero(t < OUTLIER_T)  # usually enough, and far fewer than all
        if len(near) < count:
            near = np.arange(len(t))
        idx = near[np.argpartition(t[near], count - 1)[:count]] if count < len(near) else near
    return idx[np.argsort(t[idx], kind="stable")]


def _search(t_cand, piv, bits, rank, length):
    """One or two non-pivot candidates whose flip satisfies the checks, the hypothesis that moves
    f the least; returns the candidate positions to flip, or None."""
    r_top, c = bits[:rank, length], bits[rank:, length]
    is_piv = np.zeros(length, bool)
    is_piv[piv] = True
    nonpiv = np.flatnonzero(~is_piv)
    if len(nonpiv) == 0:
        return None
    bottoms = np.packbits(bits[rank:, nonpiv].T, axis=1)
    keys = [int.from_bytes(row.tobytes(), "big") for row in bottoms]
    want = int.from_bytes(np.packbits(c).tobytes(), "big")
    hyps = [(a,) for a, key in enumerate(keys) if key == want]
    seen: dict[int, list[int]] = {}
    for a in range(min(len(nonpiv), PAIR_CANDIDATES)):
        hyps += [(b, a) for b in seen.get(keys[a] ^ want, ())]
        seen.setdefault(keys[a], []).append(a)
    if not hyps:
        return None
    tops = bits[:rank, nonpiv].T  # [non-pivots, rank]
    t_piv = t_cand[piv]
    best, best_cost = None, math.inf
    for h in hyps:
        e_top = r_top.copy()
        for a in h:
            e_top ^= tops[a]
        cost = float(t_piv[e_top].sum() + t_cand[nonpiv[list(h)]].sum())
        if cost < best_cost:
            best, best_cost = np.concatenate([piv[e_top], nonpiv[list(h)]]), cost
    return best


def _solve_group(t: np.ndarray, guess: np.ndarray, start: int, s_bits: np.ndarray):
    """The positions (within the group) where the encoder's k is the decoder's rounding moved
    across the nearest boundary; None when no hypothesis fits."""
    m = len(s_bits)
    if m == 0:
        return np.zeros(0, np.int64)
    words = -(-m // 64)
    odd = start + np.flatnonzero(guess & 1)
    r = s_bits ^ to_bits(xor_hashes(odd.astype(np.int64), words), m)
    if not r.any():
        return np.zeros(0, np.int64)  # the decoder's rounding everywhere: no flip is the answer
    spare = m - int((t < EPSILON).sum())  # rows beyond the decoder's own ambiguous count
    checks = min(m, max(CHECKS_MIN, min(CHECKS, spare), spare // 2))
    first = min(len(t), m + WINDOW)
    wide = min(len(t), max(first, min(int((t < OUTLIER_T).sum()), m + max(4 * m, 256))))
    for length in (first, wide) if wide > first else (first,):
        cand = _nearest(t, length)
        cols = to_bits(hash_rows((start + cand).astype(np.int64), words), m)  # [length, m]
        mat = pack_rows(np.concatenate([cols.T, r[:, None]], axis=1))
        rank, piv = eliminate(mat, length, m - checks)
        bits = unpack_rows(mat, length + 1)
        if not bits[rank:, length].any():  # the nearest elements explain r: pass every check
            return cand[piv[bits[:rank, length]]]
    found = _search(t[cand], piv, bits, rank, length)
    return None if found is None else cand[found]


def decode(f: np.ndarray, data: bytes) -> tuple[np.ndarray, int]:
    """The decoder's side: its own ``f`` and the slice's bytes -> (k int32, block length in bytes).

    ``data`` may continue past the block (the range-coded string follows it). Raises
    ``AgreementError`` where the block is malformed, the parities cannot be agreed on, or an f is
    not finite.
    """
    f = np.asarray(f)
    flat_f = f.reshape(-1).astype(np.float64)
    _check_finite(flat_f)
    n = flat_f.size
    guess = rounded(flat_f)
    t, b = _boundary(flat_f)
    k = guess.copy()
    reader = _BitReader(data)
    w = reader.exp_golomb(_k_bytes(n))
    groups = 1 if w else reader.exp_golomb(0) + 2
    if groups > max(1, n):
        raise AgreementError("malformed scale-index block (more groups than elements)")
    bounds = _bounds(n, groups)
    for j, (start, end) in enumerate(bounds):
        if j < groups - 1:
            m = reader.exp_golomb(_k_rows(end - start))
        else:
            v = w - 1 if groups == 1 else reader.exp_golomb(_k_bytes(end - start))
            m = 8 * (reader.pos // 8 + v) - reader.pos
        if not 0 <= m <= MAX_ROWS:
            raise AgreementError("malformed scale-index block (bad syndrome length)")
        flips = _solve_group(t[start:end], guess[start:end], start, reader.raw(m))
        if flips is None:
            raise AgreementError(_MISMATCH)
        e = start + flips
        k[e] = 2 * b[e] + 1 - guess[e]
    return k.reshape(f.shape), reader.consumed_bytes()

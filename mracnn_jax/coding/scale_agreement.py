"""Scale indexes that encoder and decoder agree on despite floating-point noise.

The y coder picks, for every latent element, one of the 64 Gaussian tables by its scale index

    k = clip(round(f), 0, 63),        f = scale_to_index(sigma)   (a float, computed on both sides)

The decoder recomputes f from its own decoded slices on its own hardware and library versions, so
its f may differ from the encoder's by float noise. Where f lies near a rounding boundary
(``n + 1/2``) the two sides would pick different tables and the range decoder would read garbage.

Tolerance. Both sides accept that the decoder's f may differ from the encoder's by at most
``EPSILON`` (10⁻³ index steps). One step is ``ln(256/0.11)/63 = 0.1231`` in ``ln sigma``, so this
is a relative difference of sigma up to ``exp(EPSILON * 0.1231) - 1 = 1.23e-4``.

Ambiguous elements. With ``lo = clip(round(f - EPSILON))`` and ``hi = clip(round(f + EPSILON))``,
an element is *ambiguous* for a side when ``lo != hi`` (then ``hi = lo + 1``). If the two sides'
f differ by at most EPSILON, the encoder's k is always the decoder's ``lo`` or ``hi``, and equals
``lo`` wherever the decoder sees no ambiguity (round is monotone). So the decoder knows every k
but, for each of its ambiguous elements, one bit: the parity of k.

Syndrome (Slepian–Wolf with a random linear code). The encoder sends, per group of at most
``GROUP`` consecutive elements (C order of the slice ``[1, h, w, c]``), the ``m``-bit vector

    s = XOR over elements i with k_i odd of h(i),     h(i) = m pseudo-random bits of element i

with ``m = (encoder's ambiguous count) + MARGIN``. The decoder XORs out the elements it is sure of
and solves ``A x = r`` over GF(2) for the parities x of its ambiguous elements (A: their h(i) as
columns); a random m x u matrix with m >= u + 12 has full column rank with probability > 1 - 2⁻¹².
If it does not (or the decoder sees more ambiguous elements than rows), the free parities take
the decoder's own rounding; the file's index digest then tells whether the result is right. An
inconsistent system means the two sides differ by more than the tolerance: ``AgreementError``.

h(i) is splitmix64 of ``(i << 8) | word``, integer arithmetic only, so both sides generate the
same bits everywhere. Cost: about one bit per ambiguous element (a fraction ``2 EPSILON`` of
the elements whose sigma is inside the table) plus, per group, ``MARGIN`` bits and an Elias-gamma
coded count; the whole block is padded to a byte.

Block layout (per slice, before its range-coded string): for each group in order,
``gamma(m - MARGIN + 1)`` then the m syndrome bits (bit j of word j // 64, least significant
first); then zero bits up to the next byte. The block is self-delimiting given the element count.
"""

from __future__ import annotations

import numpy as np

EPSILON = 1e-3  # index steps: the decoder's f may differ from the encoder's by this much
MARGIN = 32  # syndrome bits beyond the encoder's ambiguous count: rank, and checks for outliers
OUTLIER_EPSILON = 4e-3  # the decoder looks for one or two outliers this close to a boundary
GROUP = 1 << 16  # elements per syndrome
MAX_WORDS = 256  # 64-bit words per syndrome (m <= 16384)
NUM_SCALES = 64

_U64 = np.uint64


class AgreementError(ValueError):
    """The scale indexes cannot be agreed on (the message, one line, says why)."""


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's output function of ``x + golden`` (uint64 in, uint64 out, wrapping)."""
    z = x + _U64(0x9E3779B97F4A7C15)
    z = (z ^ (z >> _U64(30))) * _U64(0xBF58476D1CE4E5B9)
    z = (z ^ (z >> _U64(27))) * _U64(0x94D049BB133111EB)
    return z ^ (z >> _U64(31))


def _hash_words(index: np.ndarray, words: int) -> np.ndarray:
    """h(i) for element indexes ``index [n]``: ``[n, words]`` uint64."""
    keys = (index.astype(_U64)[:, None] << _U64(8)) | np.arange(words, dtype=_U64)[None, :]
    with np.errstate(over="ignore"):
        return _splitmix64(keys)


def _xor_rows(h: np.ndarray, words: int) -> np.ndarray:
    if len(h) == 0:
        return np.zeros(words, _U64)
    return np.bitwise_xor.reduce(h, axis=0)


def _to_bits(words: np.ndarray, m: int) -> np.ndarray:
    """uint64 ``[..., W]`` -> bool ``[..., m]`` (bit j of word j // 64, LSB first)."""
    shifts = np.arange(64, dtype=_U64)
    bits = (words[..., :, None] >> shifts) & _U64(1)
    return bits.reshape(*words.shape[:-1], 64 * words.shape[-1])[..., :m].astype(bool)


def rounded(f: np.ndarray) -> np.ndarray:
    """The encoder's index: ``clip(round(f), 0, 63)`` as int32."""
    return np.clip(np.round(np.asarray(f, np.float64)), 0, NUM_SCALES - 1).astype(np.int32)


def candidates(f: np.ndarray, eps: float = EPSILON) -> tuple[np.ndarray, np.ndarray]:
    """``(lo, hi)`` int32: the indexes any f' within ``eps`` of ``f`` rounds to."""
    f = np.asarray(f, np.float64)
    lo = np.clip(np.round(f - eps), 0, NUM_SCALES - 1).astype(np.int32)
    hi = np.clip(np.round(f + eps), 0, NUM_SCALES - 1).astype(np.int32)
    return lo, hi


def _groups(n: int):
    for start in range(0, n, GROUP):
        yield start, min(start + GROUP, n)


class _BitWriter:
    def __init__(self):
        self.bits: list[np.ndarray] = []

    def gamma(self, value: int) -> None:
        """Elias gamma code of ``value >= 1``."""
        b = np.array([int(c) for c in bin(value)[2:]], bool)
        self.bits.append(np.zeros(len(b) - 1, bool))
        self.bits.append(b)

    def raw(self, bits: np.ndarray) -> None:
        self.bits.append(np.asarray(bits, bool))

    def tobytes(self) -> bytes:
        bits = np.concatenate(self.bits) if self.bits else np.zeros(0, bool)
        return np.packbits(bits).tobytes()


class _BitReader:
    def __init__(self, data: bytes):
        self.bits = np.unpackbits(np.frombuffer(data, np.uint8)).astype(bool)
        self.pos = 0

    def _need(self, n: int) -> None:
        if self.pos + n > len(self.bits):
            raise AgreementError("the scale-index block of a y slice is truncated")

    def gamma(self) -> int:
        zeros = 0
        while True:
            self._need(1)
            if self.bits[self.pos]:
                break
            zeros += 1
            self.pos += 1
            if zeros > 32:
                raise AgreementError("malformed scale-index block (bad length code)")
        self._need(zeros + 1)
        value = int(
            "".join("1" if b else "0" for b in self.bits[self.pos : self.pos + zeros + 1]), 2
        )
        self.pos += zeros + 1
        return value

    def raw(self, n: int) -> np.ndarray:
        self._need(n)
        out = self.bits[self.pos : self.pos + n]
        self.pos += n
        return out

    def consumed_bytes(self) -> int:
        return -(-self.pos // 8)


def encode(f: np.ndarray) -> tuple[np.ndarray, bytes]:
    """The encoder's side: pre-rounding indexes ``f`` -> (k int32 of f's shape, block bytes)."""
    f = np.asarray(f)
    k = rounded(f)
    flat_k = k.reshape(-1)
    lo, hi = candidates(f.reshape(-1))
    ambiguous = lo != hi
    out = _BitWriter()
    for start, end in _groups(flat_k.size):
        m = int(ambiguous[start:end].sum()) + MARGIN
        words = -(-m // 64)
        if words > MAX_WORDS:
            raise AgreementError(
                f"{m} ambiguous scale indexes in one group: more than the format holds"
            )
        odd = start + np.flatnonzero(flat_k[start:end] & 1)
        s = _xor_rows(_hash_words(odd, words), words)
        out.gamma(m - MARGIN + 1)
        out.raw(_to_bits(s, m))
    return k, out.tobytes()


_MISMATCH = (
    "the scale indexes cannot be agreed on: the decoder's entropy parameters differ from the "
    "encoder's by more than the format's tolerance"
)


def _reduce(a: np.ndarray) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """Gauss–Jordan elimination of ``a`` (bool ``[m, u]``) over GF(2).

    Returns ``(reduced, transform, pivots)`` with ``reduced = transform @ a`` (mod 2) in reduced
    row echelon form; the rows of ``transform`` past ``len(pivots)`` span the left null space of
    ``a``: they are the checks that any right-hand side must pass.
    """
    m, u = a.shape
    aug = np.concatenate([a, np.eye(m, dtype=bool)], axis=1).astype(np.uint8)
    pivots: list[int] = []
    row = 0
    for col in range(u):
        if row >= m:
            break
        hits = np.flatnonzero(aug[row:, col]) + row
        if len(hits) == 0:
            continue
        p = hits[0]
        if p != row:
            aug[[row, p]] = aug[[p, row]]
        others = np.flatnonzero(aug[:, col])
        others = others[others != row]
        aug[others] ^= aug[row]
        pivots.append(col)
        row += 1
    return aug[:, :u].astype(bool), aug[:, u:].astype(bool), pivots


def _gf2_dot(rows: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """``rows [k, m] @ vectors [n, m]^T`` over GF(2): ``[n, k]`` bool."""
    return (vectors.astype(np.int64) @ rows.T.astype(np.int64)) & 1 == 1


def _outliers(checks: np.ndarray, r: np.ndarray, columns: np.ndarray) -> list[int] | None:
    """The one or two candidate columns whose flip makes ``r`` pass every check, or None.

    ``checks [c, m]``: the left null space rows; ``columns [n, m]``: h(j) of the candidates.
    """
    target = _gf2_dot(checks, r[None, :])[0]
    if len(columns) == 0 or len(checks) == 0:
        return None
    moved = _gf2_dot(checks, columns)  # [n, c]
    single = np.flatnonzero((moved == target).all(axis=1))
    if len(single) == 1:
        return [int(single[0])]
    if len(single) > 1:
        return None
    weights = 1 << np.arange(len(target), dtype=object)
    keys = [int(sum(w for w, b in zip(weights, row) if b)) for row in moved]
    want = int(sum(w for w, b in zip(weights, target) if b))
    seen: dict[int, int] = {}
    found = []
    for j, key in enumerate(keys):
        other = seen.get(key ^ want)
        if other is not None:
            found.append([other, j])
        seen.setdefault(key, j)
    return found[0] if len(found) == 1 else None


def _solve_group(a, r, guess):
    """Parities x of the ambiguous elements with ``a x = r`` (free variables take ``guess``);
    ``None`` when the system has no solution."""
    reduced, transform, pivots = _reduce(a)
    rank = len(pivots)
    rhs = _gf2_dot(transform, r[None, :])[0]
    if rhs[rank:].any():
        return None, transform[rank:]
    u = a.shape[1]
    x = guess.astype(np.uint8).copy()
    free = np.ones(u, bool)
    free[pivots] = False
    # Reduced row echelon form: pivot row i reads x[pivot_i] + sum(free terms) = rhs_i.
    for i, col in enumerate(pivots):
        x[col] = (int(rhs[i]) + int((reduced[i][free] & x[free].astype(bool)).sum())) & 1
    return x.astype(bool), transform[rank:]


def decode(f: np.ndarray, data: bytes) -> tuple[np.ndarray, int]:
    """The decoder's side: its own ``f`` and the slice's bytes -> (k int32, block length in bytes).

    ``data`` may continue past the block (the range-coded string follows it).
    """
    f = np.asarray(f)
    flat_f = f.reshape(-1)
    lo, hi = candidates(flat_f)
    guess = rounded(flat_f)
    k = lo.copy()
    reader = _BitReader(data)
    for start, end in _groups(flat_f.size):
        m = reader.gamma() - 1 + MARGIN
        words = -(-m // 64)
        if words > MAX_WORDS:
            raise AgreementError("malformed scale-index block (syndrome too long)")
        s_bits = reader.raw(m)
        g_lo, g_hi = lo[start:end], hi[start:end]
        amb = np.flatnonzero(g_lo != g_hi)
        sure_odd = start + np.flatnonzero((g_lo == g_hi) & (g_lo & 1).astype(bool))
        known = _to_bits(_xor_rows(_hash_words(sure_odd, words), words), m)
        r = s_bits ^ known
        a = _to_bits(_hash_words(start + amb, words), m).T  # [m, u]
        amb_guess = (guess[start:end][amb] & 1).astype(bool)
        parity, checks = _solve_group(a, r, amb_guess)
        if parity is None:
            # Rare outliers: an element the decoder was sure of moved further than EPSILON.
            # Candidates lie within OUTLIER_EPSILON of a boundary; one or two of them whose flip
            # satisfies every check (the spare syndrome rows) are taken, else it is an error.
            w_lo, w_hi = candidates(flat_f[start:end], OUTLIER_EPSILON)
            cand = np.flatnonzero((w_lo != w_hi) & (g_lo == g_hi))
            cols = _to_bits(_hash_words(start + cand, words), m)
            flips = _outliers(checks, r, cols)
            if flips is None:
                raise AgreementError(_MISMATCH)
            for j in flips:
                e = cand[j]
                k[start + e] = w_hi[e] if g_lo[e] == w_lo[e] else w_lo[e]
                r = r ^ cols[j]
            parity, _ = _solve_group(a, r, amb_guess)
            if parity is None:
                raise AgreementError(_MISMATCH)
        chosen = np.where((g_lo[amb] & 1).astype(bool) == parity, g_lo[amb], g_hi[amb])
        k[start + amb] = chosen
    return k.reshape(f.shape), reader.consumed_bytes()

"""Tiles as a way of computing: g_a and g_s run tile by tile with halos, the latent is one.

Pure NumPy (no JAX: the CLI reads the defaults). An ``H x W`` image is padded to the canvas of the
untiled codec (a multiple of 64, the image centred, zeros around: ``models.padding``). Along each
axis of ``n`` canvas units, tile ``k`` owns ``[kT, min((k + 1) T, n))`` and its transform sees the
window

    lead = ceil(a / A) A,   length = min(T + 2 lead, n),   start = clip(kT - lead, 0, n - length)

(``T``: tile, ``a``: halo, ``A``: the model's alignment, ``lead``: the halo rounded up to a
multiple of it; every window of an axis has the same length, so a transform compiles once; a
window that would cross the canvas's edge is shifted inside it, so at the edge it sees the same
zero padding as the untiled transform). Only the window's part over the tile is kept.

Alignment (``alignment``). A tile's transform sees the canvas from its window's origin, so every
layer whose output depends on absolute position must find that origin on its own grid: g_a's
stride-2 convolutions (16 pixels for the four of them), and WAM's (shifted) window attention,
which cuts a feature map at stride r into w x w windows from its origin (r w pixels: WACNN's
windows of 8 at 1/4 and of 4 at 1/16 need 32 and 64). With ``T`` and the lead multiples of A,
every window starts on a multiple of A (the canvas is one too), and the tiled transforms see the
untiled grid; ELAM models need 16, where the rounding changes nothing.

* analysis: windows of the canvas in pixels (``T``, ``a`` = ``halo_analysis``, ``A``), g_a's
  output kept over the tile's latent block (stride 16); the blocks make the whole latent y;
* synthesis: windows of the decoded latent y^ in latent pixels (``T / 16``, ``halo_synthesis /
  16``, ``A / 16``), g_s's output kept over the tile's pixels and cropped to the image.

Tiles never reach the bitstream: the latent is coded as one (``codec.latents``), so a file has no
seams, the same bits as untiled coding up to float noise in g_a, and decodes with any tile size.
Memory follows the tile size for the pixel-domain work; the latent (``M / 256`` floats a pixel)
and its entropy parameters are held for the whole image.

Halos (measured in docs/benchmarks.md, "Seamless tiles", q2 on a 1024x1536 Kodak mosaic, 256
tiles): g_a with 64 pixels leaves y within 3e-4 of the untiled y (66 of 2 million symbols
change), 96 pixels reaches float noise (2e-6: the same file, byte for byte); g_s with 4 latent
pixels (64 pixels) gives the untiled image up to a rounding (90.9 dB, at most one grey level),
with 1 latent pixel 61 dB. The defaults are 96 and 64 (a WACNN model's analysis halo is then
128, its alignment's multiple).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np

BLOCK = 64  # tile sizes are multiples of the codec's total stride
LATENT_STRIDE = 16  # g_a's stride: halos and alignments are multiples of it
MAX_TILE = 65472  # the largest multiple of 64 below 2^16
MAX_HALO = 4096

# Defaults of the codec and the CLI (docs/benchmarks.md, "Seamless tiles").
DEFAULT_TILE = 512  # pixels
DEFAULT_HALO = (96, 64)  # (analysis, synthesis) pixels: the same file as one piece, no seams
AUTO_TILE_PIXELS = 2**21  # images with more pixels than this (1448²) are computed in tiles


def alignment(config) -> int:
    """Pixels ``A``: the multiple that every tile window's origin must be for the model of
    ``config`` (a model config: ``transform``, ``attention``, ``third_elam``, ``wam``) to compute
    on the untiled grid (module docstring), ``lcm(16, r_i w_i)`` over its window attentions
    (window ``w_i`` at stride ``r_i``; ``models.transforms``): 16 for ELAM models, 64 for WACNN."""
    align = LATENT_STRIDE
    if config.attention == "wam":
        strides_n = (4, 8) if config.transform == "mracb" and config.third_elam else (4,)
        for r in strides_n:
            align = math.lcm(align, r * int(config.wam.window_n))
        align = math.lcm(align, LATENT_STRIDE * int(config.wam.window_m))
    return align


def rounded_halo(halo: int, align: int) -> int:
    """The halo a window really has: ``halo`` rounded up to a multiple of ``align``."""
    return -(-halo // align) * align


def check_tiling(tile: int | None, halo, align: int = LATENT_STRIDE) -> None:
    """Raises ``ValueError`` (one line) for a tile size or halo this module cannot use: ``tile``
    a multiple of ``lcm(64, align)`` up to ``MAX_TILE`` (or ``None``), ``halo`` two integers
    ``(analysis, synthesis)``, each a multiple of 16 in 0..``MAX_HALO``. ``align``: the model's
    ``alignment`` in pixels, a positive multiple of 16."""
    if isinstance(align, bool) or not isinstance(align, (int, np.integer)) or align < 1:
        raise ValueError(f"alignment must be a positive integer, got {align!r}")
    if align % LATENT_STRIDE:
        raise ValueError(f"alignment {align} is not a multiple of {LATENT_STRIDE}")
    if tile is not None:
        if isinstance(tile, bool) or not isinstance(tile, (int, np.integer)):
            raise ValueError(f"tile size must be an integer, got {tile!r}")
        if tile < BLOCK or tile % BLOCK or tile > MAX_TILE:
            good = max(BLOCK, -(-max(int(tile), 1) // BLOCK) * BLOCK)
            raise ValueError(
                f"tile size {tile} is not a positive multiple of {BLOCK} up to {MAX_TILE} "
                f"(try {good})"
            )
        step = math.lcm(BLOCK, int(align))
        if tile % step:
            raise ValueError(
                f"tile size {tile} is not a multiple of {step}, the model's window alignment "
                f"(try {rounded_halo(int(tile), step)})"
            )
    if isinstance(halo, (str, bytes)) or not isinstance(halo, (tuple, list)) or len(halo) != 2:
        raise ValueError(f"halo must be two integers (analysis, synthesis) in pixels, got {halo!r}")
    for name, h in zip(("analysis", "synthesis"), halo):
        if isinstance(h, bool) or not isinstance(h, (int, np.integer)):
            raise ValueError(f"{name} halo must be an integer, got {h!r}")  # noqa: TRY004
        if h < 0 or h % LATENT_STRIDE or h > MAX_HALO:
            raise ValueError(
                f"{name} halo {h} must be a multiple of {LATENT_STRIDE} in 0..{MAX_HALO}"
            )


@dataclasses.dataclass(frozen=True)
class Span:
    """One tile along one axis: its window ``[start, start + length)`` and the part it owns,
    ``[own_start, own_stop)`` (canvas units: pixels, or latent pixels)."""

    start: int
    length: int
    own_start: int
    own_stop: int


def spans(n: int, tile: int, halo: int, align: int = 1) -> list[Span]:
    """The tiles of an axis of ``n`` units (module docstring): the halo rounded up to a multiple
    of ``align``; with ``n`` and ``tile`` multiples of ``align``, so is every ``start``."""
    lead = rounded_halo(halo, align)
    length = min(tile + 2 * lead, n)
    out = []
    for own in range(0, n, tile):
        start = min(max(own - lead, 0), n - length)
        out.append(Span(start, length, own, min(own + tile, n)))
    return out


@dataclasses.dataclass(frozen=True)
class TilePlan:
    """How one image is computed: its canvas (``models.padding``: the padded size, and the
    position of the image's top-left pixel on it), tile size (``None``: one tile), halos and the
    model's ``alignment`` (pixels)."""

    height: int
    width: int
    canvas: tuple[int, int]
    offset: tuple[int, int]
    tile: int | None = None
    halo: tuple[int, int] = DEFAULT_HALO  # (analysis, synthesis) pixels
    align: int = LATENT_STRIDE  # pixels: every window starts on a multiple (``alignment``)

    def __post_init__(self):
        check_tiling(self.tile, self.halo, self.align)
        if any(n % BLOCK for n in self.canvas):
            raise ValueError(f"canvas {self.canvas} is not a multiple of {BLOCK}")

    @property
    def latent_shape(self) -> tuple[int, int]:
        ch, cw = self.canvas
        return ch // LATENT_STRIDE, cw // LATENT_STRIDE

    def _grid(self, stride: int, halo: int) -> list[tuple[Span, Span]]:
        ch, cw = (n // stride for n in self.canvas)
        tile = max(ch, cw) if self.tile is None else self.tile // stride
        args = (tile, halo // stride, self.align // stride)
        return [(r, c) for r in spans(ch, *args) for c in spans(cw, *args)]

    def analysis_tiles(self) -> list[tuple[Span, Span]]:
        """(row span, column span) per tile in canvas pixels, row-major."""
        return self._grid(1, self.halo[0])

    def synthesis_tiles(self) -> list[tuple[Span, Span]]:
        """(row span, column span) per tile in latent pixels, row-major."""
        return self._grid(LATENT_STRIDE, self.halo[1])

    @property
    def num_tiles(self) -> int:
        return len(self.analysis_tiles())

    def describe(self) -> dict:
        tiles = self.analysis_tiles()
        return {
            "tile": self.tile,
            "rows": len({r.own_start for r, _ in tiles}),
            "cols": len({c.own_start for _, c in tiles}),
            "halo_analysis": rounded_halo(self.halo[0], self.align),  # as the windows have them
            "halo_synthesis": rounded_halo(self.halo[1], self.align),
        }

    def window(self, image: np.ndarray, rows: Span, cols: Span, peak: int = 255) -> np.ndarray:
        """float32 ``[1, rows.length, cols.length, C]`` in [0, 1]: a window of the canvas of the
        image ``[H, W, C]`` of samples 0..``peak`` (zeros outside the image)."""
        top, left = self.offset
        out = np.zeros((1, rows.length, cols.length, image.shape[-1]), np.float32)
        r0, r1 = max(rows.start - top, 0), min(rows.start + rows.length - top, self.height)
        c0, c1 = max(cols.start - left, 0), min(cols.start + cols.length - left, self.width)
        if r0 < r1 and c0 < c1:
            out[0, r0 + top - rows.start : r1 + top - rows.start,
                c0 + left - cols.start : c1 + left - cols.start] = (
                image[r0:r1, c0:c1].astype(np.float32) / np.float32(peak))  # fmt: skip
        return out


def analyse(model, image: np.ndarray, plan: TilePlan, clock, bar, peak: int = 255) -> np.ndarray:
    """y ``[1, h, w, M]`` float32 of the image ``[H, W, C]`` (samples 0..``peak``), g_a tile by
    tile."""
    y = None
    s = LATENT_STRIDE
    for rows, cols in plan.analysis_tiles():
        out = np.asarray(clock.network(model.analysis, plan.window(image, rows, cols, peak)))
        if y is None:
            y = np.zeros((1, *plan.latent_shape, out.shape[-1]), np.float32)
        y[0, rows.own_start // s : rows.own_stop // s, cols.own_start // s : cols.own_stop // s] = (
            out[
                0,
                (rows.own_start - rows.start) // s : (rows.own_stop - rows.start) // s,
                (cols.own_start - cols.start) // s : (cols.own_stop - cols.start) // s,
            ]
        )
        bar.update(1)
    return y


def synthesise(model, y_hat, plan: TilePlan, clock, bar, peak: int = 255) -> np.ndarray:
    """The image ``[H, W, C]`` (uint8, or uint16 for ``peak`` > 255) from the latent ``y_hat
    [1, h, w, M]``, g_s tile by tile."""
    top, left = plan.offset
    out = None
    s = LATENT_STRIDE
    for rows, cols in plan.synthesis_tiles():
        window = y_hat[
            :, rows.start : rows.start + rows.length, cols.start : cols.start + cols.length
        ]
        x = np.asarray(clock.network(model.synthesis, window, peak))[0]
        if out is None:
            out = np.zeros((plan.height, plan.width, x.shape[-1]), x.dtype)
        # the tile's own pixels, in canvas coordinates, then clipped to the image
        r0, r1 = max(rows.own_start * s, top), min(rows.own_stop * s, top + plan.height)
        c0, c1 = max(cols.own_start * s, left), min(cols.own_stop * s, left + plan.width)
        if r0 < r1 and c0 < c1:
            out[r0 - top : r1 - top, c0 - left : c1 - left] = x[
                r0 - rows.start * s : r1 - rows.start * s, c0 - cols.start * s : c1 - cols.start * s
            ]
        bar.update(1)
    return out

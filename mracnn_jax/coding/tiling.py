"""Tile geometry of version-2 (tiled) ``.mrac`` files (docs/format.md, "Tiled files").

Pure NumPy: no JAX, no TensorFlow. Encoder and decoder derive every window from the same four
header numbers (image size, tile size ``T``, the two halos), so they cut the image and the latent
identically.

Grid. An ``H x W`` image is coded on a canvas of ``R x C`` tiles of ``t_h x t_w`` pixels with

    t_h = min(T, ceil(H / 64) * 64),   R = ceil(H / t_h),   canvas height = R * t_h

(columns likewise), the image centred on the canvas and the rest zeros. Every tile therefore has
the same shape (one compilation per network piece), and a small image under a large ``T`` is not
padded beyond the usual multiple of 64.

Tile ``(r, c)`` owns canvas pixels ``[r t_h, (r + 1) t_h) x [c t_w, (c + 1) t_w)`` and the
latent (stride 16) block ``[r t_h / 16, (r + 1) t_h / 16) x ...``. Two halos give each tile its
neighbours' context without coding anything twice:

* analysis halo ``a`` (pixels, a multiple of 16): g_a sees the tile plus ``a`` pixels of the
  canvas on every side; only the tile's own latent block, the centre of g_a's output, is kept and
  coded;
* synthesis halo ``s`` (pixels, a multiple of 16; ``s / 16`` latent pixels): g_s sees the tile's
  decoded latent block plus ``s / 16`` latent pixels of the neighbouring blocks and only the
  centre ``t_h x t_w`` of its output is kept.

Beyond the canvas's edges both halos mirror the canvas (pixel or latent ``-1 -> 0``, ``-2 -> 1``,
...; one reflection suffices: ``TileGrid`` refuses halos wider than a tile).
Zeros there would show g_a a black frame and g_s a frame of zero latents, which a trained model
codes expensively and reconstructs badly (docs/benchmarks.md, "Tiled coding").

The latent blocks are coded independently (each tile has its own z, hyperprior and channel
context), so a tile's latent is decoded from its own strings; the synthesis halo needs the
neighbours' decoded latents, which the decoder holds for the whole image (``M / 256`` floats per
pixel, 5 bytes per pixel for MRACNN) before it synthesises tile after tile.
"""

from __future__ import annotations

import dataclasses

import numpy as np

BLOCK = 64  # tile sizes are multiples of the codec's total stride
LATENT_STRIDE = 16  # g_a's stride: halos are multiples of it
MAX_TILE = 65472  # the largest multiple of 64 a u16 holds
MAX_HALO = 4096

# Defaults of the codec and the CLI, chosen by measurement (docs/benchmarks.md, issue 8).
DEFAULT_TILE = 512  # pixels
DEFAULT_HALO = (0, 0)  # (analysis, synthesis) pixels of context: none (independent tiles)
AUTO_TILE_PIXELS = 2**21  # `mracnn compress` tiles images with more pixels than this (1448²)


def _ceil_to(n: int, multiple: int) -> int:
    return -(-n // multiple) * multiple


def check_tiling(tile: int, halo_analysis: int = 0, halo_synthesis: int = 0) -> None:
    """Raises ``ValueError`` (one line) for a tile size or halo the format does not hold."""
    if isinstance(tile, bool) or not isinstance(tile, (int, np.integer)):
        # ValueError, not TypeError: the documented contract, which codec.resolve_tiling turns
        # into a CodecError (one line at the command line).
        raise ValueError(f"tile size must be an integer, got {tile!r}")  # noqa: TRY004
    if tile < BLOCK or tile % BLOCK or tile > MAX_TILE:
        raise ValueError(
            f"tile size {tile} is not a positive multiple of {BLOCK} up to {MAX_TILE} "
            f"(try {max(BLOCK, _ceil_to(max(int(tile), 1), BLOCK))})"
        )
    for name, halo in (("analysis", halo_analysis), ("synthesis", halo_synthesis)):
        if halo < 0 or halo % LATENT_STRIDE or halo > MAX_HALO:
            raise ValueError(
                f"{name} halo {halo} must be a multiple of {LATENT_STRIDE} in 0..{MAX_HALO}"
            )


def grid_shape(height: int, width: int, tile: int) -> tuple[int, int, int, int]:
    """``(rows, cols, tile height, tile width)`` of the grid for an image and a tile size."""
    th = min(tile, _ceil_to(height, BLOCK))
    tw = min(tile, _ceil_to(width, BLOCK))
    return -(-height // th), -(-width // tw), th, tw


def _mirror(index: np.ndarray, size: int) -> np.ndarray:
    """Indices beyond ``[0, size)`` reflected back into it (edge sample repeated: -1 -> 0)."""
    index = np.where(index < 0, -index - 1, index)
    index = np.where(index >= size, 2 * size - 1 - index, index)
    return np.clip(index, 0, size - 1)


def _canvas_window(a, offset, canvas, r0, r1, c0, c1) -> np.ndarray:
    """Rows ``[r0, r1)`` and columns ``[c0, c1)`` of a canvas that holds ``a [h, w, ...]`` at
    ``offset`` with zeros around it, mirrored at the canvas's edges beyond it."""
    rows = _mirror(np.arange(r0, r1), canvas[0]) - offset[0]
    cols = _mirror(np.arange(c0, c1), canvas[1]) - offset[1]
    out = np.zeros((r1 - r0, c1 - c0) + a.shape[2:], a.dtype)
    vr = (rows >= 0) & (rows < a.shape[0])
    vc = (cols >= 0) & (cols < a.shape[1])
    out[np.ix_(vr, vc)] = a[np.ix_(rows[vr], cols[vc])]
    return out


@dataclasses.dataclass(frozen=True)
class TileGrid:
    """The tiling of one image (see the module docstring); every window a coder needs."""

    height: int
    width: int
    tile: int
    halo_analysis: int = 0
    halo_synthesis: int = 0

    def __post_init__(self):
        check_tiling(self.tile, self.halo_analysis, self.halo_synthesis)
        if self.height < 1 or self.width < 1:
            raise ValueError(f"image size must be at least 1x1, got {self.height}x{self.width}")
        if max(self.halo_analysis, self.halo_synthesis) > min(self.tile_shape):
            raise ValueError(
                f"halos ({self.halo_analysis}, {self.halo_synthesis}) wider than the "
                f"{self.tile_shape[0]}x{self.tile_shape[1]} tiles"
            )

    @property
    def shape(self) -> tuple[int, int]:
        """``(rows, cols)``."""
        r, c, _, _ = grid_shape(self.height, self.width, self.tile)
        return r, c

    @property
    def tile_shape(self) -> tuple[int, int]:
        """``(t_h, t_w)`` in pixels."""
        _, _, th, tw = grid_shape(self.height, self.width, self.tile)
        return th, tw

    @property
    def num_tiles(self) -> int:
        r, c = self.shape
        return r * c

    @property
    def canvas(self) -> tuple[int, int]:
        (r, c), (th, tw) = self.shape, self.tile_shape
        return r * th, c * tw

    @property
    def offset(self) -> tuple[int, int]:
        """Canvas position of the image's top-left pixel (centred)."""
        ch, cw = self.canvas
        return (ch - self.height) // 2, (cw - self.width) // 2

    @property
    def latent_shape(self) -> tuple[int, int]:
        ch, cw = self.canvas
        return ch // LATENT_STRIDE, cw // LATENT_STRIDE

    def tiles(self):
        """``(r, c)`` in coding order: row by row, left to right."""
        rows, cols = self.shape
        for r in range(rows):
            for c in range(cols):
                yield r, c

    def analysis_input(self, image: np.ndarray, r: int, c: int) -> np.ndarray:
        """float32 ``[1, t_h + 2a, t_w + 2a, 3]`` in [0, 1]: tile ``(r, c)`` with its halo (the
        canvas mirrored beyond its edges)."""
        (th, tw), a = self.tile_shape, self.halo_analysis
        r0, c0 = r * th - a, c * tw - a
        r1, c1 = r0 + th + 2 * a, c0 + tw + 2 * a
        x = _canvas_window(image, self.offset, self.canvas, r0, r1, c0, c1)
        return (x.astype(np.float32) / np.float32(255.0))[None]

    def block(self, r: int, c: int, stride: int) -> tuple[slice, slice]:
        """Rows and columns of tile ``(r, c)`` in a canvas of the given stride (16: y, 64: z)."""
        th, tw = self.tile_shape
        bh, bw = th // stride, tw // stride
        return slice(r * bh, (r + 1) * bh), slice(c * bw, (c + 1) * bw)

    def synthesis_input(self, y_hat: np.ndarray, r: int, c: int) -> np.ndarray:
        """``[1, t_h/16 + 2m, t_w/16 + 2m, M]`` of the latent canvas ``y_hat [1, h, w, M]``,
        ``m = s / 16``: tile ``(r, c)``'s block with its halo (mirrored beyond the canvas)."""
        rows, cols = self.block(r, c, LATENT_STRIDE)
        m = self.halo_synthesis // LATENT_STRIDE
        lat = self.latent_shape
        return _canvas_window(
            y_hat[0], (0, 0), lat, rows.start - m, rows.stop + m, cols.start - m, cols.stop + m
        )[None]

    def paste(self, out: np.ndarray, x: np.ndarray, r: int, c: int) -> None:
        """Writes the synthesis output ``x [t_h + 2s, t_w + 2s, 3]`` of tile ``(r, c)``, halo
        dropped, into the image ``out [H, W, 3]`` (the parts of the tile inside the image)."""
        (th, tw), (top, left), s = self.tile_shape, self.offset, self.halo_synthesis
        x = x[s : s + th, s : s + tw]
        r0, c0 = r * th - top, c * tw - left
        sr0, sr1 = max(r0, 0), min(r0 + th, self.height)
        sc0, sc1 = max(c0, 0), min(c0 + tw, self.width)
        if sr0 < sr1 and sc0 < sc1:
            out[sr0:sr1, sc0:sc1] = x[sr0 - r0 : sr1 - r0, sc0 - c0 : sc1 - c0]

    def describe(self) -> dict:
        rows, cols = self.shape
        th, tw = self.tile_shape
        return {
            "tile": self.tile,
            "rows": rows,
            "cols": cols,
            "tile_height": th,
            "tile_width": tw,
            "halo_analysis": self.halo_analysis,
            "halo_synthesis": self.halo_synthesis,
        }

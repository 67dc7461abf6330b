"""The tile plan: where each tile's core and halo lie on the region grid.

Cores are a regular `size` x `size` partition of the grid (the last row/column may be smaller) and
are exactly the Zarr chunks, so a tile's writer owns whole chunks and parallel writers never share
one. Each core has `halo` extra pixels per side (its outer window, clipped at the grid's edge): the
halo gives the matcher context at the core's border and the blender an overlap to fade across. A tile
is registered on its context window: the outer window, widened towards the grid's inside where it spans
less than a first tile's `size + halo`, so the last row or column's narrow cores are not matched on a
sliver (a few windows, or none, across it); only the outer part of that field is kept.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from pyproj import CRS, Transformer

from kernel.errors import InputError
from pipeline.grid import Grid

# The rule that sets each tile's context window (`_widened`): chunk fingerprints record it, so a cube whose chunks
# were registered under another rule is redone rather than mixed with this one's.
CONTEXT_RULE = "outer window widened inwards to size + halo"


@dataclass(frozen=True)
class Window:
    """Rows [row, row + height) and columns [col, col + width) of a grid."""

    row: int
    col: int
    height: int
    width: int

    @property
    def slices(self) -> tuple[slice, slice]:
        return slice(self.row, self.row + self.height), slice(self.col, self.col + self.width)

    def relative_to(self, outer: Window) -> Window:
        """This window in the pixel coordinates of `outer` (which must contain it)."""
        return Window(self.row - outer.row, self.col - outer.col, self.height, self.width)

    def intersection(self, other: Window) -> Window | None:
        r0, c0 = max(self.row, other.row), max(self.col, other.col)
        r1 = min(self.row + self.height, other.row + other.height)
        c1 = min(self.col + self.width, other.col + other.width)
        return Window(r0, c0, r1 - r0, c1 - c0) if r1 > r0 and c1 > c0 else None


@dataclass(frozen=True)
class Tile:
    """Tile (`i`, `j`) of the plan: `core` is its Zarr chunk, `outer` the core plus the halo, `context` the
    window it is registered on (`outer` where that spans a full tile)."""

    i: int
    j: int
    core: Window
    outer: Window
    context: Window


@dataclass(frozen=True)
class TilePlan:
    shape: tuple[int, int]
    size: int
    halo: int
    tiles: tuple[Tile, ...]

    @property
    def n_rows(self) -> int:
        return math.ceil(self.shape[0] / self.size)

    @property
    def n_cols(self) -> int:
        return math.ceil(self.shape[1] / self.size)

    @property
    def chunks(self) -> tuple[int, int]:
        """The (y, x) Zarr chunk shape that makes every core exactly one chunk."""
        return (min(self.size, self.shape[0]), min(self.size, self.shape[1]))

    def tile(self, i: int, j: int) -> Tile:
        return self.tiles[i * self.n_cols + j]

    def covering(self, window: Window) -> list[Tile]:
        """The tiles whose outer window overlaps `window`: for a tile's core (itself included), the fields
        its blend needs."""

        def span(start: int, length: int, count: int) -> range:
            first = max(0, (start - self.halo) // self.size)
            return range(first, min(count, (start + length + self.halo - 1) // self.size + 1))

        tiles = (
            self.tile(i, j)
            for i in span(window.row, window.height, self.n_rows)
            for j in span(window.col, window.width, self.n_cols)
        )
        return [tile for tile in tiles if tile.outer.intersection(window) is not None]


def plan_tiles(shape: tuple[int, int], size: int, halo: int) -> TilePlan:
    """Partition a (height, width) grid into chunk-aligned cores with clipped halos."""
    height, width = shape
    if height <= 0 or width <= 0:
        raise InputError(f"cannot tile an empty grid of {height} x {width} pixels")
    tiles = []
    for i, row in enumerate(range(0, height, size)):
        for j, col in enumerate(range(0, width, size)):
            core = Window(row, col, min(size, height - row), min(size, width - col))
            r0, c0 = max(0, row - halo), max(0, col - halo)
            r1 = min(height, row + core.height + halo)
            c1 = min(width, col + core.width + halo)
            (q0, q1), (p0, p1) = _widened(r0, r1, height, size + halo), _widened(c0, c1, width, size + halo)
            outer, context = Window(r0, c0, r1 - r0, c1 - c0), Window(q0, p0, q1 - q0, p1 - p0)
            tiles.append(Tile(i, j, core, outer, context))
    return TilePlan((height, width), size, halo, tuple(tiles))


def _widened(start: int, stop: int, extent: int, span: int) -> tuple[int, int]:
    """[start, stop) widened to at least `span` pixels of [0, extent): towards 0 first, then past `stop`."""
    start = min(start, max(0, stop - span))
    return start, max(stop, min(extent, start + span))


def region_grid(grid: Grid, bbox: tuple[float, float, float, float]) -> Grid:
    """The part of `grid` inside a lon/lat bbox, snapped outwards to whole pixels of `grid`.

    Keeps the optical item's pixel lattice (so every acquisition of the same tile lands on the same
    cube grid) while not processing the scene far outside the area of interest.
    """
    to_grid = Transformer.from_crs(CRS.from_epsg(4326), grid.crs, always_xy=True)
    xs, ys = to_grid.transform(*_bbox_outline(bbox))
    inverse = ~grid.affine
    cols, rows = inverse @ (np.asarray(xs), np.asarray(ys))
    c0 = max(0, int(math.floor(np.min(cols))))
    r0 = max(0, int(math.floor(np.min(rows))))
    c1 = min(grid.width, int(math.ceil(np.max(cols))))
    r1 = min(grid.height, int(math.ceil(np.max(rows))))
    if c1 <= c0 or r1 <= r0:
        raise InputError(f"bbox {list(bbox)} does not intersect the optical scene's grid")
    return grid.window(r0, c0, r1 - r0, c1 - c0)


def _bbox_outline(bbox: tuple[float, float, float, float], steps: int = 21) -> tuple[np.ndarray, np.ndarray]:
    """Points along the bbox edges: a projected bbox is curved, its corners alone can miss the extent."""
    w, s, e, n = bbox
    t = np.linspace(0.0, 1.0, steps)
    lon = np.concatenate([w + (e - w) * t, np.full(steps, e), e - (e - w) * t, np.full(steps, w)])
    lat = np.concatenate([np.full(steps, s), s + (n - s) * t, np.full(steps, n), n - (n - s) * t])
    return lon, lat

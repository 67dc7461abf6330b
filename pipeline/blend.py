"""Blend overlapping tile fields into one seamless field, chunk by chunk.

Each tile's field is weighted by a raised-cosine taper (`kernel.taper`) that fades it out across the
overlap with its neighbour (and not at the grid's edge, where no neighbour takes over), times its confidence, so a
tile that matched poorly near its border yields to the one that matched well. Weights are
normalised per pixel, so any blend of identical fields returns that field exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from kernel.taper import tile_taper
from pipeline.tiles import Tile, Window

# Keeps zero-confidence pixels defined (then the taper alone decides) without letting them compete.
CONFIDENCE_FLOOR = 1e-3


def taper(tile: Tile) -> np.ndarray:
    """The (h, w) taper of a tile's outer window: raised cosine across twice its halo on each side where
    the window extends past the core (its neighbour's window overlaps it there), none at the grid's edge."""
    core, outer = tile.core, tile.outer
    halos = (
        core.row - outer.row,
        (outer.row + outer.height) - (core.row + core.height),
        core.col - outer.col,
        (outer.col + outer.width) - (core.col + core.width),
    )
    return tile_taper((outer.height, outer.width), tuple(2 * h for h in halos), "cosine")


def blend(core: Window, pieces: Sequence[tuple[Tile, np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """Blend tile fields over `core`.

    pieces: (tile, displacement (2, h, w), confidence (h, w)) on each tile's outer window; together
    they must cover the core. Returns the core's displacement (2, H, W) and confidence (H, W), float32.
    """
    num = np.zeros((2, core.height, core.width), np.float64)
    den = np.zeros((core.height, core.width), np.float64)
    conf_num = np.zeros_like(den)
    conf_den = np.zeros_like(den)
    for tile, displacement, confidence in pieces:
        overlap = tile.outer.intersection(core)
        if overlap is None:
            continue
        src = overlap.relative_to(tile.outer).slices
        dst = overlap.relative_to(core).slices
        window = taper(tile)[src]
        conf = np.nan_to_num(confidence[src].astype(np.float64), nan=0.0)
        field = displacement[(slice(None), *src)].astype(np.float64)
        valid = np.isfinite(field).all(axis=0)
        weight = np.where(valid, window * (conf + CONFIDENCE_FLOOR), 0.0)
        num[(slice(None), *dst)] += np.where(valid, field, 0.0) * weight
        den[dst] += weight
        conf_num[dst] += window * conf
        conf_den[dst] += window
    if not (conf_den > 0).all():
        raise ValueError(f"tile pieces do not cover the core {core}")
    with np.errstate(invalid="ignore", divide="ignore"):
        displacement = np.where(den > 0, num / den, np.nan)
    return displacement.astype(np.float32), (conf_num / conf_den).astype(np.float32)

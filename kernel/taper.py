"""Blending weights for overlapping tiles, written once: the network's tiling and the pipeline's blend use them.

A tile's weight fades across the pixels it shares with a neighbour and stays 1 at an image edge, where
no neighbour takes over. Each profile f satisfies f(t) + f(1 - t) = 1 at pixel centres, so two tiles
fading across the same span add up to 1 there and a normalised blend of identical tiles is exact.
"""

from __future__ import annotations

from typing import Literal

import numpy as np

Profile = Literal["linear", "cosine"]


def _rise(k: np.ndarray, span: int, profile: Profile) -> np.ndarray:
    """The profile at pixel centres `k` (k + 0.5 for pixel k) of a fade `span` pixels long."""
    if profile == "linear":
        return k / span
    return np.sin(0.5 * np.pi * k / span) ** 2


def edge_taper(length: int, fade_start: int, fade_end: int, profile: Profile = "cosine") -> np.ndarray:
    """1-D weight (float64) over `length` pixels: rising across the first `fade_start` pixels, falling
    across the last `fade_end` (0: an image edge, no fade), 1 elsewhere; fades longer than `length` are
    cut to it, and where the two meet they multiply.
    """
    weight = np.ones(length, np.float64)
    k = np.arange(length) + 0.5
    if fade_start:
        span = min(fade_start, length)
        weight[:span] *= _rise(k[:span], span, profile)
    if fade_end:
        span = min(fade_end, length)
        weight[length - span :] *= _rise(k[:span][::-1], span, profile)
    return weight


def tile_taper(
    shape: tuple[int, int],
    fades: tuple[int, int, int, int],
    profile: Profile = "cosine",
    dtype: type[np.floating] = np.float64,
) -> np.ndarray:
    """(h, w) weight of a tile: the outer product of its row and column tapers, taken in `dtype`;
    `fades` is (top, bottom, left, right) in pixels."""
    top, bottom, left, right = fades
    rows = edge_taper(shape[0], top, bottom, profile).astype(dtype)
    cols = edge_taper(shape[1], left, right, profile).astype(dtype)
    return np.outer(rows, cols)

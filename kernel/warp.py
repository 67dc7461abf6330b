"""Warping by a dense displacement field, Contract 1 of docs/architecture.md (written once, tested once).

A field `d` of shape (2, H, W) holds (dy, dx) in pixels of the fixed grid: the fixed pixel centre
(y, x) corresponds to the moving location (y + dy, x + dx), and
`warped[y, x] = moving(y + d[0, y, x], x + d[1, y, x])`.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
from scipy import ndimage


def identity_grid(shape: tuple[int, int]) -> np.ndarray:
    """Pixel-centre coordinates (2, H, W) float32: [0] rows, [1] columns, 0-based."""
    h, w = shape
    yy, xx = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32), indexing="ij")
    return np.stack([yy, xx])


def warp_image(moving: np.ndarray, displacement: np.ndarray, order: int = 1) -> np.ndarray:
    """Resample `moving` ((H, W) or (C, H, W)) at fixed-grid locations + displacement.

    Samples outside the moving image and samples touching NaN come out NaN (order 1 is bilinear,
    0 nearest). Returns float32 with the leading shape of `moving` and the field's H, W.
    """
    displacement = np.asarray(displacement, dtype=np.float32)
    if displacement.ndim != 3 or displacement.shape[0] != 2:
        raise ValueError(f"displacement must have shape (2, H, W), got {displacement.shape}")
    image = np.asarray(moving, dtype=np.float32)
    squeeze = image.ndim == 2
    if squeeze:
        image = image[None]
    coords = identity_grid(displacement.shape[1:]) + displacement
    h, w = image.shape[-2:]
    # A small tolerance keeps samples exactly on the border (the zero field) inside the image.
    eps = 1e-3
    outside = (coords[0] < -eps) | (coords[0] > h - 1 + eps) | (coords[1] < -eps) | (coords[1] > w - 1 + eps)
    coords = np.stack([np.clip(coords[0], 0, h - 1), np.clip(coords[1], 0, w - 1)])
    out = np.empty((image.shape[0], *displacement.shape[1:]), dtype=np.float32)
    for c, band in enumerate(image):
        nan = ~np.isfinite(band)
        filled = np.where(nan, 0.0, band)
        sampled = ndimage.map_coordinates(filled, coords, order=order, mode="nearest")
        if nan.any():
            # Any NaN among the interpolation support poisons the sample, as it would in a bilinear sum.
            touched = ndimage.map_coordinates(nan.astype(np.float32), coords, order=order, mode="nearest")
            sampled[touched > 1e-6] = np.nan
        sampled[outside] = np.nan
        out[c] = sampled
    return out[0] if squeeze else out


def sample(image: np.ndarray, coords: np.ndarray, order: int = 1) -> np.ndarray:
    """`image` ((H, W) or (C, H, W)) at pixel coordinates `coords` (2, ...) (row, col), bilinear by default,
    extended by its edge values beyond the border; no no-data handling (use `warp_image` for images with NaN)."""
    stack = image[None] if image.ndim == 2 else image
    out = np.stack([ndimage.map_coordinates(band, coords, order=order, mode="nearest") for band in stack])
    return out[0] if image.ndim == 2 else out


def fixed_point_inverse(
    field_at: Callable[[np.ndarray], np.ndarray],
    points: np.ndarray,
    start: np.ndarray,
    iterations: int,
    tol: float = 0.0,
) -> np.ndarray:
    """The field d on `points` with d(p) = -u(p + d(p)), where `field_at(q)` samples u at coordinates q:
    the inverse of a smooth warp. The iteration contracts by max|grad u|, so it converges for the smooth
    warps of the benchmark, training and demo; it stops after `iterations` steps or once a step changes
    d by less than `tol` pixels."""
    d = start
    for _ in range(iterations):
        updated = -field_at(points + d)
        change = float(np.abs(updated - d).max())
        d = updated
        if change < tol:
            break
    return d


def compose(first: np.ndarray, second: np.ndarray) -> np.ndarray:
    """The field of warping by `first` then by `second` (Contract 1).

    warp(warp(m, first), second)[p] = m(p + second(p) + first(p + second(p))), so the composed
    field is second + first sampled at p + second(p).
    """
    sampled = warp_image(first, second, order=1)
    return (second + sampled).astype(np.float32)

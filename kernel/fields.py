"""Known smooth displacement fields (Contract 1): the warps the benchmark, training and demo inject."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from kernel.warp import identity_grid


def affine_field(
    shape: tuple[int, int],
    shift: tuple[float, float] = (0.0, 0.0),
    rotation_deg: float = 0.0,
    scale: float = 1.0,
) -> np.ndarray:
    """Field of a similarity about the image centre: moving location = centre + s R (p - centre) + shift."""
    grid = identity_grid(shape).astype(np.float64)
    centre = np.array([(shape[0] - 1) / 2.0, (shape[1] - 1) / 2.0])[:, None, None]
    rel = grid - centre
    theta = np.deg2rad(rotation_deg)
    c, s = np.cos(theta), np.sin(theta)
    y = scale * (c * rel[0] - s * rel[1])
    x = scale * (s * rel[0] + c * rel[1])
    moved = np.stack([y, x]) + centre + np.asarray(shift, dtype=np.float64)[:, None, None]
    return (moved - grid).astype(np.float32)


def elastic_field(
    shape: tuple[int, int], rng: np.random.Generator, amplitude_px: float, smoothness_px: float
) -> np.ndarray:
    """Smooth random field whose largest displacement is `amplitude_px`, correlated over `smoothness_px`."""
    h, w = shape
    # Draw on a coarse lattice and upsample: cheap for large images and smooth by construction.
    step = max(4, int(smoothness_px // 2))
    coarse = rng.standard_normal((2, h // step + 3, w // step + 3))
    coarse = ndimage.gaussian_filter(coarse, sigma=(0, 1.0, 1.0), mode="reflect")
    zoom = (1, (h + 2 * step) / coarse.shape[1], (w + 2 * step) / coarse.shape[2])
    field = ndimage.zoom(coarse, zoom, order=3, mode="reflect")[:, step : step + h, step : step + w]
    peak = np.abs(field).max()
    if peak > 0:
        field *= amplitude_px / peak
    return field.astype(np.float32)


def random_smooth_field(
    shape: tuple[int, int],
    rng: np.random.Generator,
    max_shift_px: float = 8.0,
    max_rotation_deg: float = 2.0,
    max_scale: float = 0.02,
    elastic_px: float = 3.0,
    elastic_smoothness_px: float | None = None,
) -> np.ndarray:
    """A warp typical of georeferenced archives: a similarity plus a smooth elastic field."""
    smoothness = elastic_smoothness_px if elastic_smoothness_px is not None else max(shape) / 4.0
    field = affine_field(
        shape,
        shift=tuple(rng.uniform(-max_shift_px, max_shift_px, size=2)),
        rotation_deg=float(rng.uniform(-max_rotation_deg, max_rotation_deg)),
        scale=float(1.0 + rng.uniform(-max_scale, max_scale)),
    )
    if elastic_px > 0:
        field += elastic_field(shape, rng, float(rng.uniform(0.3, 1.0)) * elastic_px, smoothness)
    return field

"""The benchmark's known warps and their exact inverse (the truth of the dense track).

The moving image is deformed as moving_warped(q) = moving(q + w(q)). On an aligned pair, the field
that maps fixed to moving_warped is t with t(p) + w(p + t(p)) = 0, found by fixed-point iteration
t <- -w(p + t), which converges because w is smooth (|grad w| << 1).
"""

from __future__ import annotations

import numpy as np

from kernel.fields import random_smooth_field
from kernel.warp import fixed_point_inverse, identity_grid, sample


def benchmark_warp(shape: tuple[int, int], seed: int) -> np.ndarray:
    """The seeded warp of one pair: translation <= 8 px, rotation <= 2 deg, scale <= 2 %, elastic <= 3 px."""
    rng = np.random.default_rng(seed)
    return random_smooth_field(shape, rng, max_shift_px=8.0, max_rotation_deg=2.0, max_scale=0.02, elastic_px=3.0)


def invert_warp(warp: np.ndarray, iterations: int = 30, tol: float = 1e-4) -> np.ndarray:
    """The field t with t(p) + w(p + t(p)) = 0 (float32, (2, H, W))."""
    grid = identity_grid(warp.shape[1:]).astype(np.float64)
    w64 = warp.astype(np.float64)
    truth = fixed_point_inverse(lambda q: sample(w64, q), grid, -w64, iterations, tol)
    return truth.astype(np.float32)


def inside_mask(field: np.ndarray) -> np.ndarray:
    """Pixels whose target p + field(p) lies inside the image (where a correspondence exists)."""
    h, w = field.shape[1:]
    grid = identity_grid((h, w))
    y, x = grid[0] + field[0], grid[1] + field[1]
    return (y >= 0) & (y <= h - 1) & (x >= 0) & (x <= w - 1)

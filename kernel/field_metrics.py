"""Scores of a displacement field (Contract 1), written once: end-point error, Jacobian determinant, folding.

numpy, for evaluation and reports; `models.losses` holds their differentiable torch twins for training
(same names, tested against these on the same field).
"""

from __future__ import annotations

import numpy as np


def end_point_error(field: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per-pixel Euclidean distance (H, W) between two (2, H, W) fields; NaN where either is undefined."""
    return np.hypot(field[0] - truth[0], field[1] - truth[1])


def jacobian_determinant(field: np.ndarray) -> np.ndarray:
    """det of the Jacobian of p -> p + d(p) (H, W), by central differences (one-sided at the border).

    1 for the zero field; <= 0 means the map folds there.
    """
    dyy, dyx = np.gradient(field[0].astype(np.float64))
    dxy, dxx = np.gradient(field[1].astype(np.float64))
    return (1.0 + dyy) * (1.0 + dxx) - dyx * dxy


def folding_share(field: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Share of pixels (inside `mask` when given) where the field folds (det J <= 0)."""
    det = jacobian_determinant(field)
    return float(np.mean(det[mask] <= 0) if mask is not None else np.mean(det <= 0))

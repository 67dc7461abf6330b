"""Scores of a displacement field (Contract 1): end-point error, folding, warp recovery, landmarks."""

from __future__ import annotations

import numpy as np

from datagen.warps import sample_field
from kernel.warp import identity_grid

THRESHOLDS = (1.0, 2.0, 3.0)


def end_point_error(field: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """Per-pixel Euclidean distance (H, W) between two fields."""
    return np.hypot(field[0] - truth[0], field[1] - truth[1])


def jacobian_determinant(field: np.ndarray) -> np.ndarray:
    """det of the Jacobian of p -> p + d(p), by central differences; <= 0 means a fold."""
    dyy, dyx = np.gradient(field[0].astype(np.float64))
    dxy, dxx = np.gradient(field[1].astype(np.float64))
    return (1.0 + dyy) * (1.0 + dxx) - dyx * dxy


def folding_share(field: np.ndarray, mask: np.ndarray | None = None) -> float:
    det = jacobian_determinant(field)
    return float(np.mean(det[mask] <= 0) if mask is not None else np.mean(det <= 0))


def warp_recovery_error(d1: np.ndarray, warp: np.ndarray, d0: np.ndarray) -> np.ndarray:
    """|d1(p) + w(p + d1(p)) - d0(p)|: how well the known warp was recovered, whatever the gt error."""
    coords = identity_grid(d1.shape[1:]) + d1
    composed = d1 + sample_field(warp, coords)
    return end_point_error(composed, d0)


def summarise_errors(errors: np.ndarray) -> dict[str, float]:
    """Mean, median and share under each threshold of a set of per-pixel errors."""
    errors = errors[np.isfinite(errors)]
    if errors.size == 0:
        return {"mean": float("nan"), "median": float("nan"), **{f"under_{t:g}px": float("nan") for t in THRESHOLDS}}
    return {
        "mean": float(errors.mean()),
        "median": float(np.median(errors)),
        **{f"under_{t:g}px": float(np.mean(errors < t)) for t in THRESHOLDS},
    }


def landmark_errors(field: np.ndarray, marks: np.ndarray) -> np.ndarray:
    """Distance between each moving landmark and the field's prediction at its fixed landmark.

    marks: (N, 4) x_fixed, y_fixed, x_moving, y_moving. Landmarks off the fixed grid are NaN.
    """
    h, w = field.shape[1:]
    xf, yf, xm, ym = marks.T
    inside = (yf >= 0) & (yf <= h - 1) & (xf >= 0) & (xf <= w - 1)
    pred = sample_field(field, np.stack([yf, xf]))
    err = np.hypot(yf + pred[0] - ym, xf + pred[1] - xm)
    return np.where(inside, err, np.nan)

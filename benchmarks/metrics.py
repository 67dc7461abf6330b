"""Benchmark scores of a displacement field (Contract 1): warp recovery, landmarks, error summaries.

The per-pixel field maths (end-point error, Jacobian, folding) is `kernel.field_metrics`.
"""

from __future__ import annotations

import numpy as np

from benchmarks.results import ErrorSummary
from kernel.field_metrics import end_point_error
from kernel.warp import identity_grid, sample

THRESHOLDS = (1.0, 2.0, 3.0)


def warp_recovery_error(d1: np.ndarray, warp: np.ndarray, d0: np.ndarray) -> np.ndarray:
    """|d1(p) + w(p + d1(p)) - d0(p)|: how well the known warp was recovered, whatever the gt error."""
    coords = identity_grid(d1.shape[1:]) + d1
    composed = d1 + sample(warp, coords)
    return end_point_error(composed, d0)


def summarise_errors(errors: np.ndarray) -> ErrorSummary:
    """Mean, median and share under each threshold of a set of per-pixel errors (NaN when none is finite)."""
    errors = errors[np.isfinite(errors)]
    if errors.size == 0:
        return ErrorSummary(float("nan"), float("nan"), {t: float("nan") for t in THRESHOLDS})
    return ErrorSummary(
        float(errors.mean()), float(np.median(errors)), {t: float(np.mean(errors < t)) for t in THRESHOLDS}
    )


def landmark_errors(field: np.ndarray, marks: np.ndarray) -> np.ndarray:
    """Distance between each moving landmark and the field's prediction at its fixed landmark.

    marks: (N, 4) x_fixed, y_fixed, x_moving, y_moving. Landmarks off the fixed grid are NaN.
    """
    h, w = field.shape[1:]
    xf, yf, xm, ym = marks.T
    inside = (yf >= 0) & (yf <= h - 1) & (xf >= 0) & (xf <= w - 1)
    pred = sample(field, np.stack([yf, xf]))
    err = np.hypot(yf + pred[0] - ym, xf + pred[1] - xm)
    return np.where(inside, err, np.nan)

"""From sparse window matches to a smooth dense field: a robust affine trend plus a Gaussian-weighted
(normalised convolution) interpolation of the residuals, and a confidence map from match support."""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage

from kernel.warp import sample
from models.classical.matching import Matches

# An accepted match weighs at least this much, whatever its quality.
MIN_WEIGHT = 0.05
# Interpolated residuals are pulled towards the trend where the matches' support is under this share of the
# best-supported cell's (no pull where matches are dense).
PRIOR_SHARE = 0.3


def affine_design(points: np.ndarray) -> np.ndarray:
    """Rows [y, x, 1] for points (N, 2) given as (y, x)."""
    return np.column_stack([points[:, 0], points[:, 1], np.ones(len(points))])


def affine_eval(params: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The dense field (2, H, W) of an affine displacement model params (3, 2) (`affine_eval_tensor`, on the CPU)."""
    return affine_eval_tensor(params, shape).numpy()


def affine_eval_tensor(params: np.ndarray, shape: tuple[int, int], device: str | torch.device = "cpu") -> torch.Tensor:
    """The dense field (2, H, W) float32 of an affine displacement model params (3, 2): d = [y, x, 1] @ params,
    evaluated in float64 on `device`."""
    p = torch.from_numpy(np.asarray(params, np.float64)).to(device)
    yy = torch.arange(shape[0], dtype=torch.float64, device=device)[:, None]
    xx = torch.arange(shape[1], dtype=torch.float64, device=device)[None, :]
    return (p[0][:, None, None] * yy + p[1][:, None, None] * xx + p[2][:, None, None]).float()


def robust_affine(
    points: np.ndarray,
    shifts: np.ndarray,
    weights: np.ndarray,
    rng: np.random.Generator,
    threshold: float = 2.5,
    trials: int = 300,
) -> tuple[np.ndarray, np.ndarray]:
    """RANSAC then weighted least squares: affine params (3, 2) mapping (y, x) to (dy, dx), inlier mask.

    Fewer than 6 matches give a translation (their weighted median) instead, safer than a wild affine.
    """
    n = len(points)
    if n == 0:
        return np.zeros((3, 2)), np.zeros(0, bool)
    if n < 6:
        return translation_consensus(shifts, weights, threshold)
    design = affine_design(points)
    picks = np.array([rng.choice(n, 3, replace=False) for _ in range(trials)])
    picks = picks[np.abs(np.linalg.det(design[picks])) >= 1e-6]
    best_inliers, best_score = None, -1.0
    # All hypotheses of a chunk at once (one batched solve), chunks bounded to about 4M residuals.
    for chunk in np.array_split(picks, max(1, len(picks) * n // 2_000_000)):
        if not len(chunk):
            continue
        params = np.linalg.solve(design[chunk], shifts[chunk])  # (T, 3, 2)
        inliers = np.linalg.norm(design @ params - shifts, axis=2) < threshold  # (T, n)
        scores = inliers @ weights
        best = int(np.argmax(scores))  # the first of equal scores, as a loop keeping strict improvements
        if scores[best] > best_score:
            best_inliers, best_score = inliers[best], scores[best]
    if best_inliers is None or best_inliers.sum() < 3:
        return translation_consensus(shifts, weights, threshold)
    return refined_affine(points, shifts, weights, best_inliers, threshold)


def refined_affine(
    points: np.ndarray, shifts: np.ndarray, weights: np.ndarray, inliers: np.ndarray, threshold: float
) -> tuple[np.ndarray, np.ndarray]:
    """Weighted least squares on `inliers`, twice, each time keeping the matches within `threshold` px of the fit:
    affine params (3, 2) and the last inlier mask. RANSAC's last step, and the whole fit for matches already
    screened (a window pass's, after the median test)."""
    design = affine_design(points)
    params = np.zeros((3, 2))
    for _ in range(2):
        params = _weighted_lstsq(design[inliers], shifts[inliers], weights[inliers])
        inliers = np.linalg.norm(design @ params - shifts, axis=1) < threshold
        if inliers.sum() < 3:
            break
    return params, inliers


def translation_consensus(shifts: np.ndarray, weights: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray]:
    """Weighted-median translation as affine params (3, 2), and the shifts within `threshold` of it."""
    params = np.zeros((3, 2))
    params[2] = [_weighted_median(shifts[:, i], weights) for i in range(2)]
    return params, np.linalg.norm(shifts - params[2], axis=1) < threshold


def _weighted_lstsq(design, target, weights):
    sw = np.sqrt(np.maximum(weights, 1e-6))[:, None]
    params, *_ = np.linalg.lstsq(design * sw, target * sw, rcond=None)
    return params


def _weighted_median(values, weights):
    order = np.argsort(values)
    cum = np.cumsum(weights[order])
    return float(values[order][np.searchsorted(cum, 0.5 * cum[-1])])


def dense_residual(
    matches: Matches,
    params: np.ndarray,
    shape: tuple[int, int],
    sigma_cells: float = 1.0,
    prior: float = PRIOR_SHARE,
) -> tuple[np.ndarray, np.ndarray]:
    """Residual field (2, H, W) of the matches about the affine trend, interpolated by normalised
    convolution on the window lattice (pulled back to the trend where support is thin), and a
    confidence (H, W) in [0, 1] from the quality-weighted support."""
    grid = matches.grid
    centres = grid.centres()
    valid = np.isfinite(matches.shifts[..., 0])
    trend = np.einsum("ijk,kl->ijl", np.concatenate([centres, np.ones((*centres.shape[:2], 1))], -1), params)
    residual = np.where(valid[..., None], matches.shifts - trend, 0.0)
    weight = np.where(valid, np.maximum(matches.quality, MIN_WEIGHT), 0.0)
    # The prior pulls towards the trend only where support is thin; where matches are dense the
    # weighted mean of their residuals stands unshrunk.
    smooth = lambda a: ndimage.gaussian_filter(a, sigma_cells, mode="nearest", truncate=3.0)  # noqa: E731
    support = smooth(weight)
    cell_field = np.stack([smooth(weight * residual[..., i]) for i in range(2)]) / (
        np.maximum(support, prior * weight.max()) + 1e-9
    )
    confidence = np.clip(support / max(float(smooth(np.ones_like(weight)).max()), 1e-9), 0.0, 1.0)
    coords = np.stack(
        np.meshgrid(
            (np.arange(shape[0]) - grid.y0) / grid.step, (np.arange(shape[1]) - grid.x0) / grid.step, indexing="ij"
        )
    )
    dense = sample(cell_field, coords)
    conf = sample(confidence, coords)
    return dense.astype(np.float32), conf.astype(np.float32)

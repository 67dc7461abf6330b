"""Coarse-to-fine window registration shared by the descriptor baselines (`cfog`, `mind`).

1. windows on a coarse lattice of the half-resolution images searched up to `max_shift` (full-res
   pixels) around no motion and around a global phase-correlation shift -> median test -> a robust
   affine trend
   (RANSAC), kept only when enough windows agree and it is a plausible small deformation, else their
   consensus translation, else no motion;
2. the moving image pre-warped by that trend, windows on a fine lattice with a small radius ->
   median test -> residuals interpolated smoothly and composed with the trend (Contract 1).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from kernel.errors import InputError
from kernel.warp import compose, warp_image
from models.classical.interpolate import (
    MIN_WEIGHT,
    affine_eval,
    dense_residual,
    robust_affine,
    translation_consensus,
)
from models.classical.matching import (
    Matches,
    WindowGrid,
    match_windows,
    median_test,
    phase_correlation,
    window_grid,
)
from models.preprocess import block_means, to_gray

Describe = Callable[[np.ndarray], np.ndarray]


@dataclass(frozen=True)
class WindowConfig:
    """Tuned on the `train` split (see docs/accuracy.md)."""

    max_shift: int = 28
    max_global_shift: int = 96
    prior_margin: float = 2.0
    prior_min_share: float = 0.25
    coarse_window: int = 128
    coarse_step: int = 32
    fine_window: int = 64
    fine_step: int = 24
    fine_radius: int = 5
    min_distinct: float = 0.05
    min_valid: float = 0.7
    affine_threshold: float = 3.0
    min_inlier_share: float = 0.3
    max_linear: float = 0.1
    sigma_cells: float = 1.0
    max_coarse_windows: int = 144
    max_fine_windows: int = 1600
    seed: int = 0


def window_config(options: dict) -> WindowConfig:
    """A WindowConfig with the caller's overrides; unknown option names are an InputError."""
    names = {f.name for f in dataclasses.fields(WindowConfig)}
    unknown = set(options) - names
    if unknown:
        raise InputError(f"unknown option(s) {', '.join(sorted(unknown))}; known: {', '.join(sorted(names))}")
    return WindowConfig(**options)


def window_method(describe: Describe):
    """A pair-API method (models.api.Registrator) matching `describe`'s descriptors with register_windows."""

    def run(fixed, moving, *, fixed_modality, moving_modality, **options):
        return register_windows(
            to_gray(fixed, fixed_modality), to_gray(moving, moving_modality), describe, window_config(options)
        )

    return run


def register_windows(
    fixed_gray: np.ndarray, moving_gray: np.ndarray, describe: Describe, config: WindowConfig
) -> tuple[np.ndarray, np.ndarray]:
    """Field (2, H, W) and confidence (H, W) aligning `moving_gray` to `fixed_gray` (NaN = no-data)."""
    params = coarse_trend(fixed_gray, moving_gray, describe, config)
    base = affine_eval(params, fixed_gray.shape)
    residual, confidence = fine_residual(fixed_gray, warp_image(moving_gray, base), describe, config)
    # Compose: moving location = q + base(q) at q = p + residual(p); the base is affine.
    field = residual + base + np.einsum("kc,kij->cij", params[:2], residual)
    return field.astype(np.float32), confidence


def fine_residual(
    fixed_gray: np.ndarray, warped_gray: np.ndarray, describe: Describe, config: WindowConfig
) -> tuple[np.ndarray, np.ndarray]:
    """The residual field (2, H, W) left between `fixed_gray` and an already pre-warped moving image,
    from windows on the fine lattice searched `config.fine_radius` px, and its confidence (H, W)."""
    shape = fixed_gray.shape
    fixed_valid = np.isfinite(fixed_gray)
    fine_step = capped_step(shape, config.fine_step, config.max_fine_windows)
    fine = median_test(
        match_windows(
            describe(fixed_gray),
            describe(warped_gray),
            fixed_valid,
            np.isfinite(warped_gray),
            config.fine_window,
            fine_step,
            config.fine_radius,
            (0, 0),
            config.min_valid,
            config.min_distinct,
        )
    )
    residual, confidence = dense_residual(fine, np.zeros((3, 2)), shape, config.sigma_cells)
    return residual, np.where(fixed_valid, confidence, 0.0).astype(np.float32)


def coarse_trend(
    fixed_gray: np.ndarray, moving_gray: np.ndarray, describe: Describe, config: WindowConfig
) -> np.ndarray:
    """Affine trend params (3, 2) from window matches on the half-resolution pair (4x cheaper).

    Windows search `max_shift` around no motion and, when a global phase correlation of the
    descriptors points further away than max_shift / 2, also around that translation; the search
    whose trend clearly more windows support wins.
    """
    fixed_half, moving_half = (block_means(torch.from_numpy(gray), 2).numpy() for gray in (fixed_gray, moving_gray))
    fixed_desc, moving_desc = describe(fixed_half), describe(moving_half)
    glob, _ = phase_correlation(fixed_desc, moving_desc, config.max_global_shift / 2, whitening=0.5)
    priors = [(0, 0)]
    if np.hypot(*glob) > config.max_shift / 4:
        priors.append((int(round(glob[0])), int(round(glob[1]))))
    # On small images shrink the windows so a lattice of them still fits: otherwise fewer than three
    # match, the trend is zero and shifts beyond the fine search radius are never found.
    window = min(config.coarse_window // 2, max(16, min(fixed_half.shape) // 2))
    step = capped_step(fixed_half.shape, min(config.coarse_step // 2, max(4, window // 2)), config.max_coarse_windows)
    results = []
    for prior in priors:
        found = median_test(
            match_windows(
                fixed_desc,
                moving_desc,
                np.isfinite(fixed_half),
                np.isfinite(moving_half),
                window,
                step,
                config.max_shift // 2,
                prior,
                config.min_valid,
                config.min_distinct,
            )
        )
        g = found.grid
        # Half-resolution pixel i covers full-resolution pixels 2i and 2i + 1: its centre is 2i + 0.5.
        grid = WindowGrid(2 * g.y0 + 0.5, 2 * g.x0 + 0.5, 2 * g.step, g.ny, g.nx)
        results.append((*trend(Matches(grid, 2.0 * found.shifts, found.quality), config), g.ny * g.nx))
    (params, support, _), *far = results
    # A far translation must win clearly and be carried by a good share of all windows: a spurious
    # global peak on an ambiguous pair otherwise gathers a few chance agreements and throws the field
    # tens of pixels away.
    for far_params, far_support, windows in far:
        if far_support > config.prior_margin * support and far_support >= config.prior_min_share * windows:
            params = far_params
    return params


def capped_step(shape: tuple[int, int], step: int, max_windows: int) -> int:
    """The lattice step, widened on large images so that about `max_windows` windows are matched."""
    return max(step, int(np.ceil(np.sqrt(shape[0] * shape[1] / max_windows))))


def trend(coarse: Matches, config: WindowConfig) -> tuple[np.ndarray, int]:
    """Affine params (3, 2) of the coarse matches' consensus, or a translation, or zeros; with the
    number of windows that support it."""
    valid = np.isfinite(coarse.shifts[..., 0])
    if valid.sum() < 3:
        return np.zeros((3, 2)), 0.0
    points = coarse.grid.centres()[valid]
    shifts = coarse.shifts[valid]
    weights = np.maximum(coarse.quality[valid], MIN_WEIGHT)
    needed = max(3, int(np.ceil(config.min_inlier_share * valid.sum())))
    params, inliers = robust_affine(
        points, shifts, weights, np.random.default_rng(config.seed), config.affine_threshold
    )
    if inliers.sum() >= max(needed, 6) and np.abs(params[:2]).max() <= config.max_linear:
        return params, int(inliers.sum())
    params, inliers = translation_consensus(shifts, weights, config.affine_threshold)
    if inliers.sum() >= needed:
        return params, int(inliers.sum())
    return np.zeros((3, 2)), 0


def field_trend(field: torch.Tensor, weight: torch.Tensor, config: WindowConfig) -> tuple[np.ndarray, int]:
    """Affine params (3, 2) of a dense field's consensus, and how many lattice points support it (0: no
    consensus, the params are zero): the field (2, H, W) read on the fine lattice, on its device, as if each point
    were a window match (weighted by `weight` (H, W), NaN = no-data), then the same robust fit as the coarse stage's
    matches (RANSAC affine, else translation) on the host."""
    shape = tuple(field.shape[1:])
    # Small images (and edge tiles) get a finer lattice, so the fit still has points to agree on.
    window = min(config.fine_window, max(8, min(shape) // 2))
    step = config.fine_step if window == config.fine_window else max(4, window // 2)
    grid = window_grid(shape, window, capped_step(shape, step, config.max_fine_windows))
    rows, cols = torch.from_numpy(np.rint(grid.centres()).astype(np.int64).transpose(2, 0, 1)).to(field.device)
    shifts = field[:, rows, cols].permute(1, 2, 0).double().cpu().numpy()
    quality = weight[rows, cols].double().cpu().numpy()
    shifts[~np.isfinite(quality)] = np.nan
    return trend(Matches(grid, shifts, np.nan_to_num(quality)), config)


def polish(
    fixed_gray: np.ndarray, moving_gray: np.ndarray, field: np.ndarray, describe: Describe, config: WindowConfig
) -> tuple[np.ndarray, np.ndarray]:
    """`field` (Contract 1) corrected by the fine window stage on the pair it aligns: a residual of at
    most `config.fine_radius` px, smooth at the lattice scale, composed after it; with the windows'
    support (confidence, H x W), which says how well `field` lets the pair match."""
    residual, confidence = fine_residual(fixed_gray, warp_image(moving_gray, field), describe, config)
    composed = compose(field, residual)
    return np.where(np.isfinite(composed), composed, field + residual).astype(np.float32), confidence

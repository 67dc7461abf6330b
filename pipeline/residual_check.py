"""An independent residual check: tie points measured between the reference and an image on its grid.

Each tie point is the shift (Contract 1 sign: moving location minus reference location) that best matches
a window of the reference's gradient magnitude in the moving image's, with a sub-pixel peak. On an aligned
output the shifts are the residual misregistration; on the unregistered input, the misregistration itself.
Two matchers, so the check never shares its method's family: normalised cross-correlation (`ncc`) and
phase correlation (`phase`). Only the images are read: no field, no truth.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import numpy as np
from scipy import fft as sfft
from scipy import ndimage

KINDS = {"ncc": "normalised cross-correlation", "phase": "phase correlation"}  # matcher -> its name in words
PATCH = 128  # side of a tie-point window, in pixels (search margin included)
SEARCH = 16  # the largest shift a window can measure, in pixels
WINDOWS = 49  # the most tie-point windows per image pair, on a lattice over the grid
SMOOTHING = 1.5  # Gaussian sigma (px) before the gradient: speckle and texture give way to edges
MIN_SCORE = {"ncc": 0.3, "phase": 0.15}  # a weaker peak than this is no tie point
PEAK_SIGMA = 1.0  # phase correlation's peak is shaped to this Gaussian (px), which its sub-pixel fit assumes
MAX_NODATA = 0.1  # share of no-data pixels a window may hold


def independent_kind(method: str) -> str:
    """The matcher from the other family than the registering method's: `phase` correlates, so its check is
    `ncc`; the window matchers and learned methods compare local features, so theirs is phase correlation."""
    return "ncc" if method == "phase" else "phase"


@dataclass(frozen=True)
class TiePoint:
    row: float  # window centre on the reference grid, pixels
    col: float
    dy: float  # Contract 1 sign: moving location minus reference location
    dx: float
    score: float  # peak strength in [0, 1]


@dataclass(frozen=True)
class Residuals:
    """CE90 and RMSE of the radial tie-point residual, in pixels and metres, over `points` tie points."""

    points: int
    windows: int
    ce90_px: float
    rmse_px: float
    ce90_m: float
    rmse_m: float

    @classmethod
    def of(cls, ties: list[TiePoint], windows: int, pixel_size: float) -> Residuals | None:
        if not ties:
            return None
        radial = np.hypot([t.dy for t in ties], [t.dx for t in ties])
        ce90 = float(np.percentile(radial, 90))
        rmse = float(np.sqrt(np.mean(radial**2)))
        return cls(len(ties), windows, ce90, rmse, ce90 * pixel_size, rmse * pixel_size)


def windows(shape: tuple[int, int], patch: int = PATCH, most: int = WINDOWS) -> Iterator[tuple[int, int]]:
    """Top-left corners of up to `most` windows of `patch` px on a regular lattice that fits in `shape`, at most
    a quarter window apart (a small grid still gets several overlapping windows)."""
    if min(shape) < patch:
        return
    side = max(1, int(np.sqrt(most)))
    rows, cols = (
        np.unique(np.linspace(0, n - patch, min(side, (n - patch) // (patch // 4) + 1)).astype(int)) for n in shape
    )
    for r in rows:
        for c in cols:
            yield int(r), int(c)


def gradient_magnitude(image: np.ndarray, sigma: float = SMOOTHING) -> np.ndarray:
    """|grad| of the Gaussian-smoothed image (NaN filled by the mean first): edges, whatever their sign."""
    band = np.asarray(image, np.float64)
    valid = np.isfinite(band)
    band = np.where(valid, band, band[valid].mean() if valid.any() else 0.0)
    return ndimage.gaussian_gradient_magnitude(band, sigma)


def measure(reference: np.ndarray, moving: np.ndarray, kind: str, search: int = SEARCH) -> tuple[float, float, float]:
    """(dy, dx, score) of one window pair of equal shape (H, W); NaN shifts where no distinct peak is found."""
    if kind not in KINDS:
        raise ValueError(f"unknown tie-point matcher {kind!r}: one of {', '.join(KINDS)}")
    a, b = gradient_magnitude(reference), gradient_magnitude(moving)
    surface = _ncc(a, b, search) if kind == "ncc" else _phase(a, b, search)
    return _peak(surface, search, log=kind == "phase")


def window_pairs(
    reference: np.ndarray, moving: np.ndarray, patch: int = PATCH, most: int = WINDOWS
) -> Iterator[tuple[tuple[int, int], np.ndarray, np.ndarray]]:
    """(corner, reference window, moving window) on the lattice of `windows`, cut from two whole images."""
    for r, c in windows(reference.shape[-2:], patch, most):
        yield (r, c), reference[r : r + patch, c : c + patch], moving[r : r + patch, c : c + patch]


def tie_points(
    pairs: Iterable[tuple[tuple[int, int], np.ndarray, np.ndarray]], *, kind: str, search: int = SEARCH
) -> tuple[list[TiePoint], int]:
    """The tie points of (corner, reference window, moving window) pairs, and how many windows had data enough
    to try (a window with more than MAX_NODATA no-data in either image is not tried)."""
    found, tried = [], 0
    for corner, reference, moving in pairs:
        if np.mean(~np.isfinite(reference)) > MAX_NODATA or np.mean(~np.isfinite(moving)) > MAX_NODATA:
            continue
        tried += 1
        dy, dx, score = measure(reference, moving, kind, search)
        if np.isfinite(dy) and score >= MIN_SCORE[kind]:
            h, w = reference.shape
            found.append(TiePoint(corner[0] + (h - 1) / 2, corner[1] + (w - 1) / 2, dy, dx, score))
    return found, tried


def _ncc(a: np.ndarray, b: np.ndarray, search: int) -> np.ndarray:
    """Zero-mean NCC of the reference's central template at every offset in [-search, search]^2 of `b`."""
    from skimage.feature import match_template

    template = a[search:-search, search:-search]
    if template.std() == 0:
        return np.full((2 * search + 1,) * 2, np.nan)
    return match_template(b, template)


def _phase(a: np.ndarray, b: np.ndarray, search: int) -> np.ndarray:
    """Phase correlation (Hann-windowed, whitened) with a Gaussian spectral weight, so the peak is a Gaussian
    of PEAK_SIGMA centred on the shift; normalised so a perfect match peaks at 1. Offsets [-search, search]^2."""
    h, w = a.shape
    taper = np.outer(np.hanning(h), np.hanning(w))
    fa = sfft.fft2((a - a.mean()) * taper)
    fb = sfft.fft2((b - b.mean()) * taper)
    cross = fb * np.conj(fa)
    magnitude = np.abs(cross)
    if not magnitude.any():
        return np.full((2 * search + 1,) * 2, np.nan)
    ky, kx = np.meshgrid(sfft.fftfreq(h), sfft.fftfreq(w), indexing="ij")
    weight = np.exp(-2 * (np.pi * PEAK_SIGMA) ** 2 * (ky**2 + kx**2))
    surface = np.real(sfft.ifft2(cross / np.maximum(magnitude, 1e-12 * magnitude.max()) * weight)) / weight.mean()
    surface = np.fft.fftshift(surface)
    cy, cx = h // 2, w // 2
    return surface[cy - search : cy + search + 1, cx - search : cx + search + 1]


def _peak(surface: np.ndarray, search: int, log: bool) -> tuple[float, float, float]:
    """Sub-pixel maximum of a correlation surface over offsets [-search, search]^2 by a 3-point fit per axis
    (of the logarithm for a Gaussian peak); NaN on the border, where the true peak may lie outside."""
    if not np.isfinite(surface).any():
        return np.nan, np.nan, 0.0
    iy, ix = np.unravel_index(np.nanargmax(surface), surface.shape)
    score = float(surface[iy, ix])
    if iy in (0, surface.shape[0] - 1) or ix in (0, surface.shape[1] - 1):
        return np.nan, np.nan, score
    patch = surface[iy - 1 : iy + 2, ix - 1 : ix + 2]
    if log:
        patch = np.log(np.maximum(patch, 1e-6 * max(score, 1e-12)))
    return iy - search + _vertex(patch[:, 1]), ix - search + _vertex(patch[1, :]), score


def _vertex(values: np.ndarray) -> float:
    left, centre, right = values
    denom = left - 2 * centre + right
    return float(np.clip(0.5 * (left - right) / denom, -0.5, 0.5)) if denom < 0 else 0.0

"""The independent residual check on synthetic pairs with a known shift: each matcher finds it to a fifth of a
pixel across a change of modality (contrast reversed, squared, noisy), drops windows with no distinct
match, skips windows without data, and its CE90 and RMSE are those of the radial residuals."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from pipeline.residual_check import (
    KINDS,
    MAX_NODATA,
    MIN_SCORE,
    PATCH,
    Residuals,
    TiePoint,
    independent_kind,
    measure,
    tie_points,
    window_pairs,
    windows,
)


def _landscape(shape=(320, 320), seed=0) -> np.ndarray:
    return ndimage.gaussian_filter(np.random.default_rng(seed).normal(size=shape), 3)


def _other_modality(image: np.ndarray, seed=1) -> np.ndarray:
    """Reversed contrast, a nonlinear response and multiplicative noise, as SAR differs from optical."""
    rng = np.random.default_rng(seed)
    return -(np.abs(image) ** 1.5) * rng.gamma(8.0, 1 / 8.0, image.shape)


def _shifted(image: np.ndarray, shift) -> np.ndarray:
    """The image as a moving image misregistered by `shift` (Contract 1: moving(p + shift) = image(p))."""
    return ndimage.shift(image, shift, order=3, mode="nearest")


@pytest.mark.parametrize("kind", list(KINDS))
@pytest.mark.parametrize("shift", [(2.5, -2.5), (1.3, -0.7), (-6.2, 3.75)])
def test_a_known_shift_is_measured_within_a_fifth_of_a_pixel(kind, shift):
    reference = _landscape()
    moving = _other_modality(_shifted(reference, shift))
    dy, dx, score = measure(reference[96:224, 96:224], moving[96:224, 96:224], kind)
    assert score >= MIN_SCORE[kind]
    assert abs(dy - shift[0]) < 0.2 and abs(dx - shift[1]) < 0.2, (dy, dx)


@pytest.mark.parametrize("kind", list(KINDS))
def test_every_window_of_a_shifted_pair_measures_the_shift(kind):
    reference = _landscape()
    ties, tried = tie_points(window_pairs(reference, _other_modality(_shifted(reference, (2.5, 1.0)))), kind=kind)
    assert tried == len(list(windows(reference.shape))) > 4 and len(ties) >= tried - 1
    residuals = Residuals.of(ties, tried, pixel_size=10.0)
    assert residuals.rmse_px == pytest.approx(np.hypot(2.5, 1.0), abs=0.2)
    assert residuals.ce90_m == pytest.approx(10.0 * residuals.ce90_px)


@pytest.mark.parametrize("kind", list(KINDS))
def test_matches_below_the_correlation_threshold_are_dropped(kind):
    """Two unrelated images have no tie points, though every window is tried."""
    reference, unrelated = _landscape(seed=0), _landscape(seed=7)
    ties, tried = tie_points(window_pairs(reference, unrelated), kind=kind)
    assert tried > 4 and ties == []
    assert Residuals.of(ties, tried, pixel_size=10.0) is None


def test_windows_without_data_are_not_tried():
    reference = _landscape()
    moving = _shifted(reference, (1.0, 1.0))
    moving[:, : PATCH + 8] = np.nan  # the first column of windows is all no-data, the next partly
    ties, tried = tie_points(window_pairs(reference, moving), kind="ncc")
    cols = sorted({c for _, c in windows(reference.shape)})
    usable = [c for c in cols if np.mean(np.isnan(moving[:PATCH, c : c + PATCH])) <= MAX_NODATA]
    assert tried == len(usable) * len({r for r, _ in windows(reference.shape)}) and len(ties) == tried


def test_ce90_is_the_90th_percentile_of_the_radial_residual():
    radial = np.arange(1.0, 21.0)
    angles = np.linspace(0, 2 * np.pi, radial.size, endpoint=False)
    ties = [TiePoint(0, 0, r * np.sin(a), r * np.cos(a), 1.0) for r, a in zip(radial, angles)]
    residuals = Residuals.of(ties, 25, pixel_size=30.0)
    assert residuals.ce90_px == pytest.approx(np.percentile(radial, 90))
    assert residuals.rmse_px == pytest.approx(np.sqrt(np.mean(radial**2)))
    assert residuals.rmse_m == pytest.approx(30.0 * residuals.rmse_px)
    assert (residuals.points, residuals.windows) == (20, 25)


def test_the_check_is_of_another_family_than_the_method():
    assert independent_kind("phase") == "ncc"
    assert {independent_kind(m) for m in ("cfog", "mind", "dsmar")} == {"phase"}
    with pytest.raises(ValueError, match="unknown tie-point matcher"):
        measure(np.ones((64, 64)), np.ones((64, 64)), "sift")

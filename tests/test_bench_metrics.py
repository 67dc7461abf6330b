"""Benchmark metrics, warps and pair geometry on synthetic cases with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from benchmarks.accuracy import fit_to_shape
from benchmarks.metrics import landmark_errors, summarise_errors, warp_recovery_error
from datagen.pairs import homography_field, largest_valid_rectangle, mask_border_fill
from datagen.warps import benchmark_warp, invert_warp
from kernel.field_metrics import end_point_error, folding_share, jacobian_determinant
from kernel.fields import affine_field
from kernel.warp import identity_grid, sample


def test_pure_shift_epe_and_summary():
    shape = (40, 50)
    field = np.zeros((2, *shape), np.float32)
    truth = np.broadcast_to(np.array([3.0, 4.0], np.float32)[:, None, None], (2, *shape))
    epe = end_point_error(field, truth)
    assert np.allclose(epe, 5.0)
    stats = summarise_errors(np.concatenate([epe.ravel(), np.full(epe.size, 0.5)]))
    assert stats.mean == pytest.approx(2.75)
    assert stats.under[1.0] == pytest.approx(0.5) and stats.under[3.0] == pytest.approx(0.5)
    assert stats.to_dict()["under_1px"] == pytest.approx(0.5)


def test_affine_jacobian_is_exact():
    field = affine_field((60, 60), shift=(1.0, -2.0), rotation_deg=10.0, scale=1.1)
    det = jacobian_determinant(field)
    assert np.allclose(det, 1.1**2, atol=1e-4)
    assert folding_share(field) == 0.0


def test_fold_is_detected():
    field = np.zeros((2, 30, 40), np.float32)
    xx = np.arange(40, dtype=np.float32)
    field[1] = np.where(xx < 20, 0.0, -2.0 * (xx - 20))[None]  # x -> x - 2(x - 20): reversed, a fold
    det = jacobian_determinant(field)
    assert (det[:, 22:] < 0).all() and (det[:, :18] == 1).all()
    assert folding_share(field) == pytest.approx(np.mean(det <= 0))
    assert 0.4 < folding_share(field) < 0.6


def test_inverse_of_an_affine_warp_is_exact():
    shape = (64, 80)
    warp = affine_field(shape, shift=(3.0, -5.0), rotation_deg=1.5, scale=1.02)
    truth = invert_warp(warp)
    # The inverse of p -> c + sR(p - c) + s0 is p -> c + R^T (p - c - s0) / s, computed directly.
    grid = identity_grid(shape).astype(np.float64)
    centre = np.array([(shape[0] - 1) / 2, (shape[1] - 1) / 2])[:, None, None]
    theta = np.deg2rad(1.5)
    rel = (grid - centre - np.array([3.0, -5.0])[:, None, None]) / 1.02
    c, s = np.cos(theta), np.sin(theta)
    inverse = np.stack([c * rel[0] + s * rel[1], -s * rel[0] + c * rel[1]]) + centre - grid
    # Where p + t(p) falls outside the image the warp is only known by its edge values (never scored).
    assert np.abs(truth - inverse)[:, 8:-8, 8:-8].max() < 1e-3


def test_inverse_of_a_random_warp_satisfies_its_equation():
    warp = benchmark_warp((96, 120), seed=3)
    truth = invert_warp(warp)
    residual = truth + sample(warp, identity_grid(warp.shape[1:]) + truth)
    assert np.abs(residual).max() < 1e-3
    assert np.abs(warp).max() > 2.0  # the warp is not trivial


def test_warp_recovery_cancels_the_methods_own_bias():
    warp = benchmark_warp((80, 80), seed=5)
    truth = invert_warp(warp)
    assert np.median(warp_recovery_error(truth, warp, np.zeros_like(truth))) < 1e-3
    # A method that is off by a constant e on the unwarped pair (d0 = e) and finds the warp on top of
    # it (d1(p) = e + t(p + e)) recovers the warp exactly, whatever e.
    bias = np.array([0.7, -1.2], np.float32)[:, None, None]
    d0 = np.broadcast_to(bias, truth.shape)
    d1 = bias + sample(truth, identity_grid((80, 80)) + bias)
    assert np.median(warp_recovery_error(d1, warp, d0)) < 0.05


def test_landmark_errors_follow_the_field():
    field = np.zeros((2, 50, 60), np.float32)
    field[0], field[1] = 2.0, -3.0  # moving = fixed + (2, -3)
    marks = np.array([[10.0, 20.0, 7.0, 22.0], [30.0, 5.0, 27.0, 7.0], [70.0, 5.0, 67.0, 7.0]])
    errors = landmark_errors(field, marks)
    assert errors[:2] == pytest.approx([0.0, 0.0], abs=1e-6)
    assert np.isnan(errors[2])  # off the fixed grid


def test_homography_field_matches_readme_convention():
    h = np.array([[1.0, 0.0, 5.0], [0.0, 1.0, -2.0], [0.0, 0.0, 1.0]])  # x_m = x + 5, y_m = y - 2
    field = homography_field(h, (10, 12))
    assert np.allclose(field[0], -2.0) and np.allclose(field[1], 5.0)


def test_largest_valid_rectangle_is_fully_valid():
    valid = np.zeros((100, 120), bool)
    valid[10:70, 20:110] = True
    valid[40:45, 60:62] = False
    top, left, height, width = largest_valid_rectangle(valid)
    assert valid[top : top + height, left : left + width].all()
    assert height * width >= 0.45 * 60 * 90


def test_border_fill_is_masked_but_dark_content_is_kept():
    image = np.full((1, 50, 50), 100.0, np.float32)
    image[:, :10, :10] = 0.0  # rotation fill in a corner
    image[:, 25:30, 25:30] = 0.0  # a dark object inside
    masked = mask_border_fill(image)
    assert np.isnan(masked[0, :8, :8]).all()
    assert (masked[0, 25:30, 25:30] == 0).all()


def test_fit_to_shape_pads_and_crops():
    image = np.ones((1, 30, 50), np.float32)
    out = fit_to_shape(image, (40, 20))
    assert out.shape == (1, 40, 20)
    assert np.isnan(out[0, 30:]).all() and (out[0, :30] == 1).all()

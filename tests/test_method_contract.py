"""Contract 2, held by every registered method: one suite parametrised over `available_methods()`, so a new
method is checked the day it registers (docs/architecture.md, "Where to add things")."""

from __future__ import annotations

import importlib.util

import numpy as np
import pytest
from scipy import ndimage

from models import available_methods, register_pair

NEEDS = {"gefolki": "gefolki"}  # method -> the package it needs (the `bench` extra)


def _method(name: str):
    module = NEEDS.get(name)
    missing = module is not None and importlib.util.find_spec(module) is None
    reason = f"method {name} needs `{module}` (pip install -e '.[bench]')"
    return pytest.param(name, id=name, marks=pytest.mark.skipif(missing, reason=reason))


METHODS = [_method(name) for name in available_methods()]


def _texture(shape: tuple[int, int], seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return ndimage.gaussian_filter(rng.random(shape), 2.0).astype(np.float32)


def _check_result(result, moving_shape: tuple[int, ...]) -> None:
    h, w = moving_shape[-2:]
    assert result.displacement.shape == (2, h, w) and result.displacement.dtype == np.float32
    assert result.confidence.shape == (h, w) and result.confidence.dtype == np.float32
    assert result.warped.shape == moving_shape and result.warped.dtype == np.float32
    assert np.isfinite(result.displacement).all(), "the field must be defined everywhere (Contract 1)"
    assert np.isfinite(result.confidence).all()
    assert result.confidence.min() >= 0.0 and result.confidence.max() <= 1.0


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("shape", [(64, 64), (64, 77)])
def test_the_smallest_images_give_a_whole_result(method, shape):
    fixed = _texture(shape)
    moving = np.stack([np.roll(fixed, 2, axis=1), np.roll(fixed, 2, axis=0)])
    result = register_pair(fixed, moving, fixed_modality="optical", moving_modality="sar", method=method)
    _check_result(result, moving.shape)


@pytest.mark.parametrize("method", METHODS)
def test_no_data_in_either_image_keeps_the_result_finite(method):
    fixed = _texture((96, 96), 1)
    moving = np.roll(fixed, 1, axis=0).copy()
    fixed[:30, :40] = np.nan  # a no-data corner in the reference
    moving[:, 60:70] = np.nan  # a no-data stripe in the moving image
    result = register_pair(fixed, moving, fixed_modality="optical", moving_modality="dem", method=method)
    _check_result(result, moving.shape)
    assert np.isnan(result.warped[:, 60:70]).any(), "samples from no-data stay no-data"


@pytest.mark.parametrize("method", METHODS)
def test_an_image_registered_onto_itself_barely_moves(method):
    image = _texture((96, 96), 2)
    result = register_pair(image, image, fixed_modality="optical", moving_modality="optical", method=method)
    magnitude = np.hypot(*result.displacement)
    assert np.median(magnitude) < 0.5, f"{method}: median |d| {np.median(magnitude):.2f} px on identical images"

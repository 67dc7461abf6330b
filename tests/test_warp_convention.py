"""Contract 1, pinned once: sign of displacement, zero field, composition."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from kernel.fields import affine_field
from kernel.warp import compose, warp_image


def test_positive_shift_samples_further_along():
    moving = np.zeros((32, 32), np.float32)
    moving[10, 20] = 1.0
    d = np.zeros((2, 32, 32), np.float32)
    d[0], d[1] = 3.0, -2.0  # fixed (7, 22) corresponds to moving (10, 20)
    warped = warp_image(moving, d)
    assert warped[7, 22] == 1.0
    assert np.nansum(warped) == 1.0


@settings(max_examples=25, deadline=None)
@given(st.integers(8, 40), st.integers(8, 40), st.integers(1, 3), st.integers(0, 2**31 - 1))
def test_zero_field_is_identity(h, w, c, seed):
    image = np.random.default_rng(seed).normal(size=(c, h, w)).astype(np.float32)
    np.testing.assert_array_equal(warp_image(image, np.zeros((2, h, w), np.float32)), image)


def test_outside_and_nan_become_nan():
    image = np.ones((16, 16), np.float32)
    image[5, 5] = np.nan
    d = np.zeros((2, 16, 16), np.float32)
    d[1, :, 15] = 5.0
    warped = warp_image(image, d)
    assert np.isnan(warped[:, 15]).all() and np.isnan(warped[5, 5]) and warped[8, 8] == 1.0


@settings(max_examples=15, deadline=None)
@given(st.floats(-3, 3), st.floats(-3, 3), st.floats(-3, 3), st.floats(-3, 3))
def test_warping_composes(a, b, c, e):
    rng = np.random.default_rng(0)
    from scipy import ndimage

    image = ndimage.gaussian_filter(rng.normal(size=(64, 64)), 3).astype(np.float32)
    first = affine_field((64, 64), shift=(a, b), rotation_deg=1.0)
    second = affine_field((64, 64), shift=(c, e), scale=1.01)
    twice = warp_image(warp_image(image, first), second)
    once = warp_image(image, compose(first, second))
    inner = (slice(12, -12), slice(12, -12))
    np.testing.assert_allclose(once[inner], twice[inner], atol=0.02)

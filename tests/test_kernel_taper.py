"""The one tile-blending weight rule: fades sum to one across a shared span, none at image edges."""

from __future__ import annotations

import numpy as np
import pytest

from kernel.taper import edge_taper, tile_taper


@pytest.mark.parametrize("profile", ["linear", "cosine"])
@pytest.mark.parametrize("span", [1, 8, 33])
def test_neighbours_fading_across_one_span_sum_to_one(profile, span):
    left = edge_taper(100, 0, span, profile)
    right = edge_taper(100, span, 0, profile)
    shared = left[-span:] + right[:span]
    assert np.allclose(shared, 1.0, atol=1e-12)
    assert (left[:-span] == 1).all() and (right[span:] == 1).all()
    assert (np.diff(right[:span]) > 0).all() and (right > 0).all()


def test_no_fade_is_all_ones_and_long_fades_are_cut_and_multiply():
    assert (edge_taper(50, 0, 0) == 1).all()
    short = edge_taper(10, 30, 30, "linear")
    k = np.arange(10) + 0.5
    assert np.allclose(short, (k / 10) * (k[::-1] / 10))


def test_tile_taper_is_the_outer_product_in_the_asked_dtype():
    weight = tile_taper((20, 30), (4, 0, 0, 6), "linear", np.float32)
    assert weight.dtype == np.float32 and weight.shape == (20, 30)
    assert np.array_equal(weight[:, 0], edge_taper(20, 4, 0, "linear").astype(np.float32))
    assert np.array_equal(weight[0], edge_taper(30, 0, 6, "linear").astype(np.float32) * weight[0, 0])
    assert weight[-1, 0] == 1.0

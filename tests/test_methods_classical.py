"""The classical baselines recover known warps with the Contract-1 sign on a real optical-SAR pair."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from datagen.pairs import load_aligned_pair, read_pairs
from datagen.warps import inside_mask, invert_warp
from kernel.errors import InputError
from kernel.fields import affine_field
from kernel.warp import warp_image
from models import register_pair


@pytest.fixture(scope="module")
def optical_sar(pairs_dir):
    record = next(r for r in read_pairs(pairs_dir, "eval") if r.pair_id == "cfog-opt-sar-1")
    pair = load_aligned_pair(record)
    # A 300 x 300 centre crop keeps the test fast.
    h, w = pair.fixed.shape[1:]
    window = (slice(None), slice(h // 2 - 150, h // 2 + 150), slice(w // 2 - 150, w // 2 + 150))
    return pair.fixed[window], pair.moving[window]


@pytest.mark.parametrize(
    "shift, rotation, scale",
    [((5.3, -7.6), 0.0, 1.0), ((-3.0, 4.0), 1.5, 1.015)],
)
def test_cfog_recovers_known_warp(optical_sar, shift, rotation, scale):
    fixed, moving = optical_sar
    warp = affine_field(fixed.shape[1:], shift, rotation, scale)
    truth = invert_warp(warp)
    result = register_pair(fixed, warp_image(moving, warp), "optical", "sar", method="cfog")
    inside = inside_mask(truth)
    error = np.hypot(*(result.displacement - truth))[inside]
    assert np.median(error) < 1.0
    # The sign: moving_warped(q) = moving(q + w(q)), so the field is about -w.
    centre = tuple(s // 2 for s in fixed.shape[1:])
    assert (
        np.sign(result.displacement[(slice(None), *centre)]).tolist() == np.sign(truth[(slice(None), *centre)]).tolist()
    )
    assert result.confidence.shape == fixed.shape[1:]
    assert 0.0 <= result.confidence.min() and result.confidence.max() <= 1.0


def test_cfog_handles_nodata_and_radiometry(optical_sar):
    fixed, moving = optical_sar
    warp = affine_field(fixed.shape[1:], (2.0, -3.0))
    moved = warp_image(moving, warp)
    moved_db = 10.0 * np.log10(np.maximum(moved / 255.0, 1e-3))  # another radiometry: dB
    fixed = fixed.copy()
    fixed[:, :40, :] = np.nan
    result = register_pair(fixed, moved_db, "optical", "sar", method="cfog")
    assert np.isfinite(result.displacement).all()
    assert (result.confidence[:40] == 0).all()
    error = np.hypot(*(result.displacement - invert_warp(warp)))[60:-20, 20:-20]
    assert np.median(error) < 1.0


@pytest.mark.parametrize("method", ["mind", "phase"])
def test_other_baselines_recover_a_shift(optical_sar, method):
    fixed, moving = optical_sar
    warp = affine_field(fixed.shape[1:], (4.6, -6.2))
    result = register_pair(fixed, warp_image(moving, warp), "optical", "sar", method=method)
    error = np.hypot(*(result.displacement - invert_warp(warp)))[inside_mask(invert_warp(warp))]
    assert np.median(error) < 1.0
    assert 0.0 < result.confidence.max() <= 1.0


def test_unknown_option_is_an_input_error(optical_sar):
    fixed, moving = optical_sar
    with pytest.raises(InputError, match="unknown option"):
        register_pair(fixed, moving, "optical", "sar", method="cfog", window=3)


@pytest.mark.parametrize("method", ["cfog", "mind"])
@pytest.mark.parametrize("shape", [(64, 64), (128, 160)])
def test_small_images_still_find_shifts_beyond_the_fine_radius(method, shape):
    """Contract 2 promises any size from 64 x 64: the coarse stage must fit small images too."""
    from datagen.synthetic import render_scene

    scene = render_scene(shape, np.random.default_rng(1))
    moving = warp_image(scene.sar, affine_field(shape, shift=(8.0, 6.0)))
    moving = np.where(np.isnan(moving), np.nanmedian(moving, axis=(1, 2), keepdims=True), moving)  # no border leak
    r = register_pair(scene.optical, moving, "optical", "sar", method=method)
    np.testing.assert_allclose(np.median(r.displacement, axis=(1, 2)), [-8.0, -6.0], atol=0.5)


def test_polish_corrects_a_small_field_error_and_keeps_a_right_field(optical_sar):
    from functools import partial

    from models.classical.features import mind_ssc
    from models.classical.register import WindowConfig, polish
    from models.preprocess import to_gray

    fixed, moving = optical_sar
    warp = affine_field(fixed.shape[1:], (2.5, -1.5), 0.5, 1.0)
    truth = invert_warp(warp)
    inside = inside_mask(truth)
    f, m = to_gray(fixed, "optical"), to_gray(warp_image(moving, warp), "sar")
    describe, config = partial(mind_ssc, radius=1, dilation=1), WindowConfig(fine_radius=3)
    off = truth + np.array([1.8, -1.2], np.float32)[:, None, None]  # a field 2.2 px wrong
    fixed_up, _ = polish(f, m, off, describe, config)
    assert np.median(np.hypot(*(fixed_up - truth))[inside]) < 0.6
    kept, support = polish(f, m, truth, describe, config)
    assert np.median(np.hypot(*(kept - truth))[inside]) < 0.6
    _, lost = polish(f, m, truth + np.float32(15.0), describe, config)  # beyond the search: windows fail
    assert support.mean() > 0.5 > lost.mean()  # the support says which start lets the pair match


def test_field_trend_is_the_affine_consensus_of_a_dense_field_despite_outliers_and_no_data():
    from models.classical.interpolate import affine_eval
    from models.classical.register import WindowConfig, field_trend

    shape = (240, 300)
    truth = affine_field(shape, (3.0, -2.0), 1.0, 1.01)
    field = truth.copy()
    field[:, :80, :90] += 15.0  # a region the network got wrong
    weight = np.ones(shape, np.float32)
    weight[:, 250:] = np.nan  # no-data: its field is garbage and must not count
    field[:, :, 250:] = -40.0
    params, support = field_trend(torch.from_numpy(field), torch.from_numpy(weight), WindowConfig())
    assert np.abs(affine_eval(params, shape) - truth).max() < 0.05 and support > 0


@pytest.mark.parametrize("shape", [(64, 64), (64, 77), (100, 300)])
def test_field_trend_finds_the_shift_of_a_small_image_or_edge_tile(shape):
    from models.classical.register import WindowConfig, field_trend

    field = np.broadcast_to(np.array([2.5, -4.0], np.float32)[:, None, None], (2, *shape)).copy()
    params, support = field_trend(torch.from_numpy(field), torch.ones(shape), WindowConfig())
    np.testing.assert_allclose(params[2], [2.5, -4.0], atol=1e-6)
    assert support >= 6

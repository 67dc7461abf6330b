"""The shipped DS-MAR through the pair API: a known warp on real eval pairs, recovered."""

import numpy as np
import pytest

from benchmarks.pairs import load_aligned_pair, read_pairs
from benchmarks.warps import benchmark_warp, inside_mask, invert_warp
from models import register_pair
from models.warp import warp_image


@pytest.mark.parametrize("category", ["optical-sar", "optical-infrared"])
def test_shipped_model_recovers_a_known_warp_better_than_identity(pairs_dir, category):
    record = next(r for r in read_pairs(pairs_dir, "eval") if r.category == category and r.gt_kind == "similarity")
    pair = load_aligned_pair(record)
    warp = benchmark_warp(pair.fixed.shape[-2:], seed=11)
    truth = invert_warp(warp)
    inside = inside_mask(truth)
    moving = warp_image(pair.moving, warp)
    result = register_pair(pair.fixed, moving, pair.fixed_modality, pair.moving_modality, method="dsmar")
    epe = np.linalg.norm(result.displacement - truth, axis=0)[inside]
    identity = np.linalg.norm(truth, axis=0)[inside]
    assert np.median(epe) < 0.75 * np.median(identity)
    assert result.confidence.shape == pair.fixed.shape[-2:]


def test_dsmar_is_registered_and_handles_small_odd_inputs():
    rng = np.random.default_rng(0)
    fixed = rng.random((64, 77)).astype(np.float32)
    moving = np.roll(fixed, 2, axis=1) * 40.0 - 20.0  # another radiometry
    moving[:3] = np.nan
    result = register_pair(fixed, moving, "optical", "sar", method="dsmar")
    assert result.displacement.shape == (2, 64, 77) and np.isfinite(result.displacement).all()
    assert result.warped.shape == (64, 77)

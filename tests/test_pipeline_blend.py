"""Blending: identical tile fields blend exactly; the taper fades across overlaps and not at edges."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.blend import blend, taper
from pipeline.tiles import plan_tiles


def _pieces(plan, tile, make):
    return [(n, *make(n)) for n in plan.covering(tile.core)]


@pytest.mark.parametrize("shape,size,halo", [((300, 420), 128, 32), ((256, 256), 128, 0), ((130, 260), 64, 60)])
def test_constant_fields_blend_exactly(shape, size, halo):
    plan = plan_tiles(shape, size, halo)
    rng = np.random.default_rng(0)

    def make(n):
        h, w = n.outer.height, n.outer.width
        field = np.empty((2, h, w), np.float32)
        field[0], field[1] = 1.75, -2.5
        return field, rng.uniform(0, 1, (h, w)).astype(np.float32)  # any confidence: still exact

    for tile in plan.tiles:
        displacement, confidence = blend(tile.core, _pieces(plan, tile, make))
        assert displacement.shape == (2, tile.core.height, tile.core.width)
        np.testing.assert_allclose(displacement[0], 1.75, rtol=0, atol=1e-6)
        np.testing.assert_allclose(displacement[1], -2.5, rtol=0, atol=1e-6)
        assert ((confidence >= 0) & (confidence <= 1)).all()


def test_blend_is_continuous_across_tile_borders():
    plan = plan_tiles((256, 256), 128, 32)

    def make(n):  # each tile reports its own constant: the blend must ramp, not step
        h, w = n.outer.height, n.outer.width
        value = float(n.i * 2 + n.j)
        return np.full((2, h, w), value, np.float32), np.ones((h, w), np.float32)

    full = np.zeros((256, 256), np.float32)
    for tile in plan.tiles:
        full[tile.core.slices] = blend(tile.core, _pieces(plan, tile, make))[0][0]
    steps = np.abs(np.diff(full, axis=1)).max()
    assert steps < 0.1  # a hard seam would jump by 1.0


def test_confident_tile_wins_the_overlap():
    plan = plan_tiles((128, 256), 128, 32)
    left, right = plan.tiles

    def make(n):
        h, w = n.outer.height, n.outer.width
        conf = np.ones((h, w), np.float32) if n is left else np.zeros((h, w), np.float32)
        return np.full((2, h, w), 1.0 if n is left else 5.0, np.float32), conf

    displacement, _ = blend(right.core, _pieces(plan, right, make))
    # Inside the overlap the zero-confidence tile yields almost entirely to the confident one.
    assert displacement[0, :, :16].max() < 1.1


def test_taper_fades_only_towards_neighbours():
    plan = plan_tiles((256, 256), 128, 32)
    w = taper(plan.tile(0, 0))
    assert w[0, 0] == pytest.approx(1.0) and w[-1, -1] < 1e-3 and w.min() > 0


def test_uncovered_core_is_an_error():
    plan = plan_tiles((256, 256), 128, 16)
    with pytest.raises(ValueError, match="do not cover"):
        blend(plan.tile(1, 1).core, [])

"""The tile plan covers the grid exactly once with chunk-aligned cores; halos are clipped, not lost."""

from __future__ import annotations

import numpy as np
import pytest
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st

from kernel.errors import InputError
from pipeline.grid import Grid
from pipeline.tiles import Window, plan_tiles, region_grid


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 700), st.integers(1, 700), st.sampled_from([64, 100, 128, 256]), st.integers(0, 64))
def test_cores_partition_grid_and_align_to_chunks(height, width, size, halo):
    plan = plan_tiles((height, width), size, halo)
    cover = np.zeros((height, width), np.int32)
    ch_y, ch_x = plan.chunks
    for tile in plan.tiles:
        cover[tile.core.slices] += 1
        assert tile.core.row % ch_y == 0 and tile.core.col % ch_x == 0
        assert tile.core.height == min(ch_y, height - tile.core.row)
        assert tile.core.width == min(ch_x, width - tile.core.col)
        o = tile.outer
        assert o.row == max(0, tile.core.row - halo) and o.col == max(0, tile.core.col - halo)
        assert o.row + o.height == min(height, tile.core.row + tile.core.height + halo)
        assert o.col + o.width == min(width, tile.core.col + tile.core.width + halo)
        c = tile.context  # registered on: the outer window, widened inwards to a first tile's span
        assert c.intersection(o) == o and c.intersection(Window(0, 0, height, width)) == c
        for outer_span, span, extent in ((o.height, c.height, height), (o.width, c.width, width)):
            assert span == max(outer_span, min(size + halo, extent))
    assert (cover == 1).all()
    assert len(plan.tiles) == plan.n_rows * plan.n_cols


def test_covering_a_core_finds_every_tile_whose_outer_window_overlaps_it():
    plan = plan_tiles((1000, 1300), 256, 64)
    for tile in plan.tiles:
        names = {(n.i, n.j) for n in plan.covering(tile.core)}
        assert (tile.i, tile.j) in names
        for other in plan.tiles:
            overlaps = other.outer.intersection(tile.core) is not None
            assert overlaps == ((other.i, other.j) in names)


def test_empty_grid_is_an_input_error():
    with pytest.raises(InputError):
        plan_tiles((0, 10), 64, 8)


def test_region_grid_keeps_the_pixel_lattice():
    grid = Grid.from_affine(32633, Affine(10, 0, 500000, 0, -10, 4_500_000), 1000, 1000)
    # A bbox well inside the scene (UTM 33N around 15 E, 40.6 N).
    sub = region_grid(grid, (15.01, 40.6, 15.03, 40.62))
    assert sub.height < grid.height and sub.width < grid.width
    col, row = ~grid.affine @ (sub.transform[2], sub.transform[5])
    assert col == pytest.approx(round(col)) and row == pytest.approx(round(row))
    whole = region_grid(grid, (10.0, 30.0, 20.0, 50.0))
    assert whole == grid
    with pytest.raises(InputError, match="does not intersect"):
        region_grid(grid, (-60.0, 10.0, -59.0, 11.0))

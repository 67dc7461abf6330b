"""Mosaics of several items (DEM tiles in geographic coordinates), the truth asset, and bad input."""

from __future__ import annotations

import numpy as np
import pytest
from affine import Affine

from dsmar.errors import CatalogError, InputError
from pipeline.grid import Grid
from pipeline.load import load_stack, load_truth
from tests.load_cases import (
    OPTICAL_GRID,
    make_item,
    optical_pixel_ramps,
    proj_fields,
    roundtrip,
    source_transform,
    write_tif,
)

ROWS, COLS = np.mgrid[0 : OPTICAL_GRID.height, 0 : OPTICAL_GRID.width]
ARCSEC = 1 / 3600


def dem_tile(tmp_path, name, data, transform):
    path = write_tif(tmp_path / f"{name}.tif", data, 4326, transform)
    fields = {**proj_fields(transform, data.shape), "raster:bands": [{"unit": "m"}]}
    return roundtrip(make_item(name, {"data": dict(href=path, **fields)}, 4326))


def test_two_geographic_dem_tiles_mosaic_seamlessly(tmp_path):
    """Two 1-arcsecond tiles (as Copernicus DEM ships them, EPSG:4326) split inside the grid."""
    transform, shape = source_transform(4326, ARCSEC, margin=0.002, shift=0.3 * ARCSEC)
    ramps = optical_pixel_ramps(4326, transform, shape)
    half = shape[1] // 2
    west = dem_tile(tmp_path, "dem-w", ramps[0][:, :half], transform)
    east = dem_tile(tmp_path, "dem-e", ramps[0][:, half:], transform @ Affine.translation(half, 0))
    out = load_stack([west, east], {"elevation": "data"}, OPTICAL_GRID, chunks=50).values[0]
    assert not np.isnan(out).any()
    west_cols = (~np.isnan(load_stack([west], {"elevation": "data"}, OPTICAL_GRID).values[0])).sum(axis=1)
    near_seam = np.abs(COLS - west_cols[:, None]) < 3
    assert near_seam.any() and (~near_seam).any()
    assert np.abs(out - COLS)[~near_seam].max() < 0.1
    # at the seam each tile is interpolated from its own side only: within half a DEM pixel (~1.1 px)
    assert np.abs(out - COLS)[near_seam].max() < 1.2


def test_first_valid_item_wins_where_items_overlap(tmp_path):
    transform, shape = source_transform(32633, 30.0)
    a = np.full(shape, 1.0, np.float32)
    b = np.full(shape, 2.0, np.float32)
    a[: shape[0] // 2] = np.nan  # `a` covers only the southern half
    item_a = roundtrip(make_item("a", {"data": dict(href=write_tif(tmp_path / "a.tif", a, 32633, transform, nodata=np.nan),
                                                    **proj_fields(transform, shape))}, 32633))
    item_b = roundtrip(make_item("b", {"data": dict(href=write_tif(tmp_path / "b.tif", b, 32633, transform, nodata=np.nan),
                                                    **proj_fields(transform, shape))}, 32633))
    ab = load_stack([item_a, item_b], {"v": "data"}, OPTICAL_GRID).values[0]
    assert not np.isnan(ab).any()
    assert ab[-1, 0] == 1.0 and ab[0, 0] == 2.0  # a on top where valid, b fills a's gap
    np.testing.assert_array_equal(load_stack([item_b, item_a], {"v": "data"}, OPTICAL_GRID).values[0], 2.0)


def test_truth_is_read_on_the_grid_and_refused_off_it(tmp_path):
    truth = np.random.default_rng(3).normal(size=(2, *OPTICAL_GRID.shape)).astype(np.float32)
    fields = proj_fields(OPTICAL_GRID.affine, OPTICAL_GRID.shape)
    on = write_tif(tmp_path / "truth.tif", truth, 32632, OPTICAL_GRID.affine)
    item = roundtrip(make_item("sar", {"truth_displacement": dict(href=on, **fields)}, 32632))
    np.testing.assert_array_equal(load_truth(item, OPTICAL_GRID), truth)
    assert load_truth(roundtrip(make_item("no-truth", {}, 32632)), OPTICAL_GRID) is None
    shifted = Grid.from_affine(32632, OPTICAL_GRID.affine @ Affine.translation(1, 0), *OPTICAL_GRID.shape)
    with pytest.raises(CatalogError, match="not on the optical grid"):
        load_truth(item, shifted)


def test_bad_requests_fail_clearly(tmp_path):
    transform, shape = source_transform(32633, 30.0)
    path = write_tif(tmp_path / "d.tif", np.ones(shape, np.float32), 32633, transform)
    item = roundtrip(make_item("d", {"data": dict(href=path, **proj_fields(transform, shape))}, 32633))
    with pytest.raises(CatalogError, match="no item has asset 'elevation'"):
        load_stack([item], {"dem": "elevation"}, OPTICAL_GRID)
    with pytest.raises(InputError, match="resampling"):
        load_stack([item], {"dem": "data"}, OPTICAL_GRID, resampling="lanczos9")
    with pytest.raises(CatalogError, match="no items"):
        load_stack([], {"dem": "data"}, OPTICAL_GRID)
    item.assets["data"].href = (tmp_path / "missing.tif").as_uri()
    with pytest.raises(CatalogError, match="cannot open asset"):
        load_stack([item], {"dem": "data"}, OPTICAL_GRID)


def test_items_off_the_grid_give_nan_not_an_error(tmp_path):
    far = Affine(30, 0, 300000, 0, -30, 5200000)  # ~200 km away, same zone as the sources above
    path = write_tif(tmp_path / "far.tif", np.ones((20, 20), np.float32), 32633, far)
    item = roundtrip(make_item("far", {"data": dict(href=path, **proj_fields(far, (20, 20)))}, 32633))
    out = load_stack([item], {"dem": "data"}, OPTICAL_GRID)
    assert out.shape == (1, *OPTICAL_GRID.shape) and np.isnan(out.values).all()

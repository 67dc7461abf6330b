"""Loading onto the optical grid: geolocation against the grid itself and against rioxarray."""

from __future__ import annotations

import numpy as np
import pytest
from rasterio.enums import Resampling

from catalogs.scenes import AssetKeys
from kernel.errors import CatalogError
from pipeline.load import load_stack, optical_grid
from tests.load_cases import (
    OPTICAL_GRID,
    make_item,
    optical_pixel_ramps,
    proj_fields,
    rioxarray_reference,
    roundtrip,
    source_transform,
    write_tif,
)

ROWS, COLS = np.mgrid[0 : OPTICAL_GRID.height, 0 : OPTICAL_GRID.width]


def ramp_item(tmp_path, epsg: int, res: float, name: str):
    """An item whose `col`/`row` assets hold each pixel's position on the optical grid."""
    transform, shape = source_transform(epsg, res)
    ramps = optical_pixel_ramps(epsg, transform, shape)
    assets = {
        key: dict(
            href=write_tif(tmp_path / f"{name}_{key}.tif", ramps[b], epsg, transform, nodata=np.nan),
            **proj_fields(transform, shape),
        )
        for b, key in enumerate(("col", "row"))
    }
    return roundtrip(make_item(name, assets, epsg))


@pytest.mark.parametrize(("epsg", "res"), [(32633, 10.0), (32633, 30.0), (32632, 30.0)])
def test_other_zone_and_resolution_land_on_the_optical_grid(tmp_path, epsg, res):
    item = ramp_item(tmp_path, epsg, res, f"src{epsg}_{int(res)}")
    out = load_stack([item], {"col": "col", "row": "row"}, OPTICAL_GRID, chunks=40)
    assert out.dims == ("band", "y", "x") and out.dtype == np.float32 and out.chunks is not None
    assert out.shape == (2, *OPTICAL_GRID.shape)
    values = out.values
    # each pixel reads its own position: geolocation error in optical pixels
    assert np.abs(values[0] - COLS).max() < 0.1
    assert np.abs(values[1] - ROWS).max() < 0.1
    # and the loaded pixels are exactly what rioxarray's reproject_match gives
    reference = rioxarray_reference(item.assets["col"].get_absolute_href().removeprefix("file://"))[0]
    np.testing.assert_allclose(values[0], reference, atol=1e-4)


def test_texture_matches_rioxarray_across_chunk_borders(tmp_path):
    """A rough image (not a ramp) catches any per-chunk offset that a smooth one would hide."""
    epsg = 32633
    transform, shape = source_transform(epsg, 10.0, shift=-6.1)
    texture = np.random.default_rng(0).normal(size=shape).astype(np.float32)
    path = write_tif(tmp_path / "texture.tif", texture, epsg, transform, nodata=np.nan)
    item = roundtrip(make_item("texture", {"img": dict(href=path, **proj_fields(transform, shape))}, epsg))
    for resampling, rio in (("bilinear", Resampling.bilinear), ("nearest", Resampling.nearest)):
        out = load_stack([item], {"img": "img"}, OPTICAL_GRID, resampling=resampling, chunks=37).values[0]
        np.testing.assert_allclose(out, rioxarray_reference(path, rio)[0], atol=1e-5)


def test_pixel_centre_coords_and_transform_are_the_grid(tmp_path):
    out = load_stack([ramp_item(tmp_path, 32633, 30.0, "dem")], {"col": "col"}, OPTICAL_GRID)
    np.testing.assert_array_equal(out.x.values, OPTICAL_GRID.x_coords())
    np.testing.assert_array_equal(out.y.values, OPTICAL_GRID.y_coords())
    assert out.rio.transform() == OPTICAL_GRID.affine
    assert out.rio.crs.to_epsg() == 32632
    assert list(out.band.values) == ["col"]


def test_optical_item_on_its_own_grid_is_read_unchanged(tmp_path):
    """The optical reference must not be resampled at all: its own grid gives its own pixels."""
    data = np.random.default_rng(1).integers(1, 10000, OPTICAL_GRID.shape).astype(np.uint16)
    path = write_tif(tmp_path / "red.tif", data, 32632, OPTICAL_GRID.affine, nodata=0)
    fields = proj_fields(OPTICAL_GRID.affine, OPTICAL_GRID.shape, nodata=0, scale=1e-4, data_type="uint16")
    item = roundtrip(make_item("s2", {"red": dict(href=path, **fields)}, 32632))
    assert "proj:epsg" not in item.properties  # pystac migrated it: the case stackstac cannot read alone
    grid = optical_grid(item, AssetKeys(optical={"red": "red"}))
    assert grid == OPTICAL_GRID
    out = load_stack([item], {"red": "red"}, grid, chunks=64).values[0]
    np.testing.assert_allclose(out, data.astype(np.float32) * np.float32(1e-4), rtol=1e-6)
    # a region of it (the flow crops to the AOI) is the same pixels, not a resampled copy
    region = load_stack([item], {"red": "red"}, grid.window(10, 7, 50, 60), chunks=32).values[0]
    np.testing.assert_array_equal(region, out[10:60, 7:67])


def test_optical_grid_reads_asset_or_item_level_proj_and_refuses_without(tmp_path):
    path = write_tif(tmp_path / "b.tif", np.ones(OPTICAL_GRID.shape, np.uint16), 32632, OPTICAL_GRID.affine)
    keys = AssetKeys(optical={"blue": "B02"})
    item = make_item(
        "item-level", {"B02": dict(href=path)}, 32632, properties=proj_fields(OPTICAL_GRID.affine, OPTICAL_GRID.shape)
    )
    assert optical_grid(roundtrip(item), keys) == OPTICAL_GRID
    bare = make_item("bare", {"B02": dict(href=path)}, 32632)
    with pytest.raises(CatalogError, match="lacks proj:transform, proj:shape"):
        optical_grid(bare, keys)
    with pytest.raises(CatalogError, match="no asset 'B02'"):
        optical_grid(make_item("other", {"B03": dict(href=path)}, 32632), keys)

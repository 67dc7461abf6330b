"""One look at each file (`read_header`): one nodata rule for a file read alone (`gdal_href`) and the
same file as a mosaic tile (`source_nodata`), and the tile's grid from the same header."""

from __future__ import annotations

import math

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS

from pipeline.load_assets import AssetHeader, effective_nodata, gdal_href, read_header
from pipeline.load_mosaic import SourceGrid, source_grid, source_nodata

HREF = "/data/tile.tif"


@pytest.mark.parametrize(
    ("file_nodata", "dtype", "declared", "expected"),
    [
        (None, "uint16", 0.0, 0.0),  # the catalog's value, the file lacks one
        (5.0, "int16", -9999.0, -9999.0),  # the catalog's value wins a disagreement
        (5.0, "uint16", -1.0, 5.0),  # uint16 cannot hold -1: the file's own
        (None, "uint16", math.nan, None),  # nor NaN
        (7.0, "float32", None, 7.0),  # nothing declared: the file's own
    ],
)
def test_gdal_href_and_source_nodata_read_a_file_with_the_same_nodata(file_nodata, dtype, declared, expected):
    header = AssetHeader(file_nodata, False, 1, dtype)
    assert effective_nodata(header, declared) == expected
    assert source_nodata(header, declared) == expected
    wrapped = gdal_href(HREF, header, declared)
    assert wrapped == (HREF if expected == file_nodata else f"vrt:///data/tile.tif?a_nodata={expected!r}")


def test_a_float_file_without_any_nodata_is_read_with_nan_as_a_tile_only():
    header = AssetHeader(None, False, 1, "float32")
    assert effective_nodata(header, None) is None and gdal_href(HREF, header, None) == HREF
    assert math.isnan(source_nodata(header, None))


def test_the_mosaic_grid_comes_from_the_header_read_once(tmp_path):
    path = tmp_path / "dem.tif"
    transform = Affine(1 / 3600, 0, 15.0, 0, -1 / 3600, 46.0)
    profile = dict(
        driver="GTiff",
        width=7,
        height=5,
        count=1,
        dtype="int16",
        crs=CRS.from_epsg(4326),
        transform=transform,
        nodata=-32768,
    )
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.zeros((1, 5, 7), "int16"))
    header = read_header(str(path))
    assert (header.nodata, header.count, header.dtype) == (-32768, 1, "int16")
    assert source_grid(header) == SourceGrid(CRS.from_epsg(4326).to_wkt(), 4326, transform, (5, 7), "int16")

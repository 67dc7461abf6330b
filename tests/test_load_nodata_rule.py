"""One look at each file (`read_header`): one nodata rule for a file read alone (`gdal_href`) and the
same file as a mosaic tile (`source_nodata`), the tile's grid from the same header, and the GDAL name of
each href (`vsi_path`)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import rasterio
from affine import Affine
from rasterio.crs import CRS

from pipeline.load_assets import AssetHeader, effective_nodata, gdal_href, read_header, vsi_path
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


@pytest.mark.parametrize(
    ("href", "gdal_name"),
    [
        ("https://host/a/b.tif?se=2026&sig=a%2Bb", "/vsicurl/https://host/a/b.tif?se=2026&sig=a%2Bb"),
        ("http://127.0.0.1:8080/b.tif", "/vsicurl/http://127.0.0.1:8080/b.tif"),
        ("s3://bucket/key/b.tif", "/vsis3/bucket/key/b.tif"),
        ("gs://bucket/b.tif", "/vsigs/bucket/b.tif"),
        ("az://container/b.tif", "/vsiaz/container/b.tif"),
        ("file:///data/b.tif", "/data/b.tif"),
        ("/data/b.tif", "/data/b.tif"),
        ("/vsicurl/https://host/b.tif", "/vsicurl/https://host/b.tif"),
    ],
)
def test_vsi_path_names_each_href_as_gdal_reads_it(href, gdal_name):
    assert vsi_path(href) == gdal_name


def test_a_file_url_is_read_through_vrt_with_the_catalog_nodata(tmp_path):
    path = tmp_path / "sar.tif"
    profile = dict(driver="GTiff", width=4, height=3, count=1, dtype="uint16", transform=Affine(10, 0, 0, 0, -10, 30))
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.arange(12, dtype="uint16").reshape(1, 3, 4))
    href = path.as_uri()
    wrapped = gdal_href(href, read_header(href), 0.0)
    assert wrapped == f"vrt://{path}?a_nodata=0.0"
    with rasterio.open(wrapped) as src:
        assert src.nodata == 0 and src.read(1, masked=True).mask.sum() == 1

"""One nodata rule for a file read alone (`gdal_href`) and the same file as a mosaic tile (`source_nodata`)."""

from __future__ import annotations

import math

import pytest

from pipeline.load_assets import AssetHeader, effective_nodata, gdal_href
from pipeline.load_mosaic import source_nodata

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

"""Physical units from item metadata: nodata, scale/offset, the Sentinel-2 baseline 04.00 offset,
SAR dB (from power, or from GRD amplitude DN), and GCP files placed by their GCPs."""

from __future__ import annotations

import numpy as np
import pytest
from affine import Affine

from catalogs.profiles import EARTH_SEARCH, NO_QUIRKS, PLANETARY_COMPUTER
from kernel.errors import CatalogError
from pipeline.load import load_stack
from pipeline.load_assets import AssetHeader, gdal_href
from tests.load_cases import OPTICAL_GRID, SAR_EXT, make_item, proj_fields, roundtrip, source_transform, write_tif

RNG = np.random.default_rng(7)
DN = RNG.integers(1, 12000, OPTICAL_GRID.shape).astype(np.uint16)
DN[:10, :20] = 0  # a nodata corner
S2_PROPS = {"platform": "sentinel-2b", "eo:cloud_cover": 3.0}
RED_BAND = {"eo:bands": [{"name": "B04", "common_name": "red"}]}


def own_grid_item(tmp_path, name, data, asset_fields, properties, nodata=None, key="data", extensions=()):
    """A single-asset item on the optical grid itself, so values come back unresampled."""
    path = write_tif(tmp_path / f"{name}.tif", data, 32632, OPTICAL_GRID.affine, nodata=nodata)
    fields = {**proj_fields(OPTICAL_GRID.affine, OPTICAL_GRID.shape), **asset_fields}
    return roundtrip(make_item(name, {key: dict(href=path, **fields)}, 32632, properties, extensions))


def load_one(item, key="data", **kwargs) -> np.ndarray:
    return load_stack([item], {"b": key}, OPTICAL_GRID, **kwargs).values[0]


REFLECTANCE = DN.astype(np.float64) * 1e-4


@pytest.mark.parametrize(
    ("case", "asset_fields", "properties", "expected"),
    [
        # Planetary Computer: no raster:bands; the baseline property decides the -1000 DN offset
        ("pc-baseline-05", RED_BAND, {"s2:processing_baseline": "05.00"}, REFLECTANCE - 0.1),
        ("pc-baseline-03", RED_BAND, {"s2:processing_baseline": "03.01"}, REFLECTANCE),
        # Earth Search collection 1: the offset is declared in raster:bands
        (
            "c1-declared",
            {**RED_BAND, "raster:bands": [{"nodata": 0, "scale": 1e-4, "offset": -0.1}]},
            {"s2:processing_baseline": "05.10"},
            REFLECTANCE - 0.1,
        ),
        # Earth Search v1 with harmonised DNs: its declared -0.1 is known to be wrong
        (
            "e84-applied",
            {**RED_BAND, "raster:bands": [{"nodata": 0, "scale": 1e-4, "offset": -0.1}]},
            {"s2:processing_baseline": "04.00", "earthsearch:boa_offset_applied": True},
            REFLECTANCE,
        ),
    ],
)
def test_sentinel2_baseline_offset_and_nodata(tmp_path, case, asset_fields, properties, expected):
    item = own_grid_item(tmp_path, case, DN, asset_fields, {**S2_PROPS, **properties}, nodata=0, key="B04")
    out = load_one(item, key="B04", quirks=EARTH_SEARCH.quirks if case.startswith("e84") else NO_QUIRKS)
    assert np.isnan(out[:10, :20]).all() and not np.isnan(out[10:, :]).any()
    np.testing.assert_allclose(out[10:], expected[10:], atol=1e-6)


def test_generic_scale_offset_and_declared_nodata(tmp_path):
    raw = RNG.integers(-100, 3000, OPTICAL_GRID.shape).astype(np.int16)
    raw[5, 5] = -32768
    band = {"raster:bands": [{"nodata": -32768, "scale": 0.5, "offset": 100.0, "unit": "m"}]}
    out = load_one(own_grid_item(tmp_path, "dem", raw, band, {}, nodata=-32768))
    assert np.isnan(out[5, 5]) and np.isnan(out).sum() == 1
    np.testing.assert_allclose(out[raw != -32768], raw[raw != -32768] * 0.5 + 100.0)


@pytest.mark.parametrize("header_nodata", [0, None], ids=["in-file", "catalog-only"])
def test_nodata_stays_out_of_bilinear_neighbours(tmp_path, header_nodata):
    """Resampled across a nodata hole, valid pixels are not dragged towards the nodata value,
    also when only the catalog (not the file) declares that nodata."""
    transform, shape = source_transform(32633, 10.0)
    dn = np.full(shape, 5000, np.uint16)
    dn[40:60, 40:60] = 0
    path = write_tif(tmp_path / "hole.tif", dn, 32633, transform, nodata=header_nodata)
    fields = {**proj_fields(transform, shape), "raster:bands": [{"nodata": 0, "scale": 1e-4}]}
    item = roundtrip(make_item("hole", {"data": dict(href=path, **fields)}, 32633))
    out = load_one(item)
    assert np.isnan(out).any()
    np.testing.assert_allclose(out[~np.isnan(out)], 0.5, atol=1e-6)


SAR_PROPS = {"sar:product_type": "RTC", "sar:instrument_mode": "IW", "sar:polarizations": ["VV"]}
POWER = RNG.gamma(1.0, 0.05, OPTICAL_GRID.shape).astype(np.float32)


def test_sar_db_asset_is_kept_and_nan_nodata_survives(tmp_path):
    db = (10 * np.log10(POWER)).astype(np.float32)
    db[0, :] = np.nan
    item = own_grid_item(
        tmp_path,
        "s1db",
        db,
        {"raster:bands": [{"nodata": "nan", "unit": "dB"}]},
        SAR_PROPS,
        nodata=np.nan,
        key="vv",
        extensions=(SAR_EXT,),
    )
    out = load_one(item, key="vv")
    np.testing.assert_array_equal(np.isnan(out), np.isnan(db))
    np.testing.assert_allclose(out[1:], db[1:], rtol=1e-6)


def test_sar_linear_power_is_converted_to_db(tmp_path):
    power = POWER.copy()
    power[3, 3] = 0.0  # no dB for zero power: NaN, never -inf
    item = own_grid_item(tmp_path, "s1lin", power, {"raster:bands": [{"unit": "linear"}]}, SAR_PROPS, key="vv")
    out = load_one(item, key="vv")
    assert np.isnan(out[3, 3]) and np.isfinite(np.delete(out.ravel(), 3 * OPTICAL_GRID.width + 3)).all()
    np.testing.assert_allclose(out[power > 0], 10 * np.log10(power[power > 0]), atol=1e-4)
    np.testing.assert_allclose(load_one(item, key="vv", sar_db=False), power, rtol=1e-6)


def test_planetary_computer_rtc_is_linear_and_its_nodata_masked(tmp_path):
    power = POWER.copy()
    power[:, :4] = -32768
    item = own_grid_item(
        tmp_path, "pc-rtc", power, {"raster:bands": [{"nodata": -32768}]}, SAR_PROPS, nodata=-32768, key="vv"
    )
    item.collection_id = "sentinel-1-rtc"
    out = load_one(item, key="vv", quirks=PLANETARY_COMPUTER.quirks)
    assert np.isnan(out[:, :4]).all()
    np.testing.assert_allclose(out[:, 4:], 10 * np.log10(POWER[:, 4:]), atol=1e-4)
    # the quirk is the Planetary Computer's alone
    with pytest.raises(CatalogError, match="dB, linear power or amplitude"):
        load_one(item, key="vv", quirks=EARTH_SEARCH.quirks)


def test_earth_search_harmonised_flag_is_its_quirk_alone(tmp_path):
    """Without Earth Search's quirk the flag is just a property: the declared offset applies."""
    fields = {**RED_BAND, "raster:bands": [{"nodata": 0, "scale": 1e-4, "offset": -0.1}]}
    props = {**S2_PROPS, "s2:processing_baseline": "04.00", "earthsearch:boa_offset_applied": True}
    item = own_grid_item(tmp_path, "flag", DN, fields, props, nodata=0, key="B04")
    np.testing.assert_allclose(load_one(item, key="B04")[10:], REFLECTANCE[10:] - 0.1, atol=1e-6)


def test_sar_without_units_is_refused(tmp_path):
    item = own_grid_item(tmp_path, "s1-unknown", POWER, {}, SAR_PROPS, key="vv")
    with pytest.raises(CatalogError, match="dB, linear power or amplitude"):
        load_one(item, key="vv")


def test_earth_search_grd_amplitude_dn_becomes_db_like(tmp_path):
    """Earth Search GRD assets are uint16 amplitude DN with no unit: 10*log10(DN^2) in dB, DN 0 no data;
    without the quirk the units are unknown and refused."""
    amplitude = (np.sqrt(POWER) * 1000).astype(np.uint16)
    amplitude[:5, :5] = 0
    item = own_grid_item(tmp_path, "grd-dn", amplitude, {}, {**SAR_PROPS, "sar:product_type": "GRD"}, key="vv")
    item.collection_id = "sentinel-1-grd"
    out = load_one(item, key="vv", quirks=EARTH_SEARCH.quirks)
    assert np.isnan(out[:5, :5]).all()
    valid = amplitude > 0
    np.testing.assert_allclose(out[valid], 10 * np.log10(amplitude[valid].astype(np.float64) ** 2), atol=1e-4)
    np.testing.assert_array_equal(
        load_one(item, key="vv", quirks=EARTH_SEARCH.quirks, sar_db=False)[valid], amplitude[valid]
    )
    with pytest.raises(CatalogError, match="dB, linear power or amplitude"):
        load_one(item, key="vv", quirks=PLANETARY_COMPUTER.quirks)


def test_gcp_geotiff_is_geocoded_through_its_gcps_whatever_the_item_says(tmp_path):
    """A file with GCPs and no geotransform is placed by its GCPs, not by the item's (wrong) proj:transform:
    GCPs that put each pixel on the optical grid, in the grid's own CRS, give back the pixels unchanged."""
    from rasterio.control import GroundControlPoint

    gcps = [
        GroundControlPoint(row=r, col=c, x=x, y=y)
        for r in (0, 48, 96)
        for c in (0, 56, 112)
        for x, y in [OPTICAL_GRID.affine * (c, r)]
    ]
    path = write_tif(tmp_path / "gcp.tif", POWER, None, None, gcps=gcps, gcp_epsg=32632)
    wrong = OPTICAL_GRID.affine * Affine.translation(30, 20)
    fields = {**proj_fields(wrong, OPTICAL_GRID.shape), "raster:bands": [{"unit": "linear"}]}
    item = roundtrip(make_item("S1B_GCP", {"vv": dict(href=path, **fields)}, 32632, SAR_PROPS, (SAR_EXT,)))
    np.testing.assert_allclose(load_one(item, key="vv"), 10 * np.log10(POWER), atol=1e-3)


def test_catalog_nodata_wraps_the_file_only_when_needed_and_representable():
    href = "file:///data/b.tif"
    plain = AssetHeader(nodata=None, radar_geometry=False, count=1, dtype="uint16")
    assert gdal_href(href, plain, None) == href
    assert gdal_href(href, plain, 0.0) == "vrt:///data/b.tif?a_nodata=0.0"
    assert gdal_href(href, AssetHeader(0.0, False, 1, "uint16"), 0.0) == href  # already in the file
    assert gdal_href(href, plain, float("nan")) == href  # NaN cannot be a uint16 nodata
    floats = AssetHeader(None, False, 1, "float32")
    assert gdal_href(href, floats, float("nan")) == "vrt:///data/b.tif?a_nodata=nan"
    assert gdal_href(href, AssetHeader(float("nan"), False, 1, "float32"), float("nan")) == href
    assert gdal_href("https://x.blob/b.tif?sig=abc", floats, -32768.0) == "https://x.blob/b.tif?sig=abc"

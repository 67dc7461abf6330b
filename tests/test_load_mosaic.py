"""Mosaics of several items (DEM tiles in geographic coordinates), the truth asset, and bad input."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from dataclasses import replace
from pathlib import Path

import numpy as np
import pystac
import pytest
from affine import Affine
from pyproj import CRS
from scipy.ndimage import binary_dilation, binary_erosion

from kernel.errors import CatalogError, InputError
from pipeline.grid import Grid
from pipeline.load import load_stack, load_truth
from pipeline.load_meta import Radiometry
from pipeline.load_mosaic import SourceGrid, Tile, lattice_runs, mosaic_vrt
from tests.load_cases import (
    OPTICAL_GRID,
    make_item,
    optical_pixel_ramps,
    proj_fields,
    roundtrip,
    source_transform,
    write_tif,
)
from tests.test_load_http_retry import FlakyRangeServer

ROWS, COLS = np.mgrid[0 : OPTICAL_GRID.height, 0 : OPTICAL_GRID.width]
ARCSEC = 1 / 3600


def dem_tile(tmp_path, name, data, transform, band=None, nodata=None):
    path = write_tif(tmp_path / f"{name}.tif", data, 4326, transform, nodata=nodata)
    fields = {**proj_fields(transform, data.shape), "raster:bands": [band or {"unit": "m"}]}
    return roundtrip(make_item(name, {"data": dict(href=path, **fields)}, 4326))


def dem_quadrants(tmp_path, data, transform, prefix="dem", **tif):
    """`data` cut into four tiles (NW, NE, SW, SE) that abut as Copernicus DEM tiles do."""
    rows, cols = data.shape[0] // 2, data.shape[1] // 2
    north, south, west, east = slice(None, rows), slice(rows, None), slice(None, cols), slice(cols, None)
    tiles = []
    for name, r, c in (("nw", north, west), ("ne", north, east), ("sw", south, west), ("se", south, east)):
        origin = transform * Affine.translation(c.start or 0, r.start or 0)
        tiles.append(dem_tile(tmp_path, f"{prefix}-{name}", data[r, c], origin, **tif))
    return tiles


def seam_band(tile, width: int = 3) -> np.ndarray:
    """Optical pixels within `width` px of the edge of `tile`'s footprint on the grid."""
    inside = ~np.isnan(load_stack([tile], {"elevation": "data"}, OPTICAL_GRID).values[0])
    return binary_dilation(inside, iterations=width) & ~binary_erosion(inside, iterations=width)


@pytest.mark.parametrize("resampling", ["bilinear", "cubic"])
def test_geographic_dem_tiles_mosaic_seamlessly(tmp_path, resampling):
    """Four 1-arcsecond tiles (as Copernicus DEM ships them, EPSG:4326) meeting inside the grid load
    exactly like the one file they were cut from: the interpolation straddles the seams."""
    transform, shape = source_transform(4326, ARCSEC, margin=0.002, shift=0.3 * ARCSEC)
    ramps = optical_pixel_ramps(4326, transform, shape)
    tiles = dem_quadrants(tmp_path, ramps[0], transform)
    out = load_stack(tiles, {"elevation": "data"}, OPTICAL_GRID, resampling=resampling, chunks=50).values[0]
    whole = load_stack(
        [dem_tile(tmp_path, "whole", ramps[0], transform)], {"elevation": "data"}, OPTICAL_GRID, resampling=resampling
    ).values[0]
    near_seam = seam_band(tiles[0])
    assert near_seam.sum() > 200 and (~near_seam).any()
    error = np.abs(out - COLS)
    # each tile resampled on its own was off by up to 1.09 px here (half a DEM pixel)
    assert error[near_seam].max() < 0.01 and error[~near_seam].max() < 0.01
    np.testing.assert_allclose(out, whole, rtol=0, atol=1e-4)


def smooth_hills(transform: Affine, shape: tuple[int, int]) -> np.ndarray:
    """A known smooth surface (metres) sampled at the pixel centres of a lon/lat grid: hills about 500 m across."""
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]] + 0.5
    lon, lat = transform @ (cols, rows)
    return (400 + 60 * np.sin(lon / 0.0011) * np.cos(lat / 0.0009) + 8000 * (lon - 12)).astype(np.float32)


@pytest.mark.parametrize(("one_lattice", "bound"), [(True, 0.1), (False, None)], ids=["mosaic", "tile-by-tile"])
def test_two_abutting_dem_tiles_have_no_seam(tmp_path, one_lattice, bound):
    """Seam error: where two abutting 1-arcsecond tiles of a smooth surface meet, the elevation difference
    from loading the single uncut file, divided by the local slope (metres per optical pixel), i.e. how far
    the surface moved, in optical pixels, near the seam. Mosaicked before resampling: <= 0.1 px. Resampled
    one tile at a time (the east tile given another scale, so it cannot join the VRT): 1.09 px at the seam.
    Measured: 0.0000 px mosaicked (it equals the uncut file's load), everywhere."""
    transform, shape = source_transform(4326, ARCSEC, margin=0.002, shift=0.3 * ARCSEC)
    surface = smooth_hills(transform, shape)
    half = shape[1] // 2
    west = dem_tile(tmp_path, "west", surface[:, :half], transform)
    east_data, east_band = (surface[:, half:], None) if one_lattice else (surface[:, half:] * 2, {"scale": 0.5})
    east = dem_tile(tmp_path, "east", east_data, transform * Affine.translation(half, 0), band=east_band)
    out = load_stack([west, east], {"elevation": "data"}, OPTICAL_GRID, chunks=50).values[0]
    whole = load_stack([dem_tile(tmp_path, "whole", surface, transform)], {"elevation": "data"}, OPTICAL_GRID)
    gy, gx = np.gradient(whole.values[0])  # metres per optical pixel
    moved = np.abs(out - whole.values[0]) / np.maximum(np.hypot(gx, gy), 1e-6)
    near_seam = seam_band(west)
    assert near_seam.sum() > 100 and np.isfinite(out).all()
    if bound is not None:
        assert moved[near_seam].max() <= bound and moved[~near_seam].max() <= bound
    else:
        assert moved[near_seam].max() > 1.0 and moved[~near_seam].max() < 0.01


@pytest.mark.parametrize("header_nodata", [-32768, None], ids=["in-file", "catalog-only"])
def test_nodata_hole_across_a_seam_stays_out_of_valid_pixels(tmp_path, header_nodata):
    """A nodata hole straddling the seams of int16 tiles: NaN inside, and every valid pixel exact
    (nodata never blended in), whether the file or only the catalog declares the nodata."""
    transform, shape = source_transform(4326, ARCSEC, margin=0.002, shift=0.3 * ARCSEC)
    dn = np.full(shape, 1234, np.int16)
    r, c = shape[0] // 2, shape[1] // 2
    dn[r - 4 : r + 4, c - 4 : c + 4] = -32768
    band = {"nodata": -32768, "scale": 0.5, "offset": 10.0}
    tiles = dem_quadrants(tmp_path, dn, transform, band=band, nodata=header_nodata)
    out = load_stack(tiles, {"elevation": "data"}, OPTICAL_GRID, chunks=50).values[0]
    hole = np.isnan(out)
    col, row = optical_pixel_ramps(4326, transform, shape)[:, r, c]  # the corner where the four tiles meet
    hole_rows, hole_cols = np.nonzero(hole)
    assert 100 < hole.sum() < 1000 and set(zip(hole_rows < row, hole_cols < col)) == {
        (True, True),
        (True, False),
        (False, True),
        (False, False),
    }
    np.testing.assert_array_equal(out[~hole], 1234 * 0.5 + 10.0)


def overlapping_pair(tmp_path, lattice_shift: float) -> tuple:
    """Two overlapping 30 m items of different values, `a` with a nodata hole; `b`'s lattice is
    shifted by `lattice_shift` pixels (0: one lattice, mosaicked before resampling)."""
    transform, shape = source_transform(32633, 30.0)
    a, b = np.full(shape, 1.0, np.float32), np.full(shape, 2.0, np.float32)
    a[: shape[0] // 2] = np.nan  # `a` covers only the southern half
    r, c = 3 * shape[0] // 4, shape[1] // 2
    a[r - 4 : r + 4, c - 4 : c + 4] = -1.0  # and a hole there that only its catalog declares
    b_transform = transform * Affine.translation(lattice_shift, 0)
    fields_a = {**proj_fields(transform, shape), "raster:bands": [{"nodata": -1.0}]}
    item_a = roundtrip(
        make_item("a", {"data": dict(href=write_tif(tmp_path / "a.tif", a, 32633, transform), **fields_a)}, 32633)
    )
    item_b = roundtrip(
        make_item(
            "b",
            {
                "data": dict(
                    href=write_tif(tmp_path / "b.tif", b, 32633, b_transform, nodata=np.nan),
                    **proj_fields(b_transform, shape),
                )
            },
            32633,
        )
    )
    return item_a, item_b


@pytest.mark.parametrize("lattice_shift", [0.0, 0.5], ids=["one-lattice", "two-lattices"])
def test_first_valid_item_wins_where_items_overlap(tmp_path, lattice_shift):
    item_a, item_b = overlapping_pair(tmp_path, lattice_shift)
    ab = load_stack([item_a, item_b], {"v": "data"}, OPTICAL_GRID).values[0]
    assert not np.isnan(ab).any() and set(np.unique(ab)) >= {1.0, 2.0}
    assert ab[-1, 0] == 1.0 and ab[0, 0] == 2.0  # a on top where valid, b fills a's gap
    hole = np.isnan(load_stack([item_a], {"v": "data"}, OPTICAL_GRID).values[0]) & (ROWS > OPTICAL_GRID.height // 2)
    deep = binary_erosion(hole, iterations=3)  # a source pixel away from a's valid pixels
    assert deep.sum() > 100
    np.testing.assert_array_equal(ab[deep], 2.0)  # b fills a's hole
    assert ab.min() == 1.0 and ab.max() == 2.0  # at the hole's rim at most a blend of both, never nodata
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


def test_tiles_off_the_grid_leave_the_mosaic_unchanged(tmp_path):
    """A tile on the same lattice far off the grid joins the VRT but is never opened; tiles that are
    all off the grid give NaN."""
    transform, shape = source_transform(4326, ARCSEC, margin=0.002, shift=0.3 * ARCSEC)
    ramps = optical_pixel_ramps(4326, transform, shape)
    tiles = dem_quadrants(tmp_path, ramps[0], transform)
    far = [dem_tile(tmp_path, f"far{i}", ramps[0], transform * Affine.translation(400 + 50 * i, 0)) for i in range(2)]
    assert np.isnan(load_stack(far, {"e": "data"}, OPTICAL_GRID).values).all()
    near = load_stack(tiles, {"e": "data"}, OPTICAL_GRID).values[0]
    lazy = load_stack([far[0], *tiles], {"e": "data"}, OPTICAL_GRID)
    Path(far[0].assets["data"].href.removeprefix("file://")).unlink()  # no read may touch it now
    np.testing.assert_array_equal(lazy.values[0], near)


WGS84 = SourceGrid(
    CRS.from_epsg(4326).to_wkt(), 4326, Affine(ARCSEC, 0, 10.99986, 0, -ARCSEC, 46.00014), (3600, 3600), "int16"
)


def shifted(grid: SourceGrid, cols: float, rows: float = 0.0) -> SourceGrid:
    return replace(grid, transform=grid.transform * Affine.translation(cols, rows))


def test_only_consecutive_items_on_one_lattice_with_one_scale_merge():
    east, half_off = shifted(WGS84, 3600), shifted(WGS84, 0.5)
    coarser = replace(WGS84, transform=WGS84.transform * Affine.scale(1.5, 1))  # Copernicus DEM above 50 N
    utm = replace(WGS84, crs_wkt=CRS.from_epsg(32632).to_wkt(), epsg=32632)
    grids = [WGS84, east, shifted(WGS84, -3600, 3600), half_off, WGS84, coarser, utm, utm]
    assert lattice_runs(grids, [Radiometry()] * len(grids)) == [[0, 1, 2], [3], [4], [5], [6, 7]]
    # nodata may differ (each tile keeps its own in the VRT); scale, offset and dB must not
    assert lattice_runs([WGS84, east], [Radiometry(nodata=0), Radiometry(nodata=-1)]) == [[0, 1]]
    assert lattice_runs([WGS84, east], [Radiometry(), Radiometry(scale=0.5)]) == [[0], [1]]


def test_vrt_paints_the_preferred_tile_last_and_keeps_signed_urls_intact():
    signed = "/vsicurl/https://x.blob.core.windows.net/dem/a.tif?se=2026&sig=a%2Bb"
    floats = replace(shifted(WGS84, 3599), dtype="float32")  # overlaps the first tile by one column
    mosaic = mosaic_vrt([Tile(signed, WGS84, -32768.0), Tile("/data/b.tif", floats, -9999.0)])
    assert mosaic.shape == (3600, 7199) and mosaic.transform == WGS84.transform
    sources = ET.fromstring(mosaic.xml).findall(".//VRTRasterBand/ComplexSource")
    assert [s.findtext("NODATA") for s in sources] == ["nan", "-32768.0"]
    assert sources[-1].findtext("SourceFilename") == signed  # painted last: wins where both are valid
    inner = ET.fromstring(sources[0].findtext("SourceFilename"))  # -9999 becomes NaN in a VRT of its own,
    assert inner.findtext(".//SourceFilename") == "/data/b.tif"  # so NaN pixels stay transparent too
    assert inner.findtext(".//NODATA") == "-9999.0"


def test_signed_http_tiles_mosaic_with_catalog_nodata_and_retries(tmp_path):
    """Tiles behind signed URLs on a server that answers every other request 503: the VRT keeps each
    query string, the catalog-only nodata (which a signed URL cannot carry in vrt://) is honoured,
    and the result is the local one."""
    transform, shape = source_transform(4326, ARCSEC, margin=0.002, shift=0.3 * ARCSEC)
    dn = np.full(shape, 1234, np.int16)
    r, c = shape[0] // 2, shape[1] // 2
    dn[r - 4 : r + 4, c - 4 : c + 4] = -32768
    tiles = dem_quadrants(tmp_path, dn, transform, band={"nodata": -32768})
    local = load_stack(tiles, {"e": "data"}, OPTICAL_GRID).values[0]
    server = FlakyRangeServer(tmp_path)
    try:
        remote = []
        for item in tiles:
            name = Path(item.assets["data"].href).name + "?se=2026-11-27&sig=a%2Bb"
            (tmp_path / name).write_bytes((tmp_path / Path(item.assets["data"].href).name).read_bytes())
            remote.append(pystac.Item.from_dict(item.to_dict()))
            remote[-1].assets["data"].href = f"{server.url}/{name}"
        out = load_stack(remote, {"e": "data"}, OPTICAL_GRID).values[0]
    finally:
        server.shutdown()
    np.testing.assert_array_equal(out, local)
    assert np.isnan(out).sum() > 100 and np.nanmax(out) == np.nanmin(out) == 1234
    assert server.failed >= 2

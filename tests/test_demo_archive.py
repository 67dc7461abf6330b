"""The demo archive: real COGs on grids that do not coincide, a STAC catalog as real ones are, and an
injected misregistration whose stored truth (Contract 1) undoes it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pystac
import pytest
import rasterio
from rasterio.warp import Resampling, reproject
from scipy import ndimage
from skimage.registration import phase_cross_correlation

from datagen import demo_archive as A
from kernel.errors import InputError
from kernel.warp import sample, warp_image

SIZE = 256


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> A.ArchiveInfo:
    return A.generate_archive(tmp_path_factory.mktemp("demo") / "archive", size=SIZE, dates=2, seed=5)


@pytest.fixture(scope="module")
def rendered() -> A.RenderedArchive:
    """The same archive in memory, without speckle: the aligned images the truth must give back."""
    return A.render_archive(SIZE, 2, 5, speckle=False)


@pytest.fixture(scope="module")
def items(archive) -> dict[str, pystac.Item]:
    catalog = pystac.Catalog.from_file(str(archive.catalog))
    return {item.id: item for item in catalog.get_items(recursive=True)}


def _on_optical_grid(path: str, band: int, linear_db: bool = False) -> np.ndarray:
    """A product band resampled onto the optical grid by GDAL: checks the georeferencing we wrote."""
    grid = A.optical_grid(SIZE)
    with rasterio.open(path) as src:
        data = src.read(band).astype(np.float64)
        if linear_db:
            data = 10 ** (data / 10)
        out = np.full(grid.shape, np.nan)
        reproject(
            data,
            out,
            src_transform=src.transform,
            src_crs=src.crs,
            dst_transform=grid.affine,
            dst_crs=src.crs,
            resampling=Resampling.bilinear,
            src_nodata=np.nan,
            dst_nodata=np.nan,
        )
    return out.astype(np.float32)


def _href_path(asset: pystac.Asset) -> str:
    assert asset.href.startswith("file:///")
    return asset.href[len("file://") :]


def test_archive_info_describes_the_catalog(archive, items):
    assert archive.catalog == archive.root / "catalog.json" and archive.catalog.exists()
    assert set(archive.optical_item_ids) | set(archive.sar_item_ids) | set(archive.dem_item_ids) == set(items)
    assert len(archive.optical_item_ids) == len(archive.sar_item_ids) == 2 and len(archive.dem_item_ids) == 1
    w, s, e, n = archive.bbox
    ow, os_, oe, on = archive.optical_bbox
    assert ow < w < e < oe and os_ < s < n < on  # the AOI lies inside the optical footprint
    for item_id in archive.optical_item_ids + archive.sar_item_ids:
        assert archive.start <= items[item_id].datetime.date() <= archive.end
    sar_gaps = [
        abs((items[s].datetime - items[o].datetime).total_seconds()) / 86400
        for o, s in zip(archive.optical_item_ids, archive.sar_item_ids)
    ]
    assert all(1 <= gap <= 2.5 for gap in sar_gaps)


def test_catalog_has_collections_extensions_and_file_hrefs(archive, items):
    catalog = pystac.Catalog.from_file(str(archive.catalog))
    collections = {c.id: c for c in catalog.get_children()}
    assert set(collections) == {"dsmar-optical", "dsmar-sar", "dsmar-dem"}
    for collection in collections.values():
        members = list(collection.get_items())
        ((west, south, east, north),) = collection.extent.spatial.bboxes
        start, end = collection.extent.temporal.intervals[0]
        for item in members:
            assert west <= item.bbox[0] and south <= item.bbox[1] and item.bbox[2] <= east and item.bbox[3] <= north
            assert start <= (item.datetime or item.common_metadata.start_datetime) <= end
    for item in items.values():
        raw = json.loads(Path(item.get_self_href()).read_text())
        assert any("projection" in uri for uri in raw["stac_extensions"])
        assert any("raster" in uri for uri in raw["stac_extensions"])
        for asset in raw["assets"].values():
            assert asset["href"].startswith("file:///") and Path(asset["href"][7:]).exists()
            assert asset["proj:code"] == "EPSG:32633" and asset["proj:epsg"] == 32633
            assert len(asset["proj:shape"]) == 2 and len(asset["proj:transform"]) == 6 and len(asset["proj:bbox"]) == 4
            assert asset["raster:bands"]
    optical = json.loads(Path(items[archive.optical_item_ids[0]].get_self_href()).read_text())
    assert "eo:cloud_cover" in optical["properties"]
    assert [optical["assets"][k]["eo:bands"][0]["common_name"] for k in ("blue", "green", "red", "nir")] == [
        "blue",
        "green",
        "red",
        "nir",
    ]
    band = optical["assets"]["red"]["raster:bands"][0]
    assert (band["data_type"], band["scale"], band["nodata"]) == ("uint16", 1e-4, 0)
    sar = items[archive.sar_item_ids[0]].properties
    assert sar["sar:instrument_mode"] == "IW" and sar["sar:frequency_band"] == "C"
    assert sar["sar:polarizations"] == ["VV", "VH"] and sar["sar:product_type"] == "GRD"
    assert {items[i].properties["sat:orbit_state"] for i in archive.sar_item_ids} == {"ascending", "descending"}
    dem = items[archive.dem_item_ids[0]]
    assert dem.datetime is None and dem.common_metadata.start_datetime is not None


def test_grids_do_not_coincide(archive, items):
    optical = rasterio.open(_href_path(items[archive.optical_item_ids[0]].assets["red"]))
    left, bottom, right, top = optical.bounds
    origins = set()
    products = [*((i, "vv", 10.0) for i in archive.sar_item_ids), (archive.dem_item_ids[0], "data", 30.0)]
    for item_id, key, res in products:
        with rasterio.open(_href_path(items[item_id].assets[key])) as src:
            assert src.res == (res, res) and src.crs == optical.crs
            b = src.bounds
            assert b.left < left and b.bottom < bottom and b.right > right and b.top > top  # covers the optical
            offset = np.array([src.transform.c - optical.transform.c, src.transform.f - optical.transform.f])
            frac = (offset / 10.0) % 1
            assert np.all((frac > 0.05) & (frac < 0.95))  # sub-pixel offsets against the optical grid
            assert src.tags(ns="IMAGE_STRUCTURE")["LAYOUT"] == "COG"
            assert src.profile["tiled"] and src.profile["compress"] == "deflate"
            origins.add((src.transform.c, src.transform.f))
    assert len(origins) == 3
    optical.close()


def test_truth_asset_is_on_the_optical_grid(archive, items):
    optical = A.optical_grid(SIZE)
    for item_id in archive.sar_item_ids + archive.dem_item_ids:
        with rasterio.open(_href_path(items[item_id].assets[A.TRUTH_KEY])) as src:
            assert src.count == 2 and src.dtypes == ("float32", "float32") and src.descriptions == ("dy", "dx")
            assert src.crs.to_epsg() == 32633 and tuple(src.transform)[:6] == optical.transform
            assert src.shape == optical.shape
            truth = src.read()
        magnitude = np.hypot(*truth)
        assert np.isfinite(truth).all() and 0.5 < np.median(magnitude) < 8


def test_files_match_the_in_memory_render(archive, items, rendered):
    """Generation is deterministic: re-rendering gives the written optical and DEM products."""
    by_id = {p.item_id: p for p in rendered.products}
    optical = by_id[archive.optical_item_ids[1]]
    with rasterio.open(_href_path(items[optical.item_id].assets["nir"])) as src:
        np.testing.assert_allclose(src.read(1) * 1e-4, optical.bands["nir"], atol=6e-5)
    dem = by_id[archive.dem_item_ids[0]]
    with rasterio.open(_href_path(items[dem.item_id].assets["data"])) as src:
        np.testing.assert_array_equal(src.read(1), dem.bands["data"])
    with rasterio.open(_href_path(items[dem.item_id].assets[A.TRUTH_KEY])) as src:
        np.testing.assert_array_equal(src.read(), dem.truth)


def test_truth_undoes_the_dem_misregistration(archive, items, rendered):
    dem = {p.item_id: p for p in rendered.products}[archive.dem_item_ids[0]]
    moving = _on_optical_grid(_href_path(items[dem.item_id].assets["data"]), 1)
    with rasterio.open(_href_path(items[dem.item_id].assets[A.TRUTH_KEY])) as src:
        truth = src.read()
    inner = (slice(12, -12), slice(12, -12))
    corrected = np.abs(warp_image(moving, truth) - dem.aligned[0])[inner]
    uncorrected = np.abs(moving - dem.aligned[0])[inner]
    assert np.median(corrected) < 0.25 * np.median(uncorrected)
    assert np.median(corrected) < 0.5  # metres, after 30 m -> 10 m resampling


def test_truth_undoes_the_sar_misregistration(archive, items, rendered):
    by_id = {p.item_id: p for p in rendered.products}
    for item_id in archive.sar_item_ids:
        aligned = by_id[item_id].aligned[0]  # VV dB without speckle, unmoved, on the optical grid
        moving = _on_optical_grid(_href_path(items[item_id].assets["vv"]), 1, linear_db=True)
        with rasterio.open(_href_path(items[item_id].assets[A.TRUTH_KEY])) as src:
            truth = src.read()
        inner = (slice(16, -16), slice(16, -16))

        def residual_shift(image: np.ndarray, aligned: np.ndarray = aligned, inner: tuple = inner) -> np.ndarray:
            smooth = ndimage.gaussian_filter(10 * np.log10(image[inner]), 1.0)
            return phase_cross_correlation(
                ndimage.gaussian_filter(aligned[inner], 1.0), smooth, upsample_factor=20, normalization=None
            )[0]

        before = residual_shift(moving)
        after = residual_shift(warp_image(moving, truth))
        mean_truth = np.hypot(*truth[(slice(None), *inner)].reshape(2, -1).mean(axis=1))
        assert abs(np.hypot(*before) - mean_truth) < 0.5 and np.hypot(*after) < 0.25


def test_truth_inverts_the_field_exactly_on_a_smooth_image():
    """d(p) = -u(p + d(p)) and warping moving(q) = aligned(q + u(q)) by d gives aligned back."""
    rng = np.random.default_rng(0)
    m, size = A.margin_px(), 192
    shape = (size + 2 * m, size + 2 * m)
    master = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), 20)
    master /= master.std()
    dem = ndimage.gaussian_filter(rng.standard_normal(shape).astype(np.float32), 30) * 3000
    u = A.misregistration(dem, rng, (3.0, 4.0), 1.5, 1.5, look_azimuth=78.0)
    d = A.invert_field(u, m, (size, size))
    grid = np.mgrid[0:size, 0:size].astype(np.float32)
    assert np.abs(d + sample(u, grid + d + m)).max() < 1e-3
    moving = A.sample_displaced(master, u, m, grid)
    aligned = master[m : m + size, m : m + size]
    inner = (slice(8, -8), slice(8, -8))
    assert np.abs(moving - aligned)[inner].mean() > 0.05
    assert np.abs(warp_image(moving, d) - aligned)[inner].max() < 0.01


def test_regeneration_is_skipped_when_parameters_match(archive):
    stamp = archive.catalog.stat().st_mtime_ns
    again = A.generate_archive(archive.root, size=SIZE, dates=2, seed=5)
    assert again == archive and archive.catalog.stat().st_mtime_ns == stamp


def test_other_parameters_rebuild_the_archive(tmp_path):
    first = A.generate_archive(tmp_path, size=SIZE, dates=1, seed=1)
    (tmp_path / "dsmar-sar" / "stale.txt").write_text("left from an earlier run")
    second = A.generate_archive(tmp_path, size=SIZE, dates=1, seed=2)
    assert second.seed == 2 and second.optical_item_ids == first.optical_item_ids
    assert not (tmp_path / "dsmar-sar" / "stale.txt").exists()
    assert json.loads((tmp_path / "manifest.json").read_text())["parameters"]["seed"] == 2


@pytest.mark.parametrize(
    "kwargs, message",
    [({"size": 100}, "size >= 256"), ({"dates": 0}, "at least one date")],
)
def test_bad_parameters_are_refused(tmp_path, kwargs, message):
    with pytest.raises(InputError, match=message):
        A.generate_archive(tmp_path, **kwargs)


def test_unwritable_root_is_refused(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    with pytest.raises(InputError, match="a-file' is a file, not a folder"):
        A.generate_archive(blocker / "archive", size=SIZE)

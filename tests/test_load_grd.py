"""Sentinel-1 GRD in radar geometry through the default profile: an Earth Search-shaped catalog on rustac
whose SAR is a GRD look-alike (uint16 amplitude DN, GCPs only, mirrored descending geometry, terrain
foreshortening the GCPs leave out; datagen/grd.py) makes complete scene sets, and its SAR, geocoded
through the GCPs, lands within 1 px of its known place after registration."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime

import numpy as np
import pystac
import pytest
import rasterio
from affine import Affine
from rasterio.warp import transform_bounds
from scipy import ndimage

from catalogs.colocate import find_scene_sets
from catalogs.profiles import get_profile
from catalogs.server import serve_items
from datagen import synthetic
from datagen.grd import RadarGeometry, amplitude_dn, ground_seen, image_in_radar_geometry
from dsmar.cli import main
from kernel.config import AreaPeriod
from kernel.errors import CatalogError
from models import register_pair
from pipeline.grid import Grid
from pipeline.load import load_stack, optical_grid
from pipeline.load_assets import read_header
from tests import catalog_fixtures as fx

EPSG = fx.UTM_EPSG
RES = 10.0
OPTICAL = Grid.from_affine(EPSG, Affine(RES, 0, 520000.0, 0, -RES, 5000000.0), 128, 128)
MARGIN = 48
MASTER = OPTICAL.window(-MARGIN, -MARGIN, OPTICAL.height + 2 * MARGIN, OPTICAL.width + 2 * MARGIN)
CENTRE = (OPTICAL.x_coords().mean(), OPTICAL.y_coords().mean())
RELIEF_M = 400.0  # hills: slopes up to 26 degrees, below the 37 degree incidence (no layover)
AOI_ABOVE_SCENE_M = 40.0  # the AOI's mean height above the GRD's reference height: 5.3 px of foreshortening
FLAT = RadarGeometry.centred(EPSG, CENTRE, (184, 184))  # the GCPs' mapping; terrain heights are added per test
GCP_STEP = 23  # a 9 x 9 GCP grid, about as dense per swath as Sentinel-1's 10 x 21
WHEN_S2, WHEN_S1 = datetime(2024, 6, 1, 10, 0, 31, tzinfo=UTC), datetime(2024, 6, 2, 5, 30, tzinfo=UTC)
S2_ID = "S2A_33TWL_20240601_0_L2A"
S1_ID = "S1A_IW_GRDH_1SDV_20240602T053000_20240602T053025_054321_069F3A"
ARCSEC = 1 / 3600


@dataclass(frozen=True)
class Archive:
    url: str
    terrain: synthetic.Terrain
    geometry: RadarGeometry
    bbox: tuple[float, float, float, float]
    dem_id: str


def lonlat_bounds(grid: Grid) -> tuple[float, float, float, float]:
    return transform_bounds(grid.crs, "EPSG:4326", *grid.bounds, densify_pts=21)


def write(path, data, **profile) -> str:
    data = data if data.ndim == 3 else data[None]
    with rasterio.open(path, "w", driver="GTiff", count=data.shape[0], height=data.shape[1], width=data.shape[2],
                       dtype=data.dtype, **profile) as dst:  # fmt: skip
        dst.write(data)
    return path.as_uri()


def grd_file(path, dn: np.ndarray, geometry: RadarGeometry = FLAT) -> str:
    """A GRD-like GeoTIFF: no geotransform, only the GCP grid (lon/lat), no nodata tag (DN 0 means none)."""
    with rasterio.open(path, "w", driver="GTiff", count=1, height=dn.shape[0], width=dn.shape[1], dtype=dn.dtype,
                       gcps=geometry.gcps(GCP_STEP), crs="EPSG:4326") as dst:  # fmt: skip
        dst.write(dn[None])
    return path.as_uri()


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Archive:
    """Sentinel-2 (UTM 33N, harmonised DN), Sentinel-1 GRD (GCPs) and a Copernicus DEM tile (EPSG:4326)
    of one synthetic landscape, as Earth Search items served by rustac."""
    root = tmp_path_factory.mktemp("es-grd")
    rng = np.random.default_rng(3)
    terrain = synthetic.make_terrain(MASTER.shape, rng, RES, relief_m=RELIEF_M)
    geometry = replace(FLAT, reference_height=float(terrain.dem.mean()) - AOI_ABOVE_SCENE_M)
    inner = (slice(MARGIN, MARGIN + OPTICAL.height), slice(MARGIN, MARGIN + OPTICAL.width))
    reflectance = synthetic.render_optical(terrain, synthetic.Illumination(), rng)[:, *inner]
    sigma0 = synthetic.sar_sigma0(terrain, synthetic.SarGeometry(look_azimuth=geometry.heading_deg + 90.0))
    radar = image_in_radar_geometry(geometry, MASTER, sigma0, terrain.dem)
    speckled = radar * rng.standard_gamma(4.4, size=radar.shape) / 4.4
    dn = amplitude_dn(speckled)
    dn[:, :, :3] = 0  # a no-data rim, as at the swath edge

    cogs = fx.CogWriter(root / "placeholders")
    s2 = fx.earth_search_s2(cogs, S2_ID, WHEN_S2, lonlat_bounds(OPTICAL), 2.0)
    for band, key in enumerate(("blue", "green", "red", "nir")):
        dn_s2 = np.round(reflectance[band] * 1e4).astype(np.uint16)
        href = write(root / f"s2-{key}.tif", dn_s2, crs=f"EPSG:{EPSG}", transform=OPTICAL.affine, nodata=0)
        s2["assets"][key].update(
            href=href, **{"proj:shape": list(OPTICAL.shape), "proj:transform": list(OPTICAL.transform)}
        )
    lons, lats = zip(*((g.x, g.y) for g in geometry.gcps(GCP_STEP)))
    s1 = fx.earth_search_s1_grd(cogs, S1_ID, WHEN_S1, (min(lons), min(lats), max(lons), max(lats)), "descending")
    for band, key in enumerate(("vv", "vh")):
        s1["assets"][key]["href"] = grd_file(root / f"grd-{key}.tiff", dn[band], geometry)
    truth = truth_displacement(geometry, terrain)
    s1["assets"]["truth_displacement"] = {
        "href": write(root / "grd-truth.tif", truth, crs=f"EPSG:{EPSG}", transform=OPTICAL.affine),
        "type": "image/tiff; application=geotiff",
        "roles": ["truth"],
    }

    west, south, east, north = lonlat_bounds(MASTER)
    dem_grid = Grid.from_affine(4326, Affine(ARCSEC, 0, west, 0, -ARCSEC, north), int((north - south) / ARCSEC),
                                int((east - west) / ARCSEC))  # fmt: skip
    lon, lat = np.meshgrid(dem_grid.x_coords(), dem_grid.y_coords())
    x, y = rasterio.warp.transform("EPSG:4326", MASTER.crs, lon.ravel(), lat.ravel())
    col, row = ~MASTER.affine * (np.array(x), np.array(y))
    heights = ndimage.map_coordinates(terrain.dem, [row - 0.5, col - 0.5], order=1, mode="nearest")
    dem = fx.cop_dem(cogs, 15, 45)
    dem["assets"]["data"].update(
        href=write(root / "dem.tif", heights.reshape(dem_grid.shape).astype(np.float32), crs="EPSG:4326",
                   transform=dem_grid.affine),
        **{"proj:shape": list(dem_grid.shape), "proj:transform": list(dem_grid.transform)},
    )  # fmt: skip
    dem["bbox"], dem["geometry"] = [west, south, east, north], fx.polygon((west, south, east, north))

    collections = [
        fx.collection("sentinel-2-l2a", "Sentinel-2 Level-2A", ("eo", "proj", "raster")),
        fx.collection("sentinel-1-grd", "Sentinel-1 Level-1C Ground Range Detected", ("sar", "sat")),
        fx.collection("cop-dem-glo-30", "Copernicus DEM GLO-30", ("proj", "raster")),
    ]
    ow, os_, oe, on = lonlat_bounds(OPTICAL)
    inset = 0.1 * (oe - ow)
    with serve_items(collections, [s2, s1, dem]) as server:
        yield Archive(server.url, terrain, geometry, (ow + inset, os_ + inset, oe - inset, on - inset), dem["id"])


def search_args(archive: Archive) -> list[str]:
    return ["search", "--catalog", archive.url, "--bbox", *map(str, archive.bbox), "--start", "2024-06-01",
            "--end", "2024-06-30", "--json"]  # fmt: skip


def test_default_profile_search_gives_complete_scene_sets_with_grd(archive, capsys):
    assert main(search_args(archive)) == 0
    scene_sets = json.loads(capsys.readouterr().out)
    assert [(s["optical"], s["sar"], s["dem"]) for s in scene_sets] == [(S2_ID, [S1_ID], [archive.dem_id])]


def truth_displacement(geometry: RadarGeometry, terrain) -> np.ndarray:
    """Contract 1 truth (2, H, W) on the optical grid: the GCP-geocoded SAR at q shows the ground at
    q + u(q) (foreshortening), so d solves moving(q + d) = optical(q), i.e. d = -u(q + d)."""
    rows, cols = np.mgrid[0 : OPTICAL.height, 0 : OPTICAL.width].astype(np.float64)
    d = np.zeros((2, *OPTICAL.shape))
    for _ in range(10):
        x, y = OPTICAL.affine * (cols + d[1] + 0.5, rows + d[0] + 0.5)
        gx, gy = ground_seen(geometry, MASTER, terrain.dem, x, y)
        d = np.stack([(gy - y) / RES, -(gx - x) / RES])  # u in pixels: rows grow southwards
    return d.astype(np.float32)


def test_grd_lands_within_a_pixel_of_its_place_after_registration(archive):
    """Geolocation error of the SAR on the optical grid, against the known terrain displacement:
    GCP geocoding alone leaves the foreshortening (several px on slopes); registration removes it."""
    profile = get_profile("earth-search", catalog_url=archive.url)
    area = AreaPeriod(bbox=archive.bbox, start=date(2024, 6, 1), end=date(2024, 6, 30))
    (scene,) = find_scene_sets(profile, area).scene_sets
    grid = optical_grid(scene.optical, scene.asset_keys)
    assert grid == OPTICAL
    optical = load_stack([scene.optical], scene.asset_keys.optical, grid, quirks=profile.quirks).values
    sar = load_stack(scene.sar, scene.asset_keys.sar, grid, quirks=profile.quirks).values
    # 10*log10(DN^2) = sigma0 dB + 20*log10(DN_PER_AMPLITUDE): about 54 dB above sigma0 here
    assert np.isfinite(optical).all() and np.isfinite(sar).all() and 40 < np.median(sar[0]) < 60
    truth = truth_displacement(archive.geometry, archive.terrain)
    result = register_pair(optical, sar, fixed_modality="optical", moving_modality="sar", method="cfog")
    inside = (slice(8, -8), slice(8, -8))  # cfog's field is unreliable within a few pixels of the image edge
    before = np.hypot(*truth)[inside]
    after = np.hypot(*(result.displacement - truth))[inside]
    print(
        f"GRD geolocation error (px): GCPs alone mean {before.mean():.2f}, p95 {np.percentile(before, 95):.2f}; "
        f"after registration (cfog) mean {after.mean():.2f}, median {np.median(after):.2f}, "
        f"p95 {np.percentile(after, 95):.2f}"
    )
    assert before.mean() > 3.0  # the GCPs alone leave the foreshortening
    assert after.mean() < 1.0 and np.median(after) < 0.75


def test_gcp_geocoding_alone_follows_the_known_mapping(tmp_path):
    """Flat terrain: a GRD-like file whose pixels hold their own optical (col, row), geocoded through the
    9 x 9 GCP grid (thin-plate spline), reads back its position on the optical grid: 0.07 px on average, at most
    0.2 px (GDAL's warper approximates the transformer to 0.125 source px)."""
    r, c = np.mgrid[0 : FLAT.shape[0], 0 : FLAT.shape[1]]
    col, row = ~OPTICAL.affine * FLAT.to_map(r, c)
    items = []
    for name, values in (("col", col - 0.5), ("row", row - 0.5)):
        href = grd_file(tmp_path / f"{name}.tif", values.astype(np.float32))
        record = fx.earth_search_s1_grd(fx.CogWriter(tmp_path), "ramps", WHEN_S1, lonlat_bounds(OPTICAL), "descending")
        record["assets"] = {"data": {"href": href, "raster:bands": [{"unit": "dB"}]}}
        items.append(pystac.Item.from_dict(record))
    cols, rows = (load_stack([item], {"v": "data"}, OPTICAL).values[0] for item in items)
    expected_rows, expected_cols = np.mgrid[0 : OPTICAL.height, 0 : OPTICAL.width]
    error = np.hypot(cols - expected_cols, rows - expected_rows)
    assert np.isfinite(error).all() and error.mean() < 0.1 and error.max() < 0.25, (error.mean(), error.max())


def test_grd_on_s3_without_aws_credentials_is_one_line_saying_what_to_set(monkeypatch, tmp_path):
    """Earth Search's GRD files sit in a requester-pays S3 bucket: reading them needs AWS credentials."""
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    with pytest.raises(CatalogError, match="read with your AWS credentials") as caught:
        read_header("s3://sentinel-s1-l1c/GRD/2024/6/2/IW/DV/S1A_IW_GRDH/measurement/iw-vv.tiff")
    assert len(str(caught.value).splitlines()) == 1


def test_a_run_on_the_default_profile_reports_the_grd_geolocation_error_before_and_after(
    archive, prefect_api, tmp_path
):
    """The whole product path: `dsmar run` on the default profile places the GRD by its GCPs, registers it, and
    the report states its geolocation error against the known terrain displacement before and after."""
    report = tmp_path / "report"
    argv = [sys.executable, "-m", "dsmar.cli", "run", "--catalog", archive.url, "--bbox", *map(str, archive.bbox),
            "--start", "2024-06-01", "--end", "2024-06-30", "--out", str(tmp_path / "grd.zarr"), "--method", "cfog",
            "--tile-size", "128", "--halo", "16", "--workers", "1", "--report", str(report)]  # fmt: skip
    env = {**os.environ, "PREFECT_API_URL": prefect_api}
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    text = (report / "report.md").read_text()
    before = re.search(r"Geolocation error vs injected truth before registration: median ([0-9.]+) px", text)
    after = re.search(r"End-point error vs injected truth: median ([0-9.]+) px", text)
    assert before and after, text[:2000]
    assert float(before.group(1)) > 3.0 and float(after.group(1)) < 1.0
    assert "unregistered: median" in done.stdout

"""The cube as data scientists and other tools use it, on a cube from a real (small) `dsmar run`:
xarray and `dsmar.open_cube`, reprojection, coordinate selection, CF attributes, zarr alone,
GeoTIFF and NetCDF export, and finding the cube through its STAC item."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import rioxarray
import xarray as xr
import zarr

import dsmar
from pipeline.cube import BOOKKEEPING, TIME_UNITS

REPO = Path(__file__).resolve().parents[1]
CF_TIME_UNITS = ("seconds", "milliseconds", "microseconds", "minutes", "hours", "days")


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    from catalogs.server import serve_static_catalog
    from datagen.demo_archive import generate_archive

    info = generate_archive(tmp_path_factory.mktemp("archive"), size=256, dates=2, seed=5)
    with serve_static_catalog(info.catalog) as server:
        yield info, server.url


def _options(info, url: str) -> dict:
    """The run's options, as `dsmar.register_region` keywords (the CLI's flags)."""
    return dict(
        profile="local",
        catalog=url,
        bbox=info.bbox,
        start=str(info.start),
        end=str(info.end),
        method="identity",
        tile_size=128,
        halo=8,
        workers=1,
    )


@pytest.fixture(scope="module")
def run_cube(tmp_path_factory, archive, prefect_api):
    """A cube written by `dsmar run` (method identity, 2 dates) on a generated archive served over STAC."""
    out = tmp_path_factory.mktemp("users") / "cube.zarr"
    argv = [sys.executable, "-m", "dsmar.cli", "run", "--out", str(out)]
    for key, value in _options(*archive).items():
        argv += ["--" + key.replace("_", "-"), *map(str, value if isinstance(value, tuple) else [value])]
    env = {**os.environ, "PYTHONPATH": str(REPO), "PREFECT_API_URL": prefect_api}
    done = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=400)
    assert done.returncode == 0, done.stderr[-3000:]
    return out


def test_opens_with_xarray_and_dsmar_with_its_crs_and_no_bookkeeping(run_cube):
    plain = xr.open_zarr(run_cube, decode_coords="all")
    ours = dsmar.open_cube(str(run_cube))
    for ds in (plain, ours):
        assert ds.sizes["time"] == 2 and ds.rio.crs is not None
        assert not {"tile_inputs_hash", "tile_row", "tile_col"} & (set(ds.variables) | set(ds.dims))
        assert ds["optical_item"].dtype == object and all(isinstance(v, str) for v in ds["optical_item"].values)
    assert ours.rio.transform() == plain.rio.transform()
    assert zarr.open_group(str(run_cube), mode="r")[f"{BOOKKEEPING}/tile_inputs_hash"].shape[0] == 2


def test_every_data_variable_reprojects_to_lonlat(run_cube):
    one_time = dsmar.open_cube(str(run_cube)).isel(time=0)  # (band, y, x): rioxarray's limit is 3 dims
    lonlat = one_time.rio.reproject("EPSG:4326")
    assert lonlat.rio.crs.to_epsg() == 4326
    split = dsmar.open_cube(str(run_cube), split_bands=True)  # every variable (time, y, x)
    whole = split.rio.reproject("EPSG:4326")
    spatial = [name for name in split.data_vars if {"y", "x"} <= set(split[name].dims)]
    assert whole.rio.crs.to_epsg() == 4326
    crs = {name: whole[name].rio.crs for name in spatial}
    assert spatial and all(c == whole.rio.crs for c in crs.values()), {n: str(c)[:60] for n, c in crs.items()}
    assert np.isfinite(whole["optical_red"].values).any()


def test_sel_by_coordinates(run_cube):
    ds = dsmar.open_cube(str(run_cube))
    x, y, t = float(ds.x[5]), float(ds.y[7]), ds.time.values[1]
    point = ds.optical.sel(x=x + 1.0, y=y - 1.0, time=t, method="nearest")
    assert float(point.x) == x and float(point.y) == y
    window = ds.sel(x=slice(float(ds.x[0]), float(ds.x[9])), time=slice(ds.time.values[0], t))
    assert window.sizes["x"] == 10 and window.sizes["time"] == 2


def test_cf_attributes(run_cube):
    """An explicit CF check: units and long names everywhere, the standard names CF defines, CF time."""
    ds = xr.open_zarr(run_cube, decode_coords="all")
    assert ds.attrs["Conventions"].startswith("CF-")
    for name, var in ds.variables.items():
        assert var.attrs.get("long_name"), f"{name} has no long_name"
    for name in ("optical", "sar", "dem", "displacement_sar", "confidence_sar", "x", "y"):
        assert ds[name].attrs.get("units"), name
    assert ds.dem.attrs["standard_name"] == "surface_altitude"
    assert ds.optical.attrs["standard_name"] == "surface_bidirectional_reflectance"
    assert ds.x.attrs["standard_name"] == "projection_x_coordinate" and ds.time.attrs["standard_name"] == "time"
    assert ds.spatial_ref.attrs["grid_mapping_name"] and ds.optical.encoding["grid_mapping"] == "spatial_ref"
    raw = zarr.open_group(str(run_cube), mode="r")
    for name in ("time", "sar_time"):
        units = raw[name].attrs["units"]
        assert units.split(" since ")[0] in CF_TIME_UNITS and units == TIME_UNITS, units
        assert raw[name].attrs["calendar"] == "proleptic_gregorian" and raw[name].dtype == np.int64
    settings = json.loads(ds.settings.values[0])
    assert settings["halo"] == 8 and settings["tile_size"] == 128 and settings["method_spec"]["name"] == "identity"


def test_every_variable_reads_with_zarr_alone_and_no_string_type(run_cube):
    group = zarr.open_group(str(run_cube), mode="r")
    arrays = list(group.members(max_depth=None))
    assert arrays
    for name, array in arrays:
        if isinstance(array, zarr.Array):
            meta = json.loads((run_cube / name / "zarr.json").read_text())
            kind = meta["data_type"] if isinstance(meta["data_type"], str) else meta["data_type"]["name"]
            assert kind != "string", f"{name} uses zarr's variable-length string type"
            assert array[...].shape == array.shape
    assert bytes(group["optical_item"][0]).decode().startswith("synthetic-optical-")


def test_one_time_step_exports_to_geotiff_and_netcdf(run_cube, tmp_path):
    ds = dsmar.open_cube(str(run_cube)).isel(time=0)
    ds.optical.rio.to_raster(tmp_path / "optical.tif")
    back = rioxarray.open_rasterio(tmp_path / "optical.tif")
    assert back.rio.crs == ds.rio.crs and back.shape == ds.optical.shape
    ds.load().drop_encoding().to_netcdf(tmp_path / "step.nc", engine="scipy")  # NetCDF3: the cube's int64 times off
    reread = xr.open_dataset(tmp_path / "step.nc", engine="scipy", decode_coords="all")
    assert reread.rio.crs == ds.rio.crs and reread.time.values == ds.time.values
    assert np.array_equal(reread.optical.values, ds.optical.values, equal_nan=True)
    assert list(reread.band_optical.values) == list(ds.band_optical.values)


def test_the_cube_is_found_and_opened_through_its_stac_item(run_cube):
    from pystac_client import Client

    from catalogs.server import serve_static_catalog

    catalog = run_cube.with_name(run_cube.name + ".stac") / "catalog.json"
    with serve_static_catalog(catalog) as server:
        client = Client.open(server.url)
        ds = dsmar.open_cube(str(run_cube))
        west, south, east, north = ds.rio.transform_bounds("EPSG:4326")
        items = list(client.search(bbox=[west, south, east, north], datetime="2000-01-01/2100-01-01").items())
    (item,) = items
    asset = item.assets["data"]
    assert asset.media_type == "application/vnd+zarr" and asset.roles == ["data"]
    assert "cube:dimensions" in item.properties and "optical" in item.properties["cube:variables"]
    derived = [link.href for link in item.links if link.rel == "derived_from"]
    assert any(ds.optical_item.values[0] in href for href in derived)
    opened = xr.open_dataset(asset.href, **asset.extra_fields["xarray:open_kwargs"])
    assert opened.sizes == ds.sizes and opened.rio.crs == ds.rio.crs


def test_register_region_from_python_writes_the_same_cube_as_the_cli(run_cube, archive, prefect_api, tmp_path):
    out = tmp_path / "py.zarr"
    summary = dsmar.register_region(out=str(out), **_options(*archive))
    assert summary.scene_sets == 2 and summary.tiles_written == 2 * summary.tiles_per_scene
    ours, cli = dsmar.open_cube(str(out)), dsmar.open_cube(str(run_cube))
    assert np.array_equal(ours.optical.values, cli.optical.values, equal_nan=True)
    assert (out.parent / "py.zarr.stac" / "catalog.json").is_file()


@pytest.mark.parametrize(
    "options,expected",
    [({"tile_size": 8}, "--tile-size"), ({"no_such_option": 1}, "unrecognized arguments: --no-such-option")],
)
def test_register_region_refuses_bad_options_in_one_line_as_the_cli_does(tmp_path, options, expected):
    from kernel.errors import InputError

    base = dict(profile="local", catalog="http://127.0.0.1:9", bbox=(14.4, 46.0, 14.6, 46.2))
    with pytest.raises(InputError, match=expected) as err:
        dsmar.register_region(start="2024-06-01", end="2024-06-30", out=str(tmp_path / "c.zarr"), **base, **options)
    assert "\n" not in str(err.value)

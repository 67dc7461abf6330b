"""End to end, as `dsmar demo` runs it: generated archive -> rustac STAC API -> Prefect flow (temporary
API) -> real 2-worker Dask LocalCluster -> cube and report; scored against the archive's truth asset,
read here with rasterio, not through the pipeline."""

from __future__ import annotations

import numpy as np
import pystac
import pytest
import rasterio
from pyproj import CRS

from pipeline.cube import open_cube

SIZE = 384


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    from dsmar.commands.demo import run_demo

    workdir = tmp_path_factory.mktemp("demo")
    summary = run_demo(workdir, size=SIZE, dates=2, method="cfog", tile_size=256, halo=64, workers=2)
    return workdir, summary


def _truth_on_cube(workdir, item_id, ds) -> np.ndarray:
    """The SAR item's truth_displacement, cut to the cube's grid by the test's own arithmetic."""
    catalog = pystac.Catalog.from_file(str(workdir / "archive" / "catalog.json"))
    item = next(i for i in catalog.get_items(recursive=True) if i.id == item_id)
    with rasterio.open(item.assets["truth_displacement"].get_absolute_href()) as src:
        truth = src.read().astype(np.float32)
        t = src.transform
    col0 = (float(ds.x[0]) - t.c) / t.a - 0.5
    row0 = (float(ds.y[0]) - t.f) / t.e - 0.5
    assert abs(col0 - round(col0)) < 1e-6 and abs(row0 - round(row0)) < 1e-6
    r, c = int(round(row0)), int(round(col0))
    return truth[:, r : r + ds.sizes["y"], c : c + ds.sizes["x"]]


def test_cube_follows_contract_3(demo):
    workdir, summary = demo
    ds = open_cube(str(workdir / "cube.zarr"))
    assert ds.sizes["time"] == 2 and summary.scene_sets == 2
    assert CRS.from_user_input(ds.rio.crs) == CRS.from_epsg(32633)
    assert ds.rio.transform().a == pytest.approx(10.0)
    for name in ("optical", "sar", "dem", "displacement_sar", "displacement_dem", "confidence_sar", "confidence_dem"):
        assert ds[name].dims[0] == "time" and ds[name].dims[-2:] == ("y", "x")
        assert ds[name].encoding["grid_mapping"] == "spatial_ref"
        assert np.isfinite(ds[name].isel(time=0).values).mean() > 0.9, name
    assert ds.attrs["method"] == "cfog" and "config" in ds.attrs
    conf = ds.confidence_sar.values
    assert conf.min() >= 0 and conf.max() <= 1
    assert (workdir / "report" / "report.md").is_file()
    assert (workdir / "report" / "t00_sar_checkerboard.png").stat().st_size > 10_000


def test_recovered_sar_field_matches_injected_truth(demo):
    workdir, summary = demo
    ds = open_cube(str(workdir / "cube.zarr"))
    for t in range(ds.sizes["time"]):
        item_id = str(ds.sar_item.values[t]).split(",")[0]
        truth = _truth_on_cube(workdir, item_id, ds)
        recovered = ds.displacement_sar.isel(time=t).values
        epe = np.sqrt(((recovered - truth) ** 2).sum(axis=0))
        median = float(np.nanmedian(epe))
        assert median < 1.5, f"time {t}: median EPE {median:.2f} px"
        # Sanity: the truth is a real misregistration, so the identity would have failed this check.
        assert float(np.nanmedian(np.sqrt((truth**2).sum(axis=0)))) > 1.5
    assert summary.error("sar").median < 1.5


def test_rerun_skips_every_chunk_and_rebuilds_the_report(demo):
    from dsmar.commands.demo import run_demo

    workdir, first = demo
    (workdir / "report" / "t00_sar_field.png").unlink()
    again = run_demo(workdir, size=SIZE, dates=2, method="cfog", tile_size=256, halo=64, workers=2)
    assert again.tiles_written == 0 and again.tiles_skipped == first.tiles_written > 0
    assert (workdir / "report" / "t00_sar_field.png").is_file()
    assert again.error("sar").median == pytest.approx(first.error("sar").median)

"""AOIs at the edges of map grids, on Earth Search-shaped catalogs served by rustac: the antimeridian (a box
crossing it is refused in one line; a box beside it works with footprints split there, as RFC 7946 has them,
each searched on the AOI's side)
and an AOI spanning two UTM zones (each scene keeps its own zone's grid). Conventions: docs/catalogs.md."""

from __future__ import annotations

import json
from datetime import date

from catalogs.colocate import find_scene_sets
from catalogs.profiles import get_profile
from catalogs.server import serve_items
from dsmar.cli import main
from kernel.config import AreaPeriod
from pipeline.load import load_stack, optical_grid
from tests import catalog_fixtures as fx
from tests.test_catalogs_search import utc

COLLECTIONS = [
    fx.collection("sentinel-2-l2a", "Sentinel-2 Level-2A", ("eo", "proj", "raster")),
    fx.collection("sentinel-1-grd", "Sentinel-1 Level-1C Ground Range Detected", ("sar", "sat")),
    fx.collection("cop-dem-glo-30", "Copernicus DEM GLO-30", ("proj", "raster")),
]
JUNE = ("--start", "2024-06-01", "--end", "2024-06-30")


def split_at_antimeridian(record: dict, west: float, south: float, east: float, north: float) -> dict:
    """`record` with the footprint from `west` (< 180) across 180 to `east` (> -180), split there as RFC 7946
    and Earth Search have it: a MultiPolygon, and a bbox whose west is greater than its east."""
    parts = [fx.polygon((west, south, 180.0, north)), fx.polygon((-180.0, south, east, north))]
    record["geometry"] = {"type": "MultiPolygon", "coordinates": [p["coordinates"] for p in parts]}
    record["bbox"] = [west, south, east, north]
    return record


def test_a_bbox_across_the_antimeridian_is_one_line_saying_so(capsys):
    assert main(["search", "--bbox", "179.8", "-17.2", "-179.8", "-16.9", *JUNE]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "antimeridian boxes are not supported" in err


def test_an_aoi_beside_the_antimeridian_pairs_scenes_whose_footprints_cross_it(tmp_path, capsys):
    cogs = fx.CogWriter(tmp_path)
    s2 = split_at_antimeridian(
        fx.earth_search_s2(cogs, "S2B_60KWE_20240601_0_L2A", utc("2024-06-01T22:10:00"), (179.4, -17.5, 180.0, -16.5), 3),
        179.4, -17.5, -179.7, -16.5,
    )  # fmt: skip
    grd = split_at_antimeridian(
        fx.earth_search_s1_grd(cogs, "S1A_GRD_AM", utc("2024-06-02T06:00:00"), (179.0, -17.8, 180.0, -16.2), "ascending"),
        179.0, -17.8, -179.2, -16.2,
    )  # fmt: skip
    dem = [fx.cop_dem(cogs, 179, -18), fx.cop_dem(cogs, -180, -18)]
    with serve_items(COLLECTIONS, [s2, grd, *dem]) as server:
        args = ["search", "--catalog", server.url, "--bbox", "179.6", "-17.2", "179.9", "-16.9", *JUNE, "--json"]
        assert main(args) == 0
        (scene_set,) = json.loads(capsys.readouterr().out)
    assert (scene_set["optical"], scene_set["sar"], scene_set["overlap"]) == (s2["id"], [grd["id"]], 1.0)
    assert scene_set["dem"] == [dem[0]["id"]]  # the footprint is searched on the AOI's side of 180


def test_an_aoi_across_a_utm_zone_border_keeps_each_scene_on_its_own_zone(tmp_path):
    """Sentinel-2 tiles of zones 33 and 34 both cover an AOI on 18 E: two scene sets, each on its own
    zone's grid, and a zone-33 DEM/SAR loads onto the zone-34 grid (any source is resampled onto the
    optical grid)."""
    cogs = fx.CogWriter(tmp_path)
    west = fx.earth_search_s2(cogs, "S2A_33TYL_20240601_0_L2A", utc("2024-06-01T10:00:31"), (17.3, 45.0, 18.1, 45.6), 1)
    east = fx.earth_search_s2(
        cogs, "S2A_34TCR_20240601_0_L2A", utc("2024-06-01T10:00:35"), (17.9, 45.0, 18.7, 45.6), 1, epsg=32634
    )
    grd = fx.pc_s1_rtc(cogs, "S1A_RTC_Z", utc("2024-06-02T05:30:00"), (17.0, 44.8, 19.0, 45.8), "descending")
    grd["collection"] = "sentinel-1-grd"
    for asset in grd["assets"].values():
        asset["raster:bands"][0]["unit"] = "linear"
    items = [west, east, grd, fx.cop_dem(cogs, 17, 45), fx.cop_dem(cogs, 18, 45)]
    with serve_items(COLLECTIONS, items) as server:
        profile = get_profile("earth-search", catalog_url=server.url)
        area = AreaPeriod(bbox=(17.95, 45.2, 18.05, 45.3), start=date(2024, 6, 1), end=date(2024, 6, 30))
        result = find_scene_sets(profile, area)
    assert [s.optical.id for s in result.scene_sets] == [west["id"], east["id"]]
    grids = [optical_grid(s.optical, s.asset_keys) for s in result.scene_sets]
    assert [g.crs.to_epsg() for g in grids] == [32633, 32634]
    sar = load_stack(result.scene_sets[1].sar, profile.asset_keys.sar, grids[1], quirks=profile.quirks)
    assert sar.rio.crs.to_epsg() == 32634 and sar.shape == (2, *grids[1].shape)

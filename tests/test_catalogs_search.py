"""Co-location search against a real STAC API (rustac on 127.0.0.1) holding look-alike catalogs."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pystac
import pytest

from catalogs.colocate import find_scene_sets, pair_scenes
from catalogs.geocoding import in_radar_geometry
from catalogs.http import RetryPolicy
from catalogs.profiles import get_profile
from catalogs.server import serve_items
from catalogs.stac_search import SearchLimits
from dsmar.cli import main
from kernel.config import AreaPeriod, SearchConfig, build
from kernel.errors import CatalogError, InputError
from tests import catalog_fixtures as fx

AOI = (15.0, 45.0, 15.4, 45.3)
TILE = (14.9, 44.9, 15.6, 45.6)  # covers the AOI
EDGE = (15.3, 44.9, 16.0, 45.6)  # covers 0.1 of the AOI's 0.4 degrees of longitude
AOI_NO_DEM = (17.0, 43.0, 17.4, 43.3)
TILE_NO_DEM = (16.9, 42.9, 17.6, 43.6)
JUNE = (date(2024, 6, 1), date(2024, 6, 30))
JULY = (date(2024, 7, 1), date(2024, 7, 31))
IN_JUNE = AreaPeriod(bbox=AOI, start=JUNE[0], end=JUNE[1])
IN_JULY = AreaPeriod(bbox=AOI, start=JULY[0], end=JULY[1])


def utc(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def pc_id(when: str) -> str:
    stamp = utc(when).strftime("%Y%m%dT%H%M%S")
    return f"S2A_MSIL2A_{stamp}_R022_T33TWL_{stamp[:8]}T155432"


def rtc_id(when: str) -> str:
    stamp = utc(when).strftime("%Y%m%dT%H%M%S")
    return f"S1A_IW_GRDH_1SDV_{stamp}_{stamp}_054321_069F3A_rtc"


OPTICAL = {  # name -> (time, footprint, cloud cover)
    "good1": ("2024-06-01T10:00:31", TILE, 5.0),
    "cloudy": ("2024-06-03T10:00:31", TILE, 80.0),
    "edge": ("2024-06-05T10:00:31", EDGE, 2.0),
    "good2": ("2024-06-09T10:00:31", TILE, 20.0),
    "partial": ("2024-06-14T10:00:31", TILE, 1.0),
    "nosar": ("2024-06-24T10:00:31", TILE, 3.0),
    "nodem": ("2024-06-01T10:00:31", TILE_NO_DEM, 5.0),
}
SAR = {  # name -> (time, footprint, orbit state)
    "desc1a": ("2024-06-02T05:30:00", (14.8, 45.15, 15.7, 45.8), "descending"),
    "desc1b": ("2024-06-02T05:30:25", (14.8, 44.5, 15.7, 45.15), "descending"),
    "asc1": ("2024-06-01T17:00:00", TILE, "ascending"),
    "desc2": ("2024-06-08T05:30:00", TILE, "descending"),
    "corner": ("2024-06-15T05:30:00", (15.3, 45.2, 15.6, 45.6), "descending"),
    "nodem": ("2024-06-02T05:30:00", TILE_NO_DEM, "descending"),
}
OPTICAL_IDS = {
    name: pc_id(t) if name != "nodem" else pc_id(t).replace("T33TWL", "T33TYH") for name, (t, _, _) in OPTICAL.items()
}
S = {name: rtc_id(t) if name != "nodem" else rtc_id(t) + "_b" for name, (t, _, _) in SAR.items()}
DEM_IDS = ["Copernicus_DSM_COG_10_N45_00_E014_00_DEM", "Copernicus_DSM_COG_10_N45_00_E015_00_DEM"]
FAST = RetryPolicy(backoff_base_s=0.05, backoff_max_s=0.2, read_timeout_s=1.0, total_timeout_s=10)


def july_items(cogs: fx.CogWriter) -> list[dict]:
    """30 daily optical scenes and a descending pass every 6 days: one page of 10 is not enough."""
    items = []
    for day in range(30):
        when = utc("2024-07-01T10:00:31") + timedelta(days=day)
        items.append(fx.pc_s2(cogs, pc_id(when.isoformat()[:19]), when, TILE, 10.0))
    for day in range(0, 36, 6):
        when = utc("2024-07-01T05:30:00") + timedelta(days=day)
        items.append(fx.pc_s1_rtc(cogs, rtc_id(when.isoformat()[:19]), when, TILE, "descending"))
    return items


@pytest.fixture(scope="module")
def pc_server(tmp_path_factory):
    """A Planetary Computer look-alike: sentinel-2-l2a, sentinel-1-rtc, cop-dem-glo-30."""
    cogs = fx.CogWriter(tmp_path_factory.mktemp("pc-cogs"))
    items = [fx.pc_s2(cogs, OPTICAL_IDS[n], utc(t), fp, cloud) for n, (t, fp, cloud) in OPTICAL.items()]
    items += [fx.pc_s1_rtc(cogs, S[n], utc(t), fp, state) for n, (t, fp, state) in SAR.items()]
    items += [fx.cop_dem(cogs, 14, 45), fx.cop_dem(cogs, 15, 45)]
    items += july_items(cogs)
    collections = [
        fx.collection("sentinel-2-l2a", "Sentinel-2 Level-2A", ("eo", "proj")),
        fx.collection("sentinel-1-rtc", "Sentinel-1 Radiometrically Terrain Corrected", ("sar", "sat", "proj")),
        fx.collection("cop-dem-glo-30", "Copernicus DEM GLO-30", ("proj", "raster")),
    ]
    with serve_items(collections, items) as server:
        yield server


@pytest.fixture(scope="module")
def es_server(tmp_path_factory):
    """An Earth Search look-alike: sentinel-2-l2a, sentinel-1-grd (radar geometry), cop-dem-glo-30, plus an RTC collection."""
    cogs = fx.CogWriter(tmp_path_factory.mktemp("es-cogs"))
    items = [
        fx.earth_search_s2(cogs, "S2A_33TWL_20240601_0_L2A", utc("2024-06-01T10:00:31"), TILE, 5.0),
        fx.earth_search_s1_grd(
            cogs,
            "S1A_IW_GRDH_1SDV_20240602T053000_20240602T053025_054321_069F3A",
            utc("2024-06-02T05:30:00"),
            TILE,
            "descending",
        ),
        fx.pc_s1_rtc(cogs, S["desc1a"], utc(SAR["desc1a"][0]), TILE, "descending"),
        fx.cop_dem(cogs, 15, 45),
    ]
    collections = [
        fx.collection("sentinel-2-l2a", "Sentinel-2 Level-2A", ("eo", "proj", "raster")),
        fx.collection("sentinel-1-grd", "Sentinel-1 Level-1C Ground Range Detected", ("sar", "sat")),
        fx.collection("sentinel-1-rtc", "Sentinel-1 RTC, beside Earth Search's collections", ("sar", "sat", "proj")),
        fx.collection("cop-dem-glo-30", "Copernicus DEM GLO-30", ("proj", "raster")),
    ]
    with serve_items(collections, items) as server:
        yield server


def pc_profile(url: str):
    return get_profile("planetary-computer", catalog_url=url)


def reasons(result) -> dict[str, str]:
    return {r.item_id: r.reason for r in result.rejections}


def test_pairs_each_usable_scene_and_says_why_others_are_rejected(pc_server):
    result = find_scene_sets(pc_profile(pc_server.url), IN_JUNE)
    assert [s.to_summary() for s in result.scene_sets] == [
        {
            "optical": OPTICAL_IDS["good1"],
            "sar": [S["desc1a"], S["desc1b"]],
            "dem": DEM_IDS,
            "overlap": 1.0,
            "time_gap_hours": 19.491,
        },
        {
            "optical": OPTICAL_IDS["good2"],
            "sar": [S["desc2"]],
            "dem": DEM_IDS,
            "overlap": 1.0,
            "time_gap_hours": 28.509,
        },
    ]
    why = reasons(result)
    assert why[OPTICAL_IDS["cloudy"]] == "cloud cover 80 > 30"
    assert why[OPTICAL_IDS["edge"]].startswith("overlap 0.25 < 0.5")
    assert why[OPTICAL_IDS["partial"]] == "SAR within 3 days covers at most 0.08 < 0.5 of the scene's part of the AOI"
    assert why[OPTICAL_IDS["nosar"]] == "no SAR within 3 days"
    first = result.scene_sets[0]
    assert first.asset_keys.optical["red"] == "B04" and set(first.optical.assets) >= {"B02", "B03", "B04", "B08"}
    assert any("descending pass 19.5 h after" in r and "1 other pass(es)" in r for r in first.reasons)
    assert all(a.href.startswith("file://") for a in first.optical.assets.values())
    assert result.retries == [] and result.retry_summary == ""


def test_orbit_direction_preference_beats_nearer_pass_and_can_be_chosen(pc_server):
    one_day = AreaPeriod(bbox=AOI, start=date(2024, 6, 1), end=date(2024, 6, 1))
    result = find_scene_sets(pc_profile(pc_server.url), one_day, SearchConfig(orbit_state="ascending"))
    assert [s.to_summary()["sar"] for s in result.scene_sets] == [[S["asc1"]]]
    assert result.scene_sets[0].time_gap_hours == pytest.approx(6.99, abs=0.01)


def test_rules_are_configurable(pc_server):
    result = find_scene_sets(
        pc_profile(pc_server.url), IN_JUNE, SearchConfig(max_cloud=90, sar_window_days=1, min_overlap=0.2)
    )
    why = reasons(result)
    assert [s.optical.id for s in result.scene_sets] == [OPTICAL_IDS["good1"]]  # within a day: only the first passes
    for name in ("cloudy", "edge", "good2", "nosar"):  # past the cloud and overlap rules now, stopped by the window
        assert why[OPTICAL_IDS[name]] == "no SAR within 1 days"
    assert why[OPTICAL_IDS["partial"]] == "SAR within 1 days covers at most 0.08 < 0.2 of the scene's part of the AOI"


def test_scene_without_dem_is_rejected(pc_server):
    result = find_scene_sets(pc_profile(pc_server.url), AreaPeriod(bbox=AOI_NO_DEM, start=JUNE[0], end=JUNE[1]))
    assert result.scene_sets == []
    assert reasons(result) == {OPTICAL_IDS["nodem"]: "no DEM tile covers the footprint"}


def test_earth_search_default_profile_pairs_grd_in_radar_geometry(es_server, capsys):
    """The default profile's SAR is Sentinel-1 GRD with GCPs only: it makes complete scene sets, said to be
    geocoded through its GCPs, through the library and through `dsmar search`."""
    grd = "S1A_IW_GRDH_1SDV_20240602T053000_20240602T053025_054321_069F3A"
    result = find_scene_sets(get_profile("earth-search", catalog_url=es_server.url), IN_JUNE)
    assert result.rejections == []
    assert [s.to_summary() for s in result.scene_sets] == [
        {
            "optical": "S2A_33TWL_20240601_0_L2A",
            "sar": [grd],
            "dem": [DEM_IDS[1]],
            "overlap": 1.0,
            "time_gap_hours": 19.491,
        }
    ]
    assert "GRD in radar geometry, geocoded through its ground control points" in result.scene_sets[0].reasons[1]
    assert main(cli("--catalog", es_server.url, *aoi_args(), "--json")) == 0
    assert [s["sar"] for s in json.loads(capsys.readouterr().out)] == [[grd]]


def test_earth_search_optical_with_an_overridden_sar_collection(es_server):
    profile = get_profile("earth-search", catalog_url=es_server.url, sar_collection="sentinel-1-rtc")
    result = find_scene_sets(profile, IN_JUNE)
    assert [s.to_summary() for s in result.scene_sets] == [
        {
            "optical": "S2A_33TWL_20240601_0_L2A",
            "sar": [S["desc1a"]],
            "dem": [DEM_IDS[1]],
            "overlap": 1.0,
            "time_gap_hours": 19.491,
        }
    ]
    scene = result.scene_sets[0]
    assert scene.asset_keys.optical == {"blue": "blue", "green": "green", "red": "red", "nir": "nir"}
    assert scene.optical.assets["red"].extra_fields["raster:bands"][0]["offset"] == -0.1
    assert profile.modifier is None and profile.resign(scene.optical) is scene.optical


def test_pagination_over_several_pages(pc_server):
    with fx.FaultyProxy(pc_server.url) as proxy:
        result = find_scene_sets(pc_profile(proxy.url), IN_JULY, limits=SearchLimits(page_size=10))
    assert len(result.scene_sets) == 30 and result.rejections == []
    assert all(s.time_gap_hours <= 72 for s in result.scene_sets)
    searches = [path for method, path, _ in proxy.log if method == "POST" and path == "/search"]
    assert len(searches) >= 3 + 1 + 1  # optical in 3+ pages, SAR, DEM


def test_too_many_results_fail_with_advice(pc_server):
    with pytest.raises(CatalogError, match="more than 20 items of 'sentinel-2-l2a' match; narrow"):
        find_scene_sets(pc_profile(pc_server.url), IN_JULY, limits=SearchLimits(page_size=10, max_items=20))


def test_search_survives_throttling_errors_and_slow_answers(pc_server):
    direct = find_scene_sets(pc_profile(pc_server.url), IN_JUNE)
    with fx.FaultyProxy(pc_server.url, ["429:1", "503", "slow:2.5", "ok", "503"]) as proxy:
        began = time.monotonic()
        result = find_scene_sets(pc_profile(proxy.url), IN_JUNE, policy=FAST)
        elapsed = time.monotonic() - began
    assert [s.to_summary() for s in result.scene_sets] == [s.to_summary() for s in direct.scene_sets]
    seen = Counter(e.reason for e in result.retries)
    assert seen["429"] == 1 and seen["503"] == 2 and seen["timeout"] >= 1  # a loaded machine may time out once more
    assert result.retries[0].reason == "429" and result.retries[0].wait_s >= 1.0  # Retry-After honoured
    assert 1.0 <= elapsed < 8.0
    assert (
        result.retry_summary.startswith(f"retried {len(result.retries)} times (") and "1x 429" in result.retry_summary
    )


def test_persistent_failure_gives_up_in_bounded_time(pc_server):
    with fx.FaultyProxy(pc_server.url, always_fail=True) as proxy:
        began = time.monotonic()
        with pytest.raises(
            CatalogError, match=r"could not reach STAC API at .*failed after 3 attempts; last: HTTP 503"
        ):
            find_scene_sets(pc_profile(proxy.url), IN_JUNE, policy=RetryPolicy(max_attempts=3, backoff_base_s=0.05))
        assert time.monotonic() - began < 3


def test_retry_after_beyond_the_time_budget_fails_at_once(pc_server):
    with fx.FaultyProxy(pc_server.url, ["429:60"]) as proxy:
        began = time.monotonic()
        with pytest.raises(CatalogError, match="budget would be exceeded"):
            find_scene_sets(pc_profile(proxy.url), IN_JUNE, policy=RetryPolicy(total_timeout_s=5))
        assert time.monotonic() - began < 2


def test_missing_collection_is_named(pc_server):
    profile = get_profile("planetary-computer", catalog_url=pc_server.url, sar_collection="sentinel-1-grd")
    with pytest.raises(CatalogError, match="collection 'sentinel-1-grd' is not available"):
        find_scene_sets(profile, IN_JUNE)


@pytest.mark.parametrize(
    ("bbox", "start", "end", "message"),
    [
        ((15.4, 45.0, 15.0, 45.3), *JUNE, "west 15.4 must be below east 15"),
        ((15.0, 45.3, 15.4, 95.0), *JUNE, "south 45.3 must be below north 95"),
        (AOI, date(2024, 6, 2), date(2024, 6, 1), "start 2024-06-02 is after end 2024-06-01"),
    ],
)
def test_bad_area_or_period_is_refused_before_any_request(bbox, start, end, message):
    with pytest.raises(InputError, match=message):
        find_scene_sets(get_profile("local", "http://127.0.0.1:9"), build(AreaPeriod, bbox=bbox, start=start, end=end))


def cli(*args: str) -> list[str]:
    return ["search", *args]


def aoi_args(start="2024-06-01", end="2024-06-30") -> list[str]:
    return ["--bbox", *map(str, AOI), "--start", start, "--end", end]


def test_cli_json_against_the_live_server(pc_server, capsys):
    code = main(cli("--profile", "planetary-computer", "--catalog", pc_server.url, *aoi_args(), "--json"))
    captured = capsys.readouterr()
    assert code == 0
    assert [s["optical"] for s in json.loads(captured.out)] == [OPTICAL_IDS["good1"], OPTICAL_IDS["good2"]]
    assert f"rejected {OPTICAL_IDS['cloudy']}: cloud cover 80 > 30" in captured.err.splitlines()
    assert (
        main(
            cli(
                "--profile",
                "planetary-computer",
                "--catalog",
                pc_server.url,
                *aoi_args(),
                "--orbit-state",
                "ascending",
                "--json",
            )
        )
        == 0
    )
    assert [s["sar"] for s in json.loads(capsys.readouterr().out)] == [
        [S["asc1"]],
        [S["desc2"]],
    ]  # a preference: good2 has no ascending pass near


def test_cli_table_and_retry_report(pc_server, capsys):
    with fx.FaultyProxy(pc_server.url, ["ok", "503"]) as proxy:
        code = main(cli("--profile", "planetary-computer", "--catalog", proxy.url, *aoi_args()))
    captured = capsys.readouterr()
    assert code == 0
    lines = captured.out.splitlines()
    assert lines[0].split() == ["optical", "time", "(UTC)", "overlap", "SAR", "gap", "h", "DEM"]
    assert OPTICAL_IDS["good1"] in lines[2] and lines[-1] == "2 scene set(s), 4 rejected"
    assert "catalog: retried 1 times (1x 503)" in captured.err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--bbox", "15.4", "45", "15", "45.3", "--start", "2024-06-01", "--end", "2024-06-30"],
            "bbox west 15.4 must be below east 15",
        ),
        (aoi_args("2024-06-30", "2024-06-01"), "start 2024-06-30 is after end 2024-06-01"),
        (["--profile", "local", *aoi_args()], "the `local` catalog profile needs a STAC API URL"),
    ],
)
def test_cli_bad_input_is_one_line(args, message, capsys):
    assert main(cli(*args)) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and message in err


def test_cli_unreachable_catalog_subprocess():
    url = "http://127.0.0.1:9"  # discard port: nothing listens
    done = subprocess.run(
        [sys.executable, "-m", "dsmar.cli", *cli("--profile", "local", "--catalog", url, *aoi_args(), "--json")],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).parents[1],
    )
    assert done.returncode == 1 and done.stdout == ""  # a failure (exit 1), not bad input (2): it may be down
    assert done.stderr.startswith(f"dsmar search: error: could not reach STAC API at {url}: ")
    assert len(done.stderr.strip().splitlines()) == 1


def test_unusable_items_are_rejected_not_crashed_on(tmp_path):
    cogs = fx.CogWriter(tmp_path)
    keys = get_profile("planetary-computer").asset_keys
    optical = pystac.Item.from_dict(fx.pc_s2(cogs, "o", utc("2024-06-01T10:00:00"), TILE, 5.0))
    point = pystac.Item.from_dict(
        {
            **fx.pc_s2(cogs, "p", utc("2024-06-01T10:00:00"), TILE, 5.0),
            "geometry": {"type": "Point", "coordinates": [15, 45]},
        }
    )
    no_vh = fx.pc_s1_rtc(cogs, "s", utc("2024-06-02T05:30:00"), TILE, "descending")
    del no_vh["assets"]["vh"]
    dem = pystac.Item.from_dict(fx.cop_dem(cogs, 15, 45))
    scene_sets, rejections = pair_scenes(
        [optical, point], [pystac.Item.from_dict(no_vh)], [dem], AOI, SearchConfig(), keys
    )
    assert scene_sets == []
    assert {r.item_id: r.reason for r in rejections} == {
        "s": "SAR item lacks asset(s) vh",
        "o": "no SAR within 3 days",
        "p": "optical item: footprint geometry type 'Point' is not a Polygon or MultiPolygon",
    }


@pytest.mark.parametrize(("asset_grid", "radar"), [(False, True), (True, False)])
def test_grd_metadata_says_radar_geometry_unless_its_assets_have_a_grid(tmp_path, asset_grid, radar):
    record = fx.pc_s1_rtc(fx.CogWriter(tmp_path), "s", utc("2024-06-02T05:30:00"), TILE, "descending")
    record["properties"]["sar:product_type"] = "GRD"  # item-level proj:transform stays, as a bbox-derived one would
    for asset in record["assets"].values():
        if asset_grid:
            asset["proj:transform"] = record["properties"]["proj:transform"]
    keys = get_profile("planetary-computer").asset_keys.sar.values()
    assert in_radar_geometry(pystac.Item.from_dict(record), keys) == radar


@pytest.mark.parametrize(
    ("start", "end", "message"),
    [
        ("2024-06-30", "2024-06-01", "start 2024-06-30 is after end 2024-06-01"),
        ("2024-13-01", "2024-06-30", "--start must be a date YYYY-MM-DD, got '2024-13-01'"),
    ],
)
def test_run_and_search_word_a_bad_period_alike(capsys, tmp_path, start, end, message):
    period = aoi_args(start, end)
    assert main(cli(*period)) == 2
    search = capsys.readouterr().err
    assert main(["run", *period, "--out", str(tmp_path / "cube.zarr")]) == 2
    run = capsys.readouterr().err
    assert search == f"dsmar search: error: {message}\n" and run == f"dsmar run: error: {message}\n"


def test_cli_says_no_items_matched_when_nothing_was_rejected(pc_server, capsys):
    code = main(
        cli("--profile", "planetary-computer", "--catalog", pc_server.url, *aoi_args("2023-01-01", "2023-01-31"))
    )
    assert code == 0
    assert capsys.readouterr().out.strip() == "no scene sets found: no optical items match this bbox and period"


class _NotStac(BaseHTTPRequestHandler):
    """Answers every GET with the (status, content type, body) its server was given: a web page, not an API."""

    def log_message(self, *args) -> None:
        pass

    def do_GET(self) -> None:
        status, content_type, body = self.server.owner.answer
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


PAGE = b"<!DOCTYPE html><html><head><title>Welcome</title></head><body>" + b"<p>news</p>" * 200 + b"</body></html>"


@pytest.mark.parametrize(
    ("answer", "expected"),
    [
        ((200, "text/html", PAGE), "answered a page that is not JSON"),
        ((404, "text/html", PAGE), "answered HTTP 404 Not Found"),
        ((404, "text/plain", b""), "answered HTTP 404 Not Found"),
        ((200, "application/json", b'{"hello": "world"}'), "answered JSON that is not a STAC catalog"),
    ],
)
def test_a_url_that_is_not_a_stac_api_is_one_short_line(answer, expected, capsys):
    server = fx._Server(_NotStac)
    server.answer = answer
    with server:
        assert main(cli("--profile", "local", "--catalog", server.url, *aoi_args())) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and len(err) < 250, err
    assert f"{server.url} {expected}; is it a STAC API?" in err
    assert "<" not in err and "Expecting value" not in err

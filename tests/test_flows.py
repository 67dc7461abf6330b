"""Prefect flows against a real `prefect server` on 127.0.0.1: deployments with schedules, a backfill
appending windows to one cube (and its re-run skipping every chunk), and the no-scene-set error."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from datetime import date

import psutil
import pytest

from flows.windows import split_period
from kernel.config import ClusterConfig, RunConfig, SearchConfig, TileConfig
from tests.conftest import free_port, served_demo_archive, unconfigured


def test_split_period_covers_the_period_once():
    windows = split_period(date(2024, 1, 1), date(2024, 3, 1), 30)
    assert windows[0] == (date(2024, 1, 1), date(2024, 1, 30))
    assert windows[-1][1] == date(2024, 3, 1)
    for (_, b), (a, _) in zip(windows, windows[1:]):
        assert (a - b).days == 1
    assert split_period(date(2024, 1, 1), date(2024, 1, 1), 7) == [(date(2024, 1, 1), date(2024, 1, 1))]


def _region(tmp_path, url="http://127.0.0.1:1", **updates) -> RunConfig:
    values = dict(
        bbox=(14.4, 46.0, 14.6, 46.2),
        start=date(2024, 6, 1),
        end=date(2024, 6, 30),
        out=str(tmp_path / "cube.zarr"),
        search=SearchConfig(profile="local", catalog_url=url),
        method="identity",
        tiles=TileConfig(size=128, halo=16),
    )
    values.update(updates)
    return RunConfig(**values)


def test_deployments_carry_schedule_and_parameters(prefect_api, tmp_path):
    from prefect import get_client

    from flows.deployments import DEFAULT_CRON, region_deployments

    region = _region(tmp_path)
    scheduled, backfill = region_deployments(region, name="test-region")
    ids = [scheduled.apply(), backfill.apply()]
    with get_client(sync_client=True) as client:
        dep = client.read_deployment(ids[0])
        assert dep.name == "test-region"
        assert [s.schedule.cron for s in dep.schedules] == [DEFAULT_CRON]
        assert all(s.active for s in dep.schedules)
        assert RunConfig.model_validate(dep.parameters["region"]) == region
        back = client.read_deployment(ids[1])
        assert back.schedules == [] and back.parameters["window_days"] == 30


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    with served_demo_archive(tmp_path_factory.mktemp("archive"), dates=2) as served:
        yield served


def test_backfill_appends_windows_and_rerun_skips(prefect_api, archive, dask_address, tmp_path):
    from flows.backfill import backfill
    from pipeline.cube import open_cube

    info, url = archive
    region = _region(tmp_path, url, bbox=info.bbox, cluster=ClusterConfig(address=dask_address))
    first = backfill(region, info.start, info.end, window_days=7).runs
    assert [s.scene_sets for s in first if s.scene_sets] == [1, 1]
    assert sum(s.tiles_written for s in first) == 2 * first[0].tiles_per_scene
    ds = open_cube(region.out)
    assert ds.sizes["time"] == 2 and sorted(ds.optical_item.values) == sorted(info.optical_item_ids)
    again = backfill(region, info.start, info.end, window_days=7).runs
    assert sum(s.tiles_written for s in again) == 0
    assert sum(s.tiles_skipped for s in again) == 2 * first[0].tiles_per_scene


def test_no_scene_sets_is_a_notice_naming_why_and_exit_0(prefect_api, archive, dask_address, tmp_path, capsys):
    from dsmar.cli import main

    info, url = archive
    code = main(
        [
            "run",
            "--profile",
            "local",
            "--catalog",
            url,
            "--bbox",
            *map(str, info.bbox),
            "--start",
            "2020-01-01",
            "--end",
            "2020-01-31",
            "--out",
            str(tmp_path / "c.zarr"),
            "--dask-address",
            dask_address,
            "--method",
            "identity",
        ]
    )
    out = capsys.readouterr().out.strip().splitlines()
    assert code == 0
    assert out == [out[-1]] and out[-1].startswith("no scenes to register in") and "no optical items" in out[-1]


def test_unreachable_catalog_is_one_line_without_prefect_traceback(prefect_api, dask_address, tmp_path):
    """As a user sees it: a separate `dsmar run` process, Prefect's own console logging included."""
    argv = [
        sys.executable,
        "-m",
        "dsmar.cli",
        "run",
        "--profile",
        "local",
        "--catalog",
        f"http://127.0.0.1:{free_port()}",
        "--bbox",
        "14.4",
        "46.0",
        "14.6",
        "46.2",
        "--start",
        "2024-06-01",
        "--end",
        "2024-06-30",
        "--out",
        str(tmp_path / "c.zarr"),
        "--dask-address",
        dask_address,
    ]
    done = subprocess.run(
        argv, env={**os.environ, "PREFECT_API_URL": prefect_api}, capture_output=True, text=True, timeout=120
    )
    err = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 1  # a failure, not bad input: the catalog may be down
    assert err == [err[-1]] and err[-1].startswith("dsmar run: error: could not reach STAC API"), err


def _prefect_servers() -> set[int]:
    """Process ids of the `prefect server start` processes below this one."""
    return {p.pid for p in psutil.Process().children(recursive=True) if "server start" in " ".join(p.cmdline())}


def test_a_configured_api_starts_no_temporary_one(prefect_api):
    from flows.api import prefect_api as api

    before = _prefect_servers()
    with api() as url:
        assert url == prefect_api and _prefect_servers() == before


def test_the_temporary_api_serves_each_block_from_its_own_session(tmp_path):
    """No API configured: a temporary server answers inside the block, outside the caller's process group
    (a terminal's Ctrl-C does not reach it), and serves the next block too; it stops at interpreter exit
    (tests/test_interrupt.py: nothing is left running after an interrupted demo)."""
    from prefect import get_client
    from prefect.settings import PREFECT_API_URL

    from flows.api import prefect_api as api

    before = _prefect_servers()
    with unconfigured(tmp_path):
        with api() as url:
            assert PREFECT_API_URL.value() == url
            with get_client(sync_client=True) as client:
                assert client.api_healthcheck() is None
            (pid,) = _prefect_servers() - before
            assert os.getpgid(pid) != os.getpgid(0)
            assert (tmp_path / "prefect.db").exists()
        assert PREFECT_API_URL.value() is None
        with api() as again:
            assert again == url and _prefect_servers() - before == {pid}


def test_importing_the_flows_sets_no_environment_and_the_defaults_yield_to_the_user():
    """A fresh interpreter: importing the flows (and Prefect) leaves the environment alone; the entry points'
    defaults fill in what the user has not set, and the user's own value wins."""
    script = (
        "import logging, os\n"
        "before = dict(os.environ)\n"
        "import flows.deployments\n"
        "assert dict(os.environ) == before, set(os.environ.items()) ^ set(before.items())\n"
        "from flows.environment import apply_defaults\n"
        "apply_defaults()\n"
        "print(os.environ['PREFECT_LOGGING_LEVEL'], os.environ['DO_NOT_TRACK'], logging.getLogger('prefect').level)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_") and k != "DO_NOT_TRACK"}
    env["PREFECT_LOGGING_LEVEL"] = "ERROR"
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split() == ["ERROR", "1", str(logging.ERROR)]


def test_scheduled_region_registers_only_its_look_back(prefect_api, archive, dask_address, tmp_path):
    """The archive holds optical scenes on 4 and 14 June: a 5-day look-back from the 14th takes the second only."""
    from flows.deployments import scheduled_region
    from pipeline.cube import open_cube

    info, url = archive
    region = _region(tmp_path, url, bbox=info.bbox, cluster=ClusterConfig(address=dask_address))
    summary = scheduled_region(region, lookback_days=5, today=date(2024, 6, 14))
    assert summary.scene_sets == 1 and summary.tiles_written == summary.tiles_per_scene
    assert list(open_cube(region.out).optical_item.values) == ["synthetic-optical-20240614T100631"]


def _scene_sets(config: RunConfig):
    from catalogs.colocate import find_scene_sets
    from catalogs.profiles import profile_for

    found = find_scene_sets(profile_for(config.search), config, config.search)
    assert len(found.scene_sets) == 2
    return found.scene_sets


def _with_optical(scene_set, item_id: str, when=None, shift_m: float = 0.0):
    """The scene set with a copy of its optical item: another id, optionally another time or grid origin."""
    from dataclasses import replace

    optical = scene_set.optical.clone()
    optical.id = item_id
    if when is not None:
        optical.datetime = when
    for asset in optical.assets.values():
        transform = asset.extra_fields.get("proj:transform")
        if transform is not None:
            asset.extra_fields["proj:transform"] = [*transform[:2], transform[2] + shift_m, *transform[3:]]
    return replace(scene_set, optical=optical)


def test_plan_cube_keeps_one_scene_per_time_and_grid(archive, tmp_path):
    from flows.register_region import plan_cube

    info, url = archive
    config = _region(tmp_path, url, bbox=info.bbox)
    first, second = _scene_sets(config)
    again = _with_optical(second, "reprocessed", when=first.optical.datetime)
    moved = _with_optical(second, "other-tile", shift_m=5.0)  # half a pixel: another lattice
    cube = plan_cube([first, again, moved, second], config)
    assert [s.optical.id for s in cube.scene_sets] == [first.optical.id, second.optical.id]
    assert cube.skipped == (
        f"reprocessed: same acquisition time as {first.optical.id}, which is kept",
        f"other-tile: optical grid differs from {first.optical.id}'s (another tile or CRS); run it into another --out",
    )
    alone = plan_cube([first], config)
    assert cube.grid == alone.grid and cube.plan == alone.plan and alone.skipped == ()

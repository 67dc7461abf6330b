"""Operations against a real `prefect server` on 127.0.0.1 (the session's `prefect_api`): `dsmar deploy` from a
region file, a scheduled run picked up by a real process worker, a backfill that survives a failed window and
its rerun, exit codes, and a closed pipe. The commands are the ones docs/operations.md shows."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from tests.conftest import REPO, served_demo_archive, unconfigured


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    """Three dates, one in each 10-day window of June 2024, in an archive of this module's own: a test makes one
    SAR asset unreadable for a while."""
    with served_demo_archive(tmp_path_factory.mktemp("ops-archive"), dates=3) as served:
        yield served


def write_region(folder: Path, name: str, archive, dask_address: str, schedule: str = "") -> Path:
    info, url = archive
    path = folder / f"{name}.toml"
    path.write_text(
        f'name = "{name}"\n'
        f"bbox = {list(info.bbox)}\n"
        f'out = "cubes/{name}.zarr"\n'
        f'[catalog]\nprofile = "local"\nurl = "{url}"\n'
        f'[processing]\nmethod = "identity"\ntile_size = 128\nhalo = 16\ndask_address = "{dask_address}"\n'
        f"{schedule}"
    )
    return path


def dsmar(*args: str, api: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    """A `dsmar` command as an operator runs it, in its own process, on the given Prefect API."""
    env = {**os.environ, "PREFECT_API_URL": api, "PYTHONPATH": str(REPO)}
    return subprocess.run(
        [sys.executable, "-m", "dsmar.cli", *args], env=env, capture_output=True, text=True, timeout=timeout
    )


def cube_days(path: Path) -> dict[str, bool]:
    """The cube's days, each with whether every one of its chunks is written."""
    from pipeline.cube import ZarrCubeStore, open_cube

    store = ZarrCubeStore.at(str(path))
    days = [str(t)[:10] for t in open_cube(str(path)).time.values]
    return {day: bool(store.written(index).all()) for index, day in enumerate(days)}


def test_deploy_registers_both_deployments_on_a_process_pool(prefect_api, archive, dask_address, tmp_path, capsys):
    from prefect import get_client

    from dsmar.cli import main
    from flows.deployments import REPO as DEPLOYED_FROM
    from kernel.config import RunConfig

    schedule = '[schedule]\ncron = "30 5 * * 1-5"\ntimezone = "Europe/Ljubljana"\n'
    region = write_region(tmp_path, "deploy-test", archive, dask_address, schedule)
    assert main(["deploy", str(region)]) == 0
    out = capsys.readouterr().out
    assert "Deployment scheduled-region/deploy-test: cron '30 5 * * 1-5' (Europe/Ljubljana)" in out
    assert "prefect worker start --pool dsmar" in out
    with get_client(sync_client=True) as client:
        assert client.read_work_pool("dsmar").type == "process"
        scheduled = client.read_deployment_by_name("scheduled-region/deploy-test")
        backfill = client.read_deployment_by_name("backfill/deploy-test-backfill")
    assert scheduled.work_pool_name == backfill.work_pool_name == "dsmar"
    (cron,) = [s.schedule for s in scheduled.schedules]
    assert (cron.cron, cron.timezone) == ("30 5 * * 1-5", "Europe/Ljubljana")
    assert backfill.schedules == []
    config = RunConfig.model_validate(scheduled.parameters["region"])
    assert config.out == str(tmp_path / "cubes" / "deploy-test.zarr") and config.method == "identity"
    assert config.cluster.address == dask_address and backfill.parameters["region"] == scheduled.parameters["region"]
    working_dir = {"prefect.deployments.steps.set_working_directory": {"directory": str(DEPLOYED_FROM)}}
    assert scheduled.pull_steps == backfill.pull_steps == [working_dir]

    bad = write_region(tmp_path, "bad-cron", archive, dask_address, '[schedule]\ncron = "61 * * * *"\n')
    assert main(["deploy", str(bad)]) == 2
    expected = f"dsmar deploy: error: {bad}: schedule.cron '61 * * * *' is not a cron expression such as '0 6 * * *'"
    assert capsys.readouterr().err.strip() == expected


def test_deploy_without_a_server_is_one_line(archive, dask_address, tmp_path, capsys):
    from dsmar.cli import main

    region = write_region(tmp_path, "no-server", archive, dask_address)
    with unconfigured(tmp_path / "home"):
        assert main(["deploy", str(region)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [err[-1]] and err[-1].startswith("dsmar deploy: error: dsmar deploy needs a Prefect server")


def test_a_scheduled_run_is_picked_up_by_a_worker_and_completes(prefect_api, archive, dask_address, tmp_path):
    from prefect import get_client
    from prefect.states import Scheduled

    info, _ = archive
    region = write_region(tmp_path, "worker-test", archive, dask_address)
    assert dsmar("deploy", str(region), api=prefect_api).returncode == 0
    first_day = info.start  # a run "today" = the first acquisition's day, looking back a week: one scene set
    with get_client(sync_client=True) as client:
        deployment = client.read_deployment_by_name("scheduled-region/worker-test")
        run = client.create_flow_run_from_deployment(
            deployment.id,
            parameters={"today": first_day.isoformat(), "lookback_days": 7},
            state=Scheduled(scheduled_time=datetime.now(UTC) + timedelta(seconds=2)),
        )
    env = {**os.environ, "PREFECT_API_URL": prefect_api, "PYTHONPATH": str(REPO), "PREFECT_WORKER_QUERY_SECONDS": "1"}
    worker = subprocess.run(
        [sys.executable, "-m", "prefect", "worker", "start", "--pool", "dsmar", "--run-once"],
        env=env,
        cwd=tmp_path,  # the deployment's pull step puts the run in the repository
        capture_output=True,
        text=True,
        timeout=240,
    )
    with get_client(sync_client=True) as client:
        state = client.read_flow_run(run.id).state
    assert state.is_completed(), f"{state}\n{worker.stdout[-3000:]}\n{worker.stderr[-3000:]}"
    assert cube_days(tmp_path / "cubes" / "worker-test.zarr") == {first_day.isoformat(): True}


def test_backfill_survives_a_failed_window_and_the_rerun_completes_it(prefect_api, archive, dask_address, tmp_path):
    info, _ = archive
    region = write_region(tmp_path, "backfill-test", archive, dask_address)
    sar = next(p for p in info.root.glob("dsmar-sar/*/vv.tif") if "20240612" in str(p))  # paired with 2024-06-14
    hidden = sar.with_name("vv.tif.hidden")
    shutil.move(sar, hidden)
    try:
        done = dsmar(
            "backfill", str(region), "--from", "2024-06-01", "--to", "2024-06-30", "--window-days", "10",
            api=prefect_api,
        )  # fmt: skip
    finally:
        shutil.move(hidden, sar)
    assert done.returncode == 3, done.stdout + done.stderr
    failed = done.stdout.split("Failed (1 of 3 windows):")[1]
    assert "2024-06-11..2024-06-20" in failed and "2024-06-01..2024-06-10" not in failed, done.stdout
    cube = tmp_path / "cubes" / "backfill-test.zarr"
    assert cube_days(cube) == {"2024-06-04": True, "2024-06-14": False, "2024-06-24": True}
    listed = subprocess.run(
        [sys.executable, "-m", "prefect", "flow-run", "ls", "--flow-name", "backfill", "--state-type", "FAILED"],
        env={**os.environ, "PREFECT_API_URL": prefect_api, "COLUMNS": "250"},
        capture_output=True,
        text=True,
        timeout=120,
    )  # as docs/operations.md monitors it
    assert listed.returncode == 0 and "│ backfill │" in listed.stdout and "FAILED" in listed.stdout, listed.stdout
    (rerun,) = re.findall(r"^\s+(dsmar backfill .*)$", done.stdout, flags=re.M)
    assert rerun == f"dsmar backfill {region} --from 2024-06-11 --to 2024-06-20 --window-days 10"

    again = dsmar(*shlex.split(rerun)[1:], api=prefect_api)
    assert again.returncode == 0, again.stdout + again.stderr
    per_scene = re.search(
        r"^2024-06-01\.\.2024-06-10: 1 scene set\(s\), tiles written (\d+), skipped 0$", done.stdout, re.M
    )
    assert f"2024-06-11..2024-06-20: 1 scene set(s), tiles written {per_scene[1]}, skipped 0" in again.stdout
    assert cube_days(cube) == {"2024-06-04": True, "2024-06-14": True, "2024-06-24": True}


def test_a_quiet_period_is_a_notice_and_exit_0(prefect_api, archive, dask_address, tmp_path):
    region = write_region(tmp_path, "quiet", archive, dask_address)
    done = dsmar("backfill", str(region), "--from", "2020-01-01", "--to", "2020-01-31", api=prefect_api)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1].startswith("no scenes to register in ")


def test_a_closed_pipe_ends_quietly(archive):
    """`dsmar search --json | head -1`, with the reader gone before dsmar writes."""
    info, url = archive
    argv = [sys.executable, "-m", "dsmar.cli", "search", "--profile", "local", "--catalog", url, "--json"]
    argv += ["--bbox", *map(str, info.bbox), "--start", "2024-06-01", "--end", "2024-06-30"]
    reader = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env={**os.environ})
    reader.stdout.close()
    _, err = reader.communicate(timeout=120)
    assert reader.returncode == 141 and b"Traceback" not in err and b"Exception ignored" not in err, err
    shell = subprocess.run(
        f"{shlex.join(argv)} | head -1", shell=True, capture_output=True, text=True, timeout=120
    )  # fmt: skip
    assert shell.stdout.strip() == "[" and "Traceback" not in shell.stderr, shell.stderr


def test_the_cube_lock_holds_threads_of_one_process_apart(tmp_path):
    """A backfill's windows are threads of one process: the cube's lock (an flock on a file each holder opens
    afresh) lets one of them write at a time, as it does for separate processes."""
    from pipeline.cube import ZarrCubeStore

    store = ZarrCubeStore.at(str(tmp_path / "cube.zarr"))
    holders, seen = [], []

    def hold() -> None:
        with store.lock():
            holders.append(threading.get_ident())
            seen.append(len(holders))
            time.sleep(0.1)
            holders.remove(threading.get_ident())

    threads = [threading.Thread(target=hold) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert seen == [1, 1, 1, 1]


@pytest.mark.parametrize(
    ("last_success", "expected"),
    [(None, date(2024, 6, 18)), (date(2024, 6, 29), date(2024, 6, 18)), (date(2024, 5, 20), date(2024, 5, 20))],
)
def test_a_scheduled_run_starts_at_the_last_success_or_the_look_back(last_success, expected):
    from flows.deployments import scheduled_start

    assert scheduled_start(date(2024, 6, 30), 12, last_success) == expected

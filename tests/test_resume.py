"""Resume at the crash point: a real `dsmar run` (its own process group: the CLI, its Dask worker) on a
small generated archive is killed with SIGKILL after k chunk writes, or inside the k-th write after its
data and before its input hash. The rerun writes exactly the chunks the crash left undone, and the
cube then equals one written without interruption, variable by variable, bit for bit.

The crash comes from the test's side: `tests/crash_inject/sitecustomize.py` on the run's PYTHONPATH
wraps the chunk writer in every process of the run and logs each whole chunk write.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import zarr

from pipeline.cube import HASH_VAR, open_cube

REPO = Path(__file__).resolve().parents[1]
INJECT = Path(__file__).with_name("crash_inject")
TILE, HALO = 64, 16
METHOD = "phase"  # a real, fast, deterministic method: a resumed cube can be compared bit for bit
KILLED = -9


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    from catalogs.server import serve_static_catalog
    from datagen.demo_archive import generate_archive

    info = generate_archive(tmp_path_factory.mktemp("archive"), size=256, dates=2, seed=3)
    with serve_static_catalog(info.catalog) as server:
        yield info, server.url


def _run(archive, prefect_api, out: Path, log: Path, *options: str, **crash: int) -> subprocess.CompletedProcess:
    """`dsmar run` in its own session with one worker (writes in a single order); `crash` sets the
    injector's DSMAR_TEST_CRASH_AT / DSMAR_TEST_CRASH_STORES."""
    argv, env = _command(archive, prefect_api, out, log, *options, **crash)
    return subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300, start_new_session=True)


def _command(archive, prefect_api, out: Path, log: Path, *options: str, **crash: int) -> tuple[list[str], dict]:
    """The argv and environment of `_run`'s `dsmar run`."""
    info, url = archive
    argv = [
        sys.executable,
        "-m",
        "dsmar.cli",
        "run",
        "--profile",
        "local",
        "--catalog",
        url,
        "--bbox",
        *map(str, info.bbox),
        "--start",
        str(info.start),
        "--end",
        str(info.end),
        "--out",
        str(out),
        "--method",
        METHOD,
        "--tile-size",
        str(TILE),
        "--halo",
        str(HALO),
        "--workers",
        "1",
        *options,
    ]
    env = {
        **os.environ,
        "PYTHONPATH": f"{INJECT}{os.pathsep}{REPO}",
        "PREFECT_API_URL": prefect_api,
        "DSMAR_TEST_WRITE_LOG": str(log),
    }
    env.update({f"DSMAR_TEST_CRASH_{key.upper()}": str(value) for key, value in crash.items()})
    return argv, env


def _writes(log: Path) -> list[tuple[int, int, int]]:
    """(time, tile row, tile col) of every chunk write that completed, in order."""
    if not log.exists():
        return []
    return [tuple(int(v) for v in line.split(",")) for line in log.read_text().split()]


def _chunk_variables(ds) -> list[str]:
    return [name for name in ds.data_vars if ds[name].dims[-2:] == ("y", "x")]


@pytest.fixture(scope="module")
def reference(archive, prefect_api, tmp_path_factory):
    """The cube written without interruption, the chunks that run wrote, and what it printed."""
    root = tmp_path_factory.mktemp("reference")
    done = _run(archive, prefect_api, root / "cube.zarr", root / "writes", "--report", str(root / "report"))
    assert done.returncode == 0, done.stderr[-3000:]
    writes = _writes(root / "writes")
    assert len(writes) == len(set(writes)) == 2 * 16  # two dates, 4 x 4 tiles
    return root / "cube.zarr", set(writes), done.stdout


def test_a_run_prints_its_summary_and_writes_its_report(reference):
    """`dsmar run`'s success path as a user sees it: exit 0 (checked by the fixture), the summary, the report."""
    cube, _, stdout = reference
    lines = stdout.strip().splitlines()
    assert lines[0] == "Scene sets: 2; tiles per scene: 16; tiles written: 32, skipped (up to date): 0"
    assert any(line.startswith("SAR field vs injected truth: median EPE ") for line in lines)
    assert lines[-2:] == [f"Cube: {cube}", f"Report: {cube.parent / 'report' / 'report.md'}"]
    report = (cube.parent / "report" / "report.md").read_text()
    boards = sorted((cube.parent / "report").glob("*_sar_checkerboard.png"))  # one per date, named by it
    assert lines[0] in report and len(boards) == 2 and all(f"({board.name})" in report for board in boards)
    assert all(board.stat().st_size > 1000 for board in boards)


RUN_SPECIFIC = ("flow_run_id",)  # which flow run last wrote each time: a rerun is another run


def _assert_same_cube(path: Path, reference: Path) -> None:
    ds, ref = open_cube(str(path)), open_cube(str(reference))
    assert set(ds.data_vars) == set(ref.data_vars)
    assert all(ds[name].values.all() for name in RUN_SPECIFIC)  # recorded, whatever run wrote it
    for name in set(ref.data_vars) - set(RUN_SPECIFIC):
        a, b = ds[name].values, ref[name].values
        if a.dtype.kind == "f":
            assert np.array_equal(a, b, equal_nan=True), f"{name} differs from the uninterrupted run"
        else:
            assert (a == b).all(), f"{name} differs from the uninterrupted run"


@pytest.mark.parametrize(
    "crash_at,stores,label",
    [
        (5, None, "after 5 whole chunk writes"),
        (20, "data", "in the 20th write, its data stored and its hash not"),
    ],
)
def test_a_killed_run_resumes_with_exactly_the_missing_chunks(
    archive, prefect_api, reference, tmp_path, crash_at, stores, label
):
    ref_path, all_chunks, _ = reference
    out = tmp_path / "cube.zarr"
    crash = {"at": crash_at}
    if stores is not None:
        n_data = len(_chunk_variables(open_cube(str(ref_path))))
        crash["stores"] = n_data if stores == "data" else stores
    crashed = _run(archive, prefect_api, out, tmp_path / "crashed", **crash)
    assert crashed.returncode == KILLED, f"the run was not killed {label}: {crashed.stderr[-3000:]}"
    whole = _writes(tmp_path / "crashed")
    assert len(whole) == (crash_at if stores is None else crash_at - 1)
    open_cube(str(out))  # a killed run leaves a cube that opens

    rerun = _run(archive, prefect_api, out, tmp_path / "rerun")
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    redone = _writes(tmp_path / "rerun")
    assert len(redone) == len(set(redone))
    assert set(redone) == all_chunks - set(whole), f"killed {label}: the rerun wrote other chunks than the missing"
    _assert_same_cube(out, ref_path)


def test_a_changed_halo_redoes_every_chunk(archive, prefect_api, reference, tmp_path):
    """The halo shapes every tile's field: a rerun with another one rewrites every chunk."""
    ref_path, all_chunks, _ = reference
    out = tmp_path / "cube.zarr"
    shutil.copytree(ref_path, out)
    before = zarr.open_group(str(out), mode="r")[HASH_VAR][...]
    done = _run(archive, prefect_api, out, tmp_path / "writes", "--halo", str(HALO // 2))
    assert done.returncode == 0, done.stderr[-3000:]
    assert set(_writes(tmp_path / "writes")) == all_chunks
    after = zarr.open_group(str(out), mode="r")[HASH_VAR][...]
    assert (after != before).all() and (after != 0).all()


def test_a_changed_tile_size_is_refused_in_one_line_and_the_cube_kept(archive, prefect_api, reference, tmp_path):
    ref_path, _, _ = reference
    out = tmp_path / "cube.zarr"
    shutil.copytree(ref_path, out)
    refused = _run(archive, prefect_api, out, tmp_path / "writes", "--tile-size", str(2 * TILE))
    lines = refused.stderr.strip().splitlines()
    assert refused.returncode == 2 and len(lines) == 1, refused.stderr[-3000:]
    assert lines[0].startswith("dsmar run: error: ") and "tile" in lines[0]
    assert _writes(tmp_path / "writes") == []
    _assert_same_cube(out, ref_path)


def test_two_runs_started_at_once_on_one_cube_leave_it_equal_to_a_single_run(archive, prefect_api, reference, tmp_path):
    """The cube lock lets one run write; the other waits, then finds every chunk up to date."""
    ref_path, all_chunks, _ = reference
    out = tmp_path / "cube.zarr"
    runs = []
    for k in range(2):
        argv, env = _command(archive, prefect_api, out, tmp_path / f"writes-{k}")
        runs.append(subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     start_new_session=True))  # fmt: skip
    done = [run.communicate(timeout=600) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], [err[-3000:] for _, err in done]
    writes = [_writes(tmp_path / f"writes-{k}") for k in range(2)]
    assert sorted(writes[0] + writes[1]) == sorted(all_chunks)  # each chunk written once, by one of the runs
    assert sorted(len(w) for w in writes) == [0, len(all_chunks)]
    assert sum("being written by another run; waiting" in err for _, err in done) == 1
    _assert_same_cube(out, ref_path)

"""`dsmar run --dask-address` against a real `dask scheduler` and `dask worker` processes on loopback, the
workers started in another directory than the run, as an operator scaling out would start them:
a relative --out gives the local cluster's cube, a worker that cannot write the store stops the run in one
line before a cube exists, and a worker killed mid-run leaves the remaining one to finish the same cube.

One demo archive (2 dates, 246 px, tiles of 128 px: 4 chunks a date) and the cheap `cfog` method keep it short.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import zarr

from dsmar.cli import main
from pipeline.cube import HASH_VAR, open_cube
from pipeline.object_store import zarr_store
from tests.conftest import REPO, free_port
from tests.s3_server import s3_server

METHOD = "cfog"
NOBODY = 65534  # the unprivileged account every Linux has


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    from catalogs.server import serve_static_catalog
    from datagen.demo_archive import generate_archive

    info = generate_archive(tmp_path_factory.mktemp("archive"), size=256, dates=2, seed=3)
    with serve_static_catalog(info.catalog) as server:
        yield info, server.url


def _argv(archive, out: str, *cluster: str) -> list[str]:
    info, url = archive
    area = ["--bbox", *map(str, info.bbox), "--start", str(info.start), "--end", str(info.end)]
    tiles = ["--tile-size", "128", "--halo", "16", "--method", METHOD]
    return ["run", "--profile", "local", "--catalog", url, *area, "--out", out, *tiles, *cluster]


@pytest.fixture(scope="module")
def reference(prefect_api, archive, tmp_path_factory) -> Path:
    """The cube of the same run on a local cluster started by dsmar itself."""
    out = tmp_path_factory.mktemp("local") / "cube.zarr"
    assert main(_argv(archive, str(out), "--workers", "1")) == 0
    return out


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "CUDA_VISIBLE_DEVICES": ""}


@contextmanager
def _process(argv: list[str], cwd: Path, **popen) -> Iterator[subprocess.Popen]:
    log = open(cwd / f"{argv[argv.index('-m') + 1].rsplit('.', 1)[-1]}-{time.monotonic_ns()}.log", "w")
    process = subprocess.Popen(argv, cwd=cwd, env=popen.pop("env", _env()), stdout=log, stderr=log, **popen)
    try:
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        log.close()


@contextmanager
def _scheduler(cwd: Path) -> Iterator[str]:
    port = free_port()
    argv = [sys.executable, "-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1", "--port", str(port)]
    with _process([*argv, "--dashboard-address", "127.0.0.1:0"], cwd):
        yield f"tcp://127.0.0.1:{port}"


@contextmanager
def _worker(address: str, cwd: Path, account: list[str] = (), **popen) -> Iterator[subprocess.Popen]:
    """One single-threaded worker without a nanny (a killed worker stays dead), run from `cwd`, under the
    account `account` (a command prefix) switches to."""
    argv = [sys.executable, "-m", "distributed.cli.dask_worker", address, "--nthreads", "1", "--no-nanny"]
    with _process([*account, *argv, "--local-directory", str(cwd), "--name", cwd.name], cwd, **popen) as process:
        yield process


def _wait_for_workers(address: str, count: int) -> dict[str, int]:
    """Worker address -> pid, once `count` workers have joined."""
    from distributed import Client

    with Client(address, timeout="30s") as client:
        client.wait_for_workers(count, timeout=60)
        return client.run(os.getpid)


def _group(cube: Path | str) -> zarr.Group:
    where = str(cube)
    return zarr.open_group(zarr_store(where, read_only=True) if "://" in where else where, mode="r")


def _assert_same_cube(got: Path | str, expected: Path) -> None:
    a, b = open_cube(str(got)), open_cube(str(expected))
    assert sorted(a.data_vars) == sorted(b.data_vars)
    for name in b.data_vars:
        if name != "flow_run_id":  # the run that wrote each date: differs between any two runs
            np.testing.assert_array_equal(a[name].values, b[name].values, err_msg=name)
    hashes = [np.asarray(_group(p)[HASH_VAR]) for p in (got, expected)]
    assert (hashes[0] != 0).all()
    np.testing.assert_array_equal(*hashes)


def test_relative_out_on_workers_elsewhere_gives_the_local_cube(reference, archive, tmp_path, monkeypatch):
    """The run resolves `runs/cube.zarr` against its own directory; the workers, started in another, write there."""
    client_dir, worker_dir = tmp_path / "client", tmp_path / "worker"
    client_dir.mkdir(), worker_dir.mkdir()
    monkeypatch.chdir(client_dir)
    with _scheduler(worker_dir) as address, _worker(address, worker_dir):
        _wait_for_workers(address, 1)
        assert main(_argv(archive, "runs/cube.zarr", "--dask-address", address)) == 0
    _assert_same_cube(client_dir / "runs" / "cube.zarr", reference)
    assert not (worker_dir / "runs").exists()


def test_workers_elsewhere_write_the_same_cube_on_s3(reference, archive, tmp_path, monkeypatch):
    """The same with the cube on a loopback S3 server: the workers, started with the operator's AWS_* environment
    in another directory, write through it and the cube equals the local cluster's."""
    client_dir, worker_dir = tmp_path / "client", tmp_path / "worker"
    client_dir.mkdir(), worker_dir.mkdir()
    monkeypatch.chdir(client_dir)
    with s3_server(bucket="dsmar-workers") as s3, _scheduler(worker_dir) as address, _worker(address, worker_dir):
        _wait_for_workers(address, 1)
        assert main(_argv(archive, s3.url("runs/cube.zarr"), "--dask-address", address)) == 0
        _assert_same_cube(s3.url("runs/cube.zarr"), reference)
    assert list(client_dir.iterdir()) == [] and not (worker_dir / "runs").exists()


@pytest.mark.skipif(os.geteuid() != 0, reason="starting a worker under another account needs root")
@pytest.mark.filterwarnings("ignore:Mismatched versions found")  # the venv's python, run by another account
def test_worker_that_cannot_write_the_store_stops_the_run_in_one_line(archive, prefect_api, capsys):
    """A real permission difference: the worker runs under the unprivileged `nobody` account, the output folder
    belongs to root with mode 0755 (visible to the worker, writable only by the run). The run stops before the
    cube is created, naming the worker."""
    shared = Path(tempfile.mkdtemp(prefix="dsmar-store-"))
    worker_dir = Path(tempfile.mkdtemp(prefix="dsmar-nobody-"))
    try:
        shared.chmod(0o755)
        os.chown(worker_dir, NOBODY, NOBODY)
        nobody = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
        env = {**_env(), "HOME": str(worker_dir), "MPLCONFIGDIR": str(worker_dir)}
        with _scheduler(worker_dir) as address, _worker(address, worker_dir, account=nobody, env=env):
            workers = _wait_for_workers(address, 1)
            capsys.readouterr()
            assert main(_argv(archive, str(shared / "cube.zarr"), "--dask-address", address)) != 0
        lines = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
        assert len(lines) == 1, lines
        (worker,) = workers
        assert worker in lines[0] and "not writable here" in lines[0] and str(shared) in lines[0]
        assert [p.name for p in shared.iterdir() if not p.name.startswith(".cube.zarr.lock")] == []
    finally:
        shutil.rmtree(shared), shutil.rmtree(worker_dir)


def test_worker_killed_mid_run_leaves_the_rest_to_finish_the_same_cube(reference, archive, tmp_path, capsys):
    """Two workers; once the first chunk's bookkeeping is written, one of them is killed with SIGKILL. The
    scheduler gives its tasks (and the data it held) to the other, and the cube comes out whole and equal.
    The scene sets run one after the other, so the second date is always left to the remaining worker."""
    out = tmp_path / "cube.zarr"
    dirs = [tmp_path / "w1", tmp_path / "w2"]
    for d in dirs:
        d.mkdir()
    killed: list[tuple[int, int]] = []  # (pid, chunks written when it was killed)

    def kill_after_first_chunk(pid: int) -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                written = int((np.asarray(zarr.open_group(str(out), mode="r")[HASH_VAR]) != 0).sum())
            except Exception:  # not created yet (it is built beside its path and renamed into place)
                written = 0
            if written:
                os.kill(pid, signal.SIGKILL)
                killed.append((pid, written))
                return
            time.sleep(0.02)

    with _scheduler(tmp_path) as address, _worker(address, dirs[0]), _worker(address, dirs[1]) as victim:
        _wait_for_workers(address, 2)
        watcher = threading.Thread(target=kill_after_first_chunk, args=(victim.pid,), daemon=True)
        watcher.start()
        assert main(_argv(archive, str(out), "--dask-address", address)) == 0
        watcher.join(timeout=5)
        assert victim.wait(timeout=10) == -signal.SIGKILL
    ((pid, written),) = killed
    assert "1 worker(s) left the cluster during the run" in capsys.readouterr().err  # its CPU is missing: said
    total = np.asarray(zarr.open_group(str(out), mode="r")[HASH_VAR]).size
    assert written < total, "the worker was killed only after the last chunk: nothing was left to take over"
    _assert_same_cube(out, reference)

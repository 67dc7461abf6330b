"""The cluster's shape and checks as pure decisions: the local cluster for a host's GPUs and dask-cuda, the options
validated once, the worker preflight's comparison, the store's own reachability, and the progress line's maths."""

from __future__ import annotations

import os
import subprocess
import sys
from datetime import datetime

import pystac
import pytest

from dsmar.cli import build_parser
from dsmar.commands.run import cluster_config
from kernel.config import ClusterConfig, build
from kernel.errors import InputError
from pipeline.cluster import LocalClusterPlan, plan_local_cluster
from pipeline.cube import ZarrCubeStore
from pipeline.load_meta import absolute_href
from pipeline.preflight import WorkerFacts, differences, mismatch
from pipeline.progress import TileProgress, TileRate, duration
from tests.conftest import REPO


@pytest.mark.parametrize(
    ("gpus", "dask_cuda", "workers", "threads", "expected"),
    [
        (0, False, None, None, LocalClusterPlan(False, 8, 1)),
        (0, True, 3, 2, LocalClusterPlan(False, 3, 2)),
        (2, True, None, None, LocalClusterPlan(True, 2, 4)),  # one worker per GPU, the cores shared out
        (4, True, 1, None, LocalClusterPlan(True, 1, 8)),  # --workers 1: one of the GPUs
        (2, True, 2, 1, LocalClusterPlan(True, 2, 1)),
    ],
)
def test_local_cluster_plan(gpus, dask_cuda, workers, threads, expected):
    config = ClusterConfig(workers=workers, threads_per_worker=threads)
    assert plan_local_cluster(config, gpus, dask_cuda, cores=8) == expected


def test_more_workers_than_gpus_is_refused_in_one_line():
    with pytest.raises(InputError, match=r"^--workers 3 asks for more GPU workers than the 2 GPU\(s\)") as err:
        plan_local_cluster(ClusterConfig(workers=3), gpus=2, dask_cuda=True, cores=8)
    assert "\n" not in str(err.value)


def test_gpus_without_dask_cuda_run_cpu_workers_with_a_notice():
    """Not a silent fallback: the notice says why, and the CPU workers keep torch off the GPUs."""
    plan = plan_local_cluster(ClusterConfig(), gpus=2, dask_cuda=False, cores=8)
    assert (plan.gpu, plan.workers, plan.threads_per_worker, plan.hide_gpus) == (False, 8, 1, True)
    assert "2 GPU(s) visible but dask-cuda does not import" in plan.notice and "dsmar[gpu]" in plan.notice
    assert "\n" not in plan.notice
    assert plan_local_cluster(ClusterConfig(), gpus=0, dask_cuda=False, cores=8).notice is None


def _run_args(*extra: str):
    base = ["run", "--profile", "local", "--catalog", "http://x", "--bbox", "0", "0", "1", "1"]
    return build_parser().parse_args([*base, "--start", "2024-01-01", "--end", "2024-01-02", "--out", "o.zarr", *extra])


def test_cluster_options_reach_the_config():
    config = cluster_config(_run_args("--workers", "2", "--threads-per-worker", "3", "--memory-limit", "4GiB"))
    assert config == ClusterConfig(workers=2, threads_per_worker=3, memory_limit="4GiB")


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"memory_limit": "lots"}, "--memory-limit must be a size such as 4GiB or 1500MB, got 'lots'"),
        ({"memory_limit": "1MB"}, "--memory-limit 1MB is below 64MiB"),
        ({"threads_per_worker": 0}, "--threads-per-worker 0"),
    ],
)
def test_cluster_options_are_one_line_errors(values, message):
    with pytest.raises(InputError) as err:
        build(ClusterConfig, **values)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_local_cluster_options_beside_a_scheduler_are_refused():
    args = _run_args("--dask-address", "tcp://h:8786", "--workers", "2", "--memory-limit", "4GiB")
    with pytest.raises(InputError, match=r"^--workers, --memory-limit shape a local cluster; with --dask-address"):
        cluster_config(args)


HERE = WorkerFacts("1.0", "aa")


def test_preflight_names_the_first_worker_and_every_difference():
    workers = {
        "tcp://10.0.0.2:1": WorkerFacts("1.1", "bb", store_problem="/data is not writable here (Permission denied)"),
        "tcp://10.0.0.1:1": HERE,
        "tcp://10.0.0.3:1": WorkerFacts("1.0", "aa", method_problem="WeightsError: missing"),
    }
    line = mismatch(HERE, workers, "/data/c.zarr")
    assert line.startswith("Dask worker tcp://10.0.0.2:1 (and 1 more worker(s)): cannot write the cube /data/c.zarr: ")
    assert "dsmar 1.1 there, 1.0 here" in line and "weights sha256 bb there, aa here" in line
    assert "\n" not in line
    assert differences(HERE, workers["tcp://10.0.0.3:1"], "x") == ["cannot resolve the method: WeightsError: missing"]
    assert mismatch(HERE, {"tcp://10.0.0.1:1": HERE}, "x") is None


def test_preflight_reports_a_worker_whose_check_failed():
    line = mismatch(HERE, {"tcp://w:1": ModuleNotFoundError("No module named 'pipeline.preflight'")}, "x")
    assert line.startswith("Dask worker tcp://w:1: the check failed there (ModuleNotFoundError: ")


def test_store_reachability_of_local_paths(tmp_path):
    assert ZarrCubeStore.at(str(tmp_path / "new.zarr")).check_reachable() is None
    assert list(tmp_path.iterdir()) == []  # the probe is gone
    assert "is not a folder here" in ZarrCubeStore.at(str(tmp_path / "no" / "c.zarr")).check_reachable()
    (tmp_path / "file").write_text("")
    assert "is not a folder here" in ZarrCubeStore.at(str(tmp_path / "file" / "c.zarr")).check_reachable()


def test_store_reachability_of_urls():
    assert ZarrCubeStore.at("memory://bucket/c.zarr").check_reachable() is None  # a probe object goes in and out
    assert "unknown URL scheme" in ZarrCubeStore.at("nosuchfs://bucket/c.zarr").check_reachable()


def test_rate_and_eta():
    rate = TileRate(megapixels=120 * 0.1176, started=100.0)
    assert rate.line(TileProgress(0, 160, 0, 120), 100.0) == "tiles 0/120 written, 0/160 registered (0 %)"
    # registration runs ahead: the run shows life and an ETA before its first chunk is written
    assert (
        rate.line(TileProgress(28, 160, 0, 120), 110.0)
        == "tiles 0/120 written, 28/160 registered (10 %), 0.14 MP/s, ETA 90 s"
    )
    assert (
        rate.line(TileProgress(100, 160, 40, 120), 135.0)
        == "tiles 40/120 written, 100/160 registered (50 %), 0.2 MP/s, ETA 35 s"
    )
    assert (
        rate.line(TileProgress(160, 160, 120, 120), 160.0)
        == "tiles 120/120 written, 160/160 registered (100 %), 0.24 MP/s, in 60 s"
    )
    assert TileProgress(0, 0, 0, 0).share == 1.0


@pytest.mark.parametrize(("seconds", "text"), [(44.2, "44 s"), (720, "12 min"), (12600, "3.5 h")])
def test_duration(seconds, text):
    assert duration(seconds) == text


SCRIPT = REPO / "scripts" / "gpu_cluster_check.sh"


def test_gpu_check_script_parses_and_stops_in_one_line_without_a_gpu(tmp_path):
    """The CPU side of the prepared GPU check: it is valid bash, and a host without a GPU is one line, no archive."""
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0
    env = {**os.environ, "PYTHON": sys.executable, "CUDA_VISIBLE_DEVICES": ""}
    for extra, message in (({}, "set OUT"), ({"OUT": str(tmp_path)}, "no GPU visible")):
        done = subprocess.run([str(SCRIPT)], env={**env, **extra}, capture_output=True, text=True, timeout=120)
        assert done.returncode == 2 and done.stderr.splitlines() == [done.stderr.strip()]
        assert done.stderr.startswith(f"gpu_cluster_check: {message}")
    assert list(tmp_path.iterdir()) == []


def test_a_relative_asset_href_is_made_absolute_on_the_client(tmp_path, monkeypatch):
    """An item without a self link keeps a relative asset href; workers elsewhere get it from the client's folder."""
    monkeypatch.chdir(tmp_path)
    item = pystac.Item("a", None, None, datetime(2024, 1, 1), {}, assets={"b": pystac.Asset("data/b.tif")})
    assert absolute_href(item, "b") == f"file://{tmp_path}/data/b.tif"

"""Cluster choice: GPUs counted by NVML (none when CUDA_VISIBLE_DEVICES is empty), a local CPU cluster
otherwise, an existing scheduler when given; an unreachable scheduler is one line."""

from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import socket
import subprocess
import time
import warnings

import dask
import dask.array
import pytest

from kernel.config import ClusterConfig
from kernel.errors import DsmarError
from pipeline.cluster import (
    check_scheduler,
    count_gpus,
    dask_client,
    plan_local_cluster,
    start_local_cluster,
    warmed_workers,
)


def _gpus_on_the_driver() -> int:
    """GPUs the NVIDIA driver lists, asked through its own tool (which ignores CUDA_VISIBLE_DEVICES)."""
    smi = shutil.which("nvidia-smi")
    if smi is None:
        return 0
    listed = subprocess.run([smi, "-L"], capture_output=True, text=True, timeout=60)
    return sum(line.startswith("GPU ") for line in listed.stdout.splitlines()) if listed.returncode == 0 else 0


def test_gpus_are_counted_as_the_driver_lists_them(monkeypatch):
    """On a machine without a driver NVML's own error is the path taken; on a GPU machine, its count."""
    import pynvml

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    driver = _gpus_on_the_driver()
    if driver == 0:
        with pytest.raises(pynvml.NVMLError):
            pynvml.nvmlInit()
    assert count_gpus() == driver


@pytest.mark.parametrize("visible", ["", " ", "0", "0,1", ",".join(map(str, range(64)))])
def test_cuda_visible_devices_caps_the_count(monkeypatch, visible):
    """An empty CUDA_VISIBLE_DEVICES hides every GPU (dask-cuda would count one); a list caps the count."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", visible)
    listed = [v for v in visible.split(",") if v.strip()]
    assert count_gpus() == min(_gpus_on_the_driver(), len(listed))


def test_local_cluster_then_existing_scheduler(monkeypatch, caplog):
    """The local cluster takes the worker options; each client says where the dashboard is."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    caplog.set_level(logging.INFO, logger="dsmar")
    config = ClusterConfig(workers=1, threads_per_worker=2, memory_limit="512MiB")
    # dsmar's clients never become dask's default scheduler (process-wide state that clients closed out of order
    # would leave pointing at a closed one): nested or not, the setting stays as it was and dask computes here.
    before = dask.config.get("scheduler", None)
    with dask_client(config) as client:
        assert type(client.cluster).__name__ == "LocalCluster"
        (worker,) = client.scheduler_info()["workers"].values()
        assert (worker["nthreads"], worker["memory_limit"]) == (2, 512 * 2**20)
        assert client.submit(sum, [1, 2, 3]).result() == 6
        address = client.scheduler.address
        with dask_client(ClusterConfig(address=address)) as second:
            assert second.submit(max, [4, 5]).result() == 5
            assert dask.config.get("scheduler", None) == before
    assert dask.config.get("scheduler", None) == before
    assert dask.array.ones(4, chunks=2).sum().compute() == 4
    links = re.findall(r"Dask dashboard: (http://127\.0\.0\.1:\d+/status)", caplog.text)
    assert len(links) == 2 and links[0] == links[1] and not links[0].endswith(":8787/status")


def test_unreachable_scheduler_is_a_dsmar_error():
    with pytest.raises(DsmarError, match="cannot reach the Dask scheduler"):
        with dask_client(ClusterConfig(address="tcp://127.0.0.1:9", connect_timeout_s=2)):
            pass


def test_malformed_scheduler_address_is_a_dsmar_error():
    with pytest.raises(DsmarError, match="cannot reach the Dask scheduler at foo:::bar"):
        with dask_client(ClusterConfig(address="foo:::bar", connect_timeout_s=2)):
            pass


def test_local_cluster_keeps_off_8787_and_workers_ignore_ctrl_c(monkeypatch):
    """Another Dask's dashboard port stays untouched (no 'Port 8787 is already in use'), and workers
    ignore SIGINT: a terminal's Ctrl-C reaches the whole process group, the main process shuts them down."""
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with socket.socket() as other_dask, warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            other_dask.bind(("127.0.0.1", 8787))
            other_dask.listen()
        except OSError:
            pass  # something holds 8787 already: the same situation
        with dask_client(ClusterConfig(workers=1)) as client:
            http = client.cluster.scheduler.http_server
            assert http.port != 8787 and http.address == "127.0.0.1"
            assert set(client.run(signal.getsignal, signal.SIGINT).values()) == {signal.SIG_IGN}
    assert not [w for w in caught if "8787" in str(w.message)]


def test_an_interrupt_during_a_result_transfer_logs_no_traceback(monkeypatch, caplog):
    """Ctrl-C while `as_completed` fetches a finished tile's result: the client closes under the transfer, and
    neither its cut connection nor the scheduler's failed gather is logged as an error."""
    import numpy as np
    from distributed import as_completed

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    caplog.set_level(logging.WARNING)
    with pytest.raises(KeyboardInterrupt), dask_client(ClusterConfig(workers=1, threads_per_worker=1)) as client:
        result = client.submit(np.ones, 25_000_000)  # 200 MB: its transfer is still running when the block ends
        as_completed([result], loop=client.loop, with_results=True)
        deadline = time.monotonic() + 60
        while result.status == "pending" and time.monotonic() < deadline:
            time.sleep(0.001)
        assert result.status == "finished", result.status
        raise KeyboardInterrupt
    assert not [r for r in caplog.records if r.levelno >= logging.ERROR], caplog.text


def test_scheduler_checks_fail_fast():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    for address in (closed, "foo:::bar", "tcp://"):
        with pytest.raises(DsmarError, match=f"cannot reach the Dask scheduler at {re.escape(address)}"):
            check_scheduler(address, timeout_s=2)
    with socket.socket() as listening:
        listening.bind(("127.0.0.1", 0))
        listening.listen()
        check_scheduler(f"tcp://127.0.0.1:{listening.getsockname()[1]}")


WARMED: list[str] = []  # what in-process workers' warm-ups did


def _warm() -> None:
    WARMED.append("warm")


def test_each_worker_is_warmed_once_and_the_plugin_leaves_with_the_run():
    """The method is loaded once per worker before its first tile; a long-lived scheduler does not keep the plugin."""
    from distributed import Client, LocalCluster

    WARMED.clear()
    options = dict(n_workers=2, threads_per_worker=2, processes=False, dashboard_address="127.0.0.1:0")
    with dask.config.set(scheduler=None), LocalCluster(**options) as cluster, Client(cluster) as client:
        with warmed_workers(client, _warm):
            assert WARMED == ["warm", "warm"]
            assert "dsmar-warm" in client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.worker_plugins)
        assert "dsmar-warm" not in client.run_on_scheduler(lambda dask_scheduler: dask_scheduler.worker_plugins)


def test_cpu_workers_on_a_gpu_host_see_no_gpu(monkeypatch):
    """Where dask-cuda is missing the plan hides the GPUs: CPU workers never put torch on a shared GPU."""
    from distributed import Client

    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    plan = plan_local_cluster(ClusterConfig(workers=1), gpus=1, dask_cuda=False, cores=1)
    with dask.config.set(scheduler=None), start_local_cluster(plan, ClusterConfig()) as cluster, Client(cluster) as c:
        # A lambda: `os.environ.get` itself would travel with this process's environment.
        assert list(c.run(lambda: os.environ.get("CUDA_VISIBLE_DEVICES")).values()) == [""]

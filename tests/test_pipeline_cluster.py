"""Cluster choice: GPUs counted by NVML (none when CUDA_VISIBLE_DEVICES is empty), a local CPU cluster
otherwise, an existing scheduler when given; an unreachable scheduler is one line."""

from __future__ import annotations

import re
import socket

import pytest

from dsmar.config import ClusterConfig
from dsmar.errors import DsmarError
from pipeline.cluster import check_scheduler, count_gpus, dask_client


def test_empty_cuda_visible_devices_means_no_gpu(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    assert count_gpus() == 0


def test_local_cluster_then_existing_scheduler(monkeypatch):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    with dask_client(ClusterConfig(workers=1)) as client:
        assert type(client.cluster).__name__ == "LocalCluster"
        assert client.submit(sum, [1, 2, 3]).result() == 6
        address = client.scheduler.address
        with dask_client(ClusterConfig(address=address)) as second:
            assert second.submit(max, [4, 5]).result() == 5


def test_unreachable_scheduler_is_a_dsmar_error():
    with pytest.raises(DsmarError, match="cannot reach the Dask scheduler"):
        with dask_client(ClusterConfig(address="tcp://127.0.0.1:9", connect_timeout_s=2)):
            pass


def test_malformed_scheduler_address_is_a_dsmar_error():
    with pytest.raises(DsmarError, match="cannot reach the Dask scheduler at foo:::bar"):
        with dask_client(ClusterConfig(address="foo:::bar", connect_timeout_s=2)):
            pass


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

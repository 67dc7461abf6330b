"""Where the tiles run: an existing Dask scheduler, GPU workers (dask-cuda), or a local CPU cluster."""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager

from dsmar.config import ClusterConfig
from dsmar.errors import DsmarError


def count_gpus() -> int:
    """GPUs NVML can see, honouring CUDA_VISIBLE_DEVICES; 0 on any error (no driver, no library).

    Not `dask_cuda.utils.get_n_gpus()`: it counts CUDA_VISIBLE_DEVICES="" as one GPU.
    """
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None and not visible.strip():
        return 0
    try:
        import pynvml

        pynvml.nvmlInit()
        try:
            found = pynvml.nvmlDeviceGetCount()
        finally:
            pynvml.nvmlShutdown()
    except Exception:  # noqa: BLE001  any NVML failure means "no usable GPU"
        return 0
    if visible is not None:
        return min(found, len([v for v in visible.split(",") if v.strip()]))
    return int(found)


def default_workers() -> int:
    """One single-threaded worker per core: the registration methods are CPU-bound numpy/torch."""
    return max(1, os.cpu_count() or 1)


def check_scheduler(address: str, timeout_s: float = 5.0) -> None:
    """Fail in seconds, before any work, when a TCP scheduler address is malformed or nothing listens there.

    Other protocols (tls, ucx, ...) are left to the client's own connect.
    """
    from distributed.comm import parse_address, parse_host_port

    try:
        protocol, location = parse_address(address)
        if protocol != "tcp":
            return
        host, port = parse_host_port(location)
    except (TypeError, ValueError) as err:
        raise DsmarError(f"cannot reach the Dask scheduler at {address}: {err}") from None
    try:
        socket.create_connection((host, port), timeout=timeout_s).close()
    except OSError as err:
        reason = err.strerror or str(err) or type(err).__name__
        raise DsmarError(f"cannot reach the Dask scheduler at {address}: {reason}") from None


@contextmanager
def dask_client(config: ClusterConfig) -> Iterator[object]:
    """A connected `distributed.Client`; a cluster started here is closed on exit."""
    from distributed import Client, LocalCluster

    if config.address:
        try:
            client = Client(config.address, timeout=f"{config.connect_timeout_s}s")
        except (OSError, ValueError) as err:  # ValueError: a malformed address
            raise DsmarError(f"cannot reach the Dask scheduler at {config.address}: {err}") from None
        with client:
            yield client
        return
    workers = config.workers or default_workers()
    gpus = count_gpus()
    cluster = _gpu_cluster(threads=max(1, default_workers() // gpus)) if gpus else None
    if cluster is None:
        cluster = LocalCluster(
            n_workers=workers,
            threads_per_worker=config.threads_per_worker,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.WARNING,
        )
    with cluster, Client(cluster) as client:
        yield client


def _gpu_cluster(threads: int):
    """A `LocalCUDACluster` (one worker per GPU, sharing the cores), or None when dask-cuda is absent or fails.

    Several threads per GPU worker keep the CPU-side steps (reads, warps, classical methods) busy.
    """
    try:
        from dask_cuda import LocalCUDACluster  # optional: the `gpu` extra

        return LocalCUDACluster(threads_per_worker=threads, dashboard_address=None, silence_logs=logging.WARNING)
    except ImportError:
        return None
    except Exception as err:  # noqa: BLE001  CUDA bindings or NVML set-up errors: fall back to CPU workers
        logging.getLogger("dsmar").warning("dask-cuda could not start (%s); using CPU workers", err)
        return None

"""Where the tiles run: an existing Dask scheduler, GPU workers (dask-cuda), or a local CPU cluster."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager

import dask

from kernel.config import ClusterConfig
from kernel.errors import DsmarError


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
    except Exception:  # any NVML failure means "no usable GPU"
        return 0
    if visible is not None:
        return min(found, len([v for v in visible.split(",") if v.strip()]))
    return int(found)


def default_workers() -> int:
    """One single-threaded worker per core: the registration methods are CPU-bound numpy/torch."""
    return max(1, os.cpu_count() or 1)


# Worker processes of a cluster started here: no Bokeh dashboard, and the scheduler's HTTP endpoint
# (health, metrics: distributed always starts it) on a free loopback port instead of the default :8787,
# which another Dask may hold. `preload` runs `dask_setup` below in each worker process.
_LOCAL_CLUSTER_OPTIONS = dict(
    dashboard_address="127.0.0.1:0",
    scheduler_kwargs={"dashboard": False},
    silence_logs=logging.WARNING,
    preload=[__name__],
)


def dask_setup(worker) -> None:
    """Dask preload hook, in each local worker process: ignore SIGINT, and be quiet about tasks
    cancelled by a shutdown.

    A terminal's Ctrl-C goes to the whole foreground process group; workers that died of it first
    would leave the main process waiting on a broken cluster. The main process closes the cluster
    as it unwinds from the interrupt, and a worker exits by itself when its parent is gone.
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.getLogger("distributed.worker.state_machine").addFilter(_cancelled_by_shutdown)


def _quiet_worker_logs() -> None:
    """In a worker of a cluster closing with tasks in flight: the errors of the teardown say nothing."""
    logging.getLogger("distributed").setLevel(logging.CRITICAL)


def _cancelled_by_shutdown(record: logging.LogRecord) -> bool:
    """False for 'Async instruction for <Task cancelled ...> ended with CancelledError' (a closing cluster)."""
    return "ended with CancelledError" not in record.getMessage()


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
        before = dask.config.get("scheduler", None)
        try:
            client = Client(config.address, timeout=f"{config.connect_timeout_s}s")
        except (OSError, ValueError) as err:  # ValueError: a malformed address
            # A Client that fails part-way has already made itself the default scheduler: undo that, or a
            # caller's later dask computations in this process look for a client that is not there.
            if before is None:
                dask.config.config.pop("scheduler", None)
            else:
                dask.config.set(scheduler=before)
            raise DsmarError(f"cannot reach the Dask scheduler at {config.address}: {err}") from None
        with client:
            yield client
        return
    workers = config.workers or default_workers()
    gpus = count_gpus()
    with _signals_held():
        cluster = _gpu_cluster(threads=max(1, default_workers() // gpus)) if gpus else None
        if cluster is None:
            cluster = LocalCluster(
                n_workers=workers,
                threads_per_worker=config.threads_per_worker,
                processes=True,
                **_LOCAL_CLUSTER_OPTIONS,
            )
        try:
            client = Client(cluster)
        except BaseException:
            cluster.close()
            raise
    interrupted = False
    try:
        yield client
    except BaseException:
        interrupted = True
        raise
    finally:
        with _signals_held():
            if interrupted:  # tiles in flight: workers would log every peer closing under them
                client.run(_quiet_worker_logs, on_error="ignore")
            client.close()
            cluster.close()


@contextmanager
def _signals_held() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM while a local cluster starts or closes, and deliver them after.

    Interrupted half-way, a cluster cannot be closed in order any more: distributed's exit hook then
    waits 10 s on it (measured: a Ctrl-C during the close took 12 s instead of 2-4 s to exit).
    Outside the main thread, where no signal handler can be set, the block simply runs.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held: list[int] = []
    previous = {
        signum: signal.signal(signum, lambda signum, frame: held.append(signum))
        for signum in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, signal.SIG_DFL if handler is None else handler)
        for signum in dict.fromkeys(held):
            signal.raise_signal(signum)


def _gpu_cluster(threads: int):
    """A `LocalCUDACluster` (one worker per GPU, sharing the cores), or None when dask-cuda is absent or fails.

    Several threads per GPU worker keep the CPU-side steps (reads, warps, classical methods) busy.
    """
    try:
        from dask_cuda import LocalCUDACluster  # optional: the `gpu` extra

        return LocalCUDACluster(threads_per_worker=threads, **_LOCAL_CLUSTER_OPTIONS)
    except ImportError:
        return None
    except Exception as err:  # CUDA bindings or NVML set-up errors: fall back to CPU workers
        logging.getLogger("dsmar").warning("dask-cuda could not start (%s); using CPU workers", err)
        return None

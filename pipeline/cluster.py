"""Where the tiles run: an existing Dask scheduler, GPU workers (dask-cuda), or a local CPU cluster."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext, suppress
from dataclasses import dataclass, replace

from distributed.diagnostics.plugin import WorkerPlugin

from kernel.config import ClusterConfig
from kernel.errors import DsmarError, InputError

log = logging.getLogger("dsmar")


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


@dataclass(frozen=True)
class LocalClusterPlan:
    """What a local cluster is made of; `notice` is said once where it is not what the host suggests."""

    gpu: bool  # a LocalCUDACluster (one worker per GPU) rather than CPU workers
    workers: int
    threads_per_worker: int
    hide_gpus: bool = False  # CPU workers on a GPU host: torch stays off the GPUs
    notice: str | None = None


def plan_local_cluster(config: ClusterConfig, gpus: int, dask_cuda: bool, cores: int) -> LocalClusterPlan:
    """The local cluster for a host with `gpus` GPUs visible, `dask_cuda` importable and `cores` cores.

    GPU workers share the cores out (their CPU-side steps: reads, warps, classical methods) unless
    --threads-per-worker says otherwise; --workers beyond the GPU count is refused rather than ignored.
    """
    if gpus and dask_cuda:
        workers = config.workers or gpus
        if workers > gpus:
            raise InputError(
                f"--workers {workers} asks for more GPU workers than the {gpus} GPU(s) visible here: give at most "
                f"{gpus} (one worker per GPU), or set CUDA_VISIBLE_DEVICES= to run CPU workers"
            )
        return LocalClusterPlan(True, workers, config.threads_per_worker or max(1, cores // workers))
    workers = config.workers or cores
    notice = (
        f"{gpus} GPU(s) visible but dask-cuda does not import: running {workers} CPU worker(s) with the GPUs "
        "hidden; install the gpu extra (pip install 'dsmar[gpu]') to use them"
        if gpus
        else None
    )
    return LocalClusterPlan(False, workers, config.threads_per_worker or 1, hide_gpus=bool(gpus), notice=notice)


def dask_cuda_importable() -> bool:
    """Whether dask-cuda imports: the plain package installs but fails to import without its CUDA bindings."""
    try:
        import dask_cuda  # noqa: F401  (optional: the `gpu` extra)
    except Exception:  # ImportError, or the CUDA bindings' own errors
        return False
    return True


# Worker processes of a cluster started here: the dashboard (and the scheduler's HTTP endpoint: health,
# metrics) on a free loopback port instead of the default :8787, which another Dask may hold; its link
# is printed. `preload` runs `dask_setup` below in each worker process.
_LOCAL_CLUSTER_OPTIONS = dict(
    dashboard_address="127.0.0.1:0",
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


class _Warm(WorkerPlugin):
    """Runs `warm` as each worker starts (or restarts, or joins later)."""

    def __init__(self, warm: Callable[[], object]):
        self.warm = warm

    def setup(self, worker) -> None:
        self.warm()


@contextmanager
def warmed_workers(client, warm: Callable[[], object]) -> Iterator[None]:
    """Run `warm` (load a model, put it on the worker's GPU) once in every worker before its first task, and in
    those that join during the block; a long-lived scheduler is left without the plugin afterwards."""
    name = "dsmar-warm"
    client.register_plugin(_Warm(warm), name=name)
    try:
        yield
    finally:
        with suppress(Exception):  # a scheduler already gone has nothing to remove
            client.unregister_worker_plugin(name)


def _quiet_worker_logs() -> None:
    """In a worker of a cluster closing with tasks in flight: the errors of the teardown say nothing."""
    logging.getLogger("distributed").setLevel(logging.CRITICAL)


@contextmanager
def _gathers_cut_short_quiet() -> Iterator[None]:
    """Drop the errors of result transfers a closing client cuts short: the traceback of each `as_completed`
    gather whose connection closed (tornado's callback log) and the scheduler's "Couldn't gather keys"."""
    from distributed.comm.core import CommClosedError

    def keep(record: logging.LogRecord) -> bool:
        cut = record.exc_info is not None and isinstance(record.exc_info[1], CommClosedError)
        return not cut and not record.getMessage().startswith("Couldn't gather keys")

    loggers = [logging.getLogger("tornado.application"), logging.getLogger("distributed.scheduler")]
    for logger in loggers:
        logger.addFilter(keep)
    try:
        yield
    finally:
        for logger in loggers:
            logger.removeFilter(keep)


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
    """A connected `distributed.Client`; a cluster started here is closed on exit.

    The client is never dask's default scheduler: everything that runs on the cluster is handed to this client
    explicitly. A default client is process-wide state, restored on close to what it replaced, so clients closed
    out of order (a backfill's concurrent windows in one process) would leave dask pointing at a closed one and
    every later computation in the process failing."""
    from distributed import Client

    if config.address:
        try:
            client = Client(config.address, timeout=f"{config.connect_timeout_s}s", set_as_default=False)
        except (OSError, ValueError) as err:  # ValueError: a malformed address
            raise DsmarError(f"cannot reach the Dask scheduler at {config.address}: {err}") from None
        with client:
            log_dashboard(client)
            yield client
        return
    gpus = count_gpus()
    plan = plan_local_cluster(config, gpus, gpus > 0 and dask_cuda_importable(), default_workers())
    with _signals_held():
        cluster = start_local_cluster(plan, config)
        try:
            client = Client(cluster, set_as_default=False)
        except BaseException:
            cluster.close()
            raise
    log_dashboard(client)
    interrupted = False
    try:
        yield client
    except BaseException:
        interrupted = True
        raise
    finally:
        with _signals_held(), _gathers_cut_short_quiet() if interrupted else nullcontext():
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


def start_local_cluster(plan: LocalClusterPlan, config: ClusterConfig):
    """The planned cluster: a `LocalCUDACluster`, or CPU workers (also where dask-cuda fails to start)."""
    from distributed import LocalCluster

    memory = config.memory_limit or "auto"
    if plan.gpu:
        try:
            from dask_cuda import LocalCUDACluster

            cluster = LocalCUDACluster(
                n_workers=plan.workers,
                threads_per_worker=plan.threads_per_worker,
                memory_limit=memory,
                **_LOCAL_CLUSTER_OPTIONS,
            )
            log.info("Dask: %d GPU worker(s), %d thread(s) each", plan.workers, plan.threads_per_worker)
            return cluster
        except Exception as err:  # CUDA bindings or NVML set-up errors
            reason = str(err).splitlines()[0] if str(err) else type(err).__name__
            cpu = plan_local_cluster(config, 0, False, default_workers())
            plan = replace(cpu, hide_gpus=True, notice=f"dask-cuda could not start ({reason}); running CPU workers")
    if plan.notice:
        log.warning("%s", plan.notice)
    return LocalCluster(
        n_workers=plan.workers,
        threads_per_worker=plan.threads_per_worker,
        memory_limit=memory,
        processes=True,
        env={"CUDA_VISIBLE_DEVICES": ""} if plan.hide_gpus else {},
        **_LOCAL_CLUSTER_OPTIONS,
    )


def log_dashboard(client) -> None:
    """Say where the Dask dashboard is, or that the scheduler serves none (bokeh missing where it runs)."""
    if "dashboard" in client.scheduler_info().get("services", {}):
        log.info("Dask dashboard: %s", client.dashboard_link)
    else:
        log.info(
            "Dask: the scheduler at %s serves no dashboard (install bokeh where it runs)", client.scheduler.address
        )

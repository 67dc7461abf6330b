"""Where a run's time and memory go, measured cheaply in one place: the flow's own stages by wall clock on the
client, the tile stage's worker time by kind of task from the scheduler's task stream, the workers' CPU time by
stage, and each worker's peak resident memory. `dsmar bench speed` reports them; an operator reads them to size
workers.

Worker time is core-seconds of task compute (wall clock while a task runs), by stage:
- `load`: every task of the lazy input graphs (GeoTIFF reads, resampling onto the grid, masking, windowing);
- `register`: the registration tasks (`register_tile`: one tile of one modality through the method);
- `warp`: the chunk tasks (`finish_chunk`) less their writes: blending the tile fields, warping, thumbnails;
- `write`: the chunk tasks' Zarr writes (timed inside each chunk task, `ChunkResult.write_seconds`).

Worker CPU time is what the processes consumed (`cpu_clock` around registration, warp and write, the rest of
the process's CPU time as `other`: the input graphs, Dask's own work, imports): on a machine shared with
other jobs, wall clock measures the contention, CPU time the work.
"""

from __future__ import annotations

import resource
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager

WORKER_STAGES = ("load", "register", "warp", "write")
CPU_STAGES = ("register", "warp", "write")
_cpu = dict.fromkeys(CPU_STAGES, 0.0)  # this process's thread CPU seconds per stage, since it started
REGISTER_TASK = "register_tile"  # the names (`dask.utils.key_split`) of the tile tasks, see register_tiles.run_tiles
CHUNK_TASK = "finish_chunk"


class StageClock:
    """Wall seconds per named stage of the client, summed over repeats (`with clock("search"): ...`)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}

    @contextmanager
    def __call__(self, stage: str) -> Iterator[None]:
        start = time.perf_counter()
        try:
            yield
        finally:
            self.add({stage: time.perf_counter() - start})

    def add(self, seconds: Mapping[str, float]) -> None:
        for stage, value in seconds.items():
            self.seconds[stage] = self.seconds.get(stage, 0.0) + value


def worker_seconds(records: Iterable[Mapping], write_seconds: float) -> dict[str, float]:
    """Core-seconds per `WORKER_STAGES` stage from task-stream records (`distributed.get_task_stream`) and
    the chunk tasks' own write time."""
    from dask.utils import key_split

    busy = dict.fromkeys(WORKER_STAGES, 0.0)
    for record in records:
        compute = sum(s["stop"] - s["start"] for s in record["startstops"] if s["action"] == "compute")
        name = key_split(record["key"])
        stage = "register" if name == REGISTER_TASK else "warp" if name == CHUNK_TASK else "load"
        busy[stage] += compute
    busy["warp"] -= write_seconds
    busy["write"] += write_seconds
    return busy


@contextmanager
def cpu_clock(stage: str) -> Iterator[None]:
    """Add the calling thread's CPU time in the block to this process's `stage` total."""
    start = time.thread_time()
    try:
        yield
    finally:
        _cpu[stage] += time.thread_time() - start


def usage() -> dict:
    """This process's CPU seconds per stage, in all (`process`), and its peak resident set size (bytes)."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    return {"cpu": {**_cpu, "process": own.ru_utime + own.ru_stime}, "peak_rss": own.ru_maxrss * 1024}


def workers_usage(client) -> dict[str, dict]:
    """`usage()` of each worker process, by worker address."""
    return dict(client.run(usage))


def cpu_between(before: Mapping[str, dict], after: Mapping[str, dict]) -> dict[str, float]:
    """The workers' CPU seconds per stage between two `workers_usage` snapshots, summed over workers;
    `other` is the rest of their processes' CPU time."""
    spent = dict.fromkeys((*CPU_STAGES, "process"), 0.0)
    for worker, now in after.items():
        then = before.get(worker, {"cpu": {}})["cpu"]
        for key in spent:
            spent[key] += now["cpu"][key] - then.get(key, 0.0)
    spent["other"] = spent.pop("process") - sum(spent[s] for s in CPU_STAGES)
    return spent

"""Where a run's time and memory go, measured cheaply in one place: the flow's own stages by wall clock on the
client, the tile stage's worker time by kind of task from the scheduler's task stream, and each worker's peak
resident memory. `dsmar bench speed` reports them; an operator reads them to size workers.

Worker time is core-seconds of task compute, by stage:
- `load`: every task of the lazy input graphs (GeoTIFF reads, resampling onto the grid, masking, windowing);
- `register`: the registration tasks (`register_tile`: one tile of one modality through the method);
- `warp`: the chunk tasks (`finish_chunk`) less their writes: blending the tile fields, warping, thumbnails;
- `write`: the chunk tasks' Zarr writes (timed inside each chunk task, `ChunkResult.write_seconds`).
"""

from __future__ import annotations

import resource
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager

WORKER_STAGES = ("load", "register", "warp", "write")
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


def peak_rss_bytes() -> int:
    """This process's peak resident set size (Linux reports kilobytes)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def worker_peak_rss(client) -> dict[str, int]:
    """Each worker process's peak resident set size, by worker address."""
    return dict(client.run(peak_rss_bytes))

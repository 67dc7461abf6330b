"""A tile run streams row by row: each input block is read once, each registration tile registered once, and the
windows, blocks and fields alive at once stay a few rows' worth however many rows the scene has."""

from __future__ import annotations

import threading
from collections import Counter

import dask.array as da
import numpy as np
import pytest
import xarray as xr
from dask.utils import key_split
from distributed import Client, LocalCluster
from distributed.diagnostics.plugin import SchedulerPlugin

from pipeline.quality import TREND_RADIUS
from pipeline.register_tiles import ConstantRegistrator, registration_plan, rows_ahead, run_tiles
from pipeline.tile_reads import assemble
from pipeline.tile_stream import neighbours, stream_rows
from pipeline.tiles import Window, plan_tiles

SIZE, HALO, COLS = 32, 8, 4


class PeakInMemory(SchedulerPlugin):
    """What the cluster's memory held: the most bytes at once, and per task-key prefix the most tasks at once and
    how many went into memory in all."""

    def __init__(self, scheduler):
        self.scheduler, self.held, self.bytes, self.peak_bytes = scheduler, {}, 0, 0
        self.now, self.peak, self.made = Counter(), Counter(), Counter()

    def transition(self, key, start, finish, *args, **kwargs):
        prefix = key_split(key)
        if finish == "memory":
            self.held[key] = self.scheduler.tasks[key].nbytes
            self.bytes += self.held[key]
            self.peak_bytes = max(self.peak_bytes, self.bytes)
            self.now[prefix] += 1
            self.made[prefix] += 1
            self.peak[prefix] = max(self.peak[prefix], self.now[prefix])
        elif start == "memory":
            self.bytes -= self.held.pop(key)
            self.now[prefix] -= 1


class Discard:
    """A chunk writer that keeps nothing: the run's memory is what is measured."""

    def write(self, time_index, tile, arrays, inputs_hash):
        pass


READS: Counter[tuple[int, int, int, int]] = Counter()  # (rows, bands, i, j): the reads of each input block
READING = threading.Lock()


def read_block(rows: int, bands: int, block_id=None) -> np.ndarray:
    """An input block, as a loader would read it, counted in `READS` (the in-process workers share it)."""
    _, i, j = block_id
    with READING:
        READS[rows, bands, i, j] += 1
    return np.random.default_rng((i, j)).random((bands, SIZE, SIZE), dtype=np.float32)


def _input(rows: int, bands: int) -> xr.DataArray:
    chunks = ((bands,), (SIZE,) * rows, (SIZE,) * COLS)
    values = da.map_blocks(read_block, rows, bands, chunks=chunks, dtype=np.float32)
    return xr.DataArray(values, dims=("band", "y", "x"))


def test_stream_rows_register_each_tile_once_before_the_row_whose_gating_reads_it():
    plan = plan_tiles((10 * SIZE, COLS * SIZE), SIZE, HALO)
    plans = {"sar": plan, "dem": registration_plan(plan, "dem")}
    todo = plan.tiles[5:]  # a resumed run: the first chunks are done
    pieces = {m: {t: p.covering(t.core) for t in todo} for m, p in plans.items()}
    rows = stream_rows(plans, pieces, todo)
    assert [t for row in rows for t in row.chunks] == list(todo)
    for m, p in plans.items():
        needed = list(dict.fromkeys(n for t in todo for n in pieces[m][t]))
        registered = [(n.i, n.j) for row in rows for n in row.register[m]]
        assert sorted(registered) == sorted((n.i, n.j) for n in [*needed, *neighbours(p, needed)])
        assert len(set(registered)) == len(registered)
        assert sorted((n.i, n.j) for row in rows for n in row.gate[m]) == sorted((n.i, n.j) for n in needed)
        for k, row in enumerate(rows):
            so_far = {n for earlier in rows[: k + 1] for n in earlier.register[m]}
            assert all(n in so_far for n in row.wait[m]) and all(n in so_far for t in row.chunks for n in pieces[m][t])
    # A row's registration reaches no further than its chunks' blends and their trends.
    last = max(n.i for n in rows[0].register["sar"])
    assert last == rows[0].chunks[-1].i + 1 + TREND_RADIUS


def test_assemble_cuts_a_window_from_the_blocks_that_cover_it():
    image = np.arange(3 * 50 * 70, dtype=np.float64).reshape(3, 50, 70)
    blocks = [Window(r, c, min(20, 50 - r), min(30, 70 - c)) for r in range(0, 50, 20) for c in range(0, 70, 30)]
    for window in (Window(5, 25, 40, 40), Window(20, 30, 20, 30), Window(0, 0, 50, 70)):
        parts = [(b, image[(slice(None), *b.slices)]) for b in blocks if b.intersection(window) is not None]
        out = assemble(window, parts)
        assert out.dtype == np.float32
        np.testing.assert_array_equal(out, image[(slice(None), *window.slices)].astype(np.float32))


@pytest.fixture(scope="module")
def client():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        with Client(cluster) as c:
            yield c


def _run(client, rows: int) -> PeakInMemory:
    plan = plan_tiles((rows * SIZE, COLS * SIZE), SIZE, HALO)
    scheduler = client.cluster.scheduler
    peak = PeakInMemory(scheduler)
    scheduler.add_plugin(peak, name="peak")
    try:
        moving = {"sar": _input(rows, 2)}
        run = run_tiles(client, plan, _input(rows, 4), moving, ConstantRegistrator(), Discard(), 0, 1, plan.tiles, 4)
    finally:
        scheduler.remove_plugin("peak")
    assert not run.failed and len(run.chunks) == len(plan.tiles)
    reads = [n for (r, *_), n in READS.items() if r == rows]
    assert len(reads) == 2 * rows * COLS and set(reads) == {1}  # each block of both inputs read once
    assert peak.made["register_tile"] == len(plan.tiles)  # each registration tile registered once
    return peak


def test_memory_in_flight_does_not_grow_with_the_number_of_rows(client):
    short, tall = _run(client, 8), _run(client, 24)
    row = COLS * (4 + 2) * 4 * (SIZE + 2 * HALO) ** 2  # a row's windows of both inputs, in bytes
    # Two rows' worth of timing jitter (a loaded machine finishes tasks out of step); a peak that grew with the
    # scene would be about three times the short scene's here.
    assert tall.peak_bytes <= short.peak_bytes + 2 * row
    for prefix in ("field", "assemble"):
        assert tall.peak[prefix] <= short.peak[prefix] + 2 * COLS, prefix
    # The fields alive: the rows a chunk row's blend and its gating read, and those registered ahead of it.
    assert tall.peak["field"] <= (rows_ahead(client, COLS) + 3 + 2 * TREND_RADIUS) * COLS < tall.made["field"] / 2

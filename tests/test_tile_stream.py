"""A tile run streams row by row: each input block is read once, each registration tile registered once, and what
the cluster holds in memory at once stays a few blocks' worth however many rows and columns the scene has (the
tasks hand each other their data through the run's scratch, `pipeline.tile_scratch`)."""

from __future__ import annotations

import threading
from collections import Counter

import dask
import dask.array as da
import numpy as np
import pytest
import xarray as xr
from dask.utils import key_split
from distributed import Client, LocalCluster
from distributed.diagnostics.plugin import SchedulerPlugin
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.quality import TREND_RADIUS
from pipeline.register_tiles import ConstantRegistrator, registration_plan, run_tiles
from pipeline.tile_reads import StagedInputs
from pipeline.tile_scratch import TileScratch, block_side, scratch_side
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


READS: Counter[tuple[int, int, int, int, int]] = Counter()  # (rows, cols, bands, i, j): the reads of each block
READING = threading.Lock()


def read_block(rows: int, cols: int, bands: int, block_id=None) -> np.ndarray:
    """An input block, as a loader would read it, counted in `READS` (the in-process workers share it)."""
    _, i, j = block_id
    with READING:
        READS[rows, cols, bands, i, j] += 1
    return np.random.default_rng((i, j)).random((bands, SIZE, SIZE), dtype=np.float32)


def _input(rows: int, cols: int, bands: int) -> xr.DataArray:
    chunks = ((bands,), (SIZE,) * rows, (SIZE,) * cols)
    values = da.map_blocks(read_block, rows, cols, bands, chunks=chunks, dtype=np.float32)
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


def test_scratch_side_divides_the_blocks_and_stays_near_its_target():
    assert scratch_side(512) == 256 and scratch_side(1024) == 256 and scratch_side(300) == 150
    assert scratch_side(96) == 96 and scratch_side(509) == 509  # small or prime: the block itself
    assert block_side({"a": ((512, 512, 100), (512, 40)), "b": ((256, 256, 256, 3), (900,))}) == 256
    assert block_side({"a": ((70,), (90,))}) == 90  # one block per axis: any side divides its boundaries


@given(
    st.integers(1, 90), st.integers(1, 90), st.integers(1, 3), st.sampled_from([16, 24, 40]),
    st.tuples(st.integers(0, 89), st.integers(0, 89), st.integers(1, 90), st.integers(1, 90)),
)  # fmt: skip
@settings(max_examples=25, deadline=None)
def test_a_staged_window_is_the_input_s_window(tmp_path_factory, height, width, bands, block, window):
    """Blocks staged one by one (in any order) give back any window of the image, bands and edges included."""
    image = np.random.default_rng(height * width).random((bands, height, width), dtype=np.float32)
    lazy = xr.DataArray(da.from_array(image, chunks=(bands, block, block)), dims=("band", "y", "x"))
    where = tmp_path_factory.mktemp("scratch") / "s"
    scratch = TileScratch(str(where))
    scratch.create({"x": (bands, (height, width))}, block_side({"x": lazy.data.chunks[1:]}), {})
    with dask.config.set(scheduler="sync"):
        whole = [("x", Window(0, 0, height, width))]
        StagedInputs(_Sync(), {"x": lazy}, scratch, whole, 0).ready([whole])
    row, col = min(window[0], height - 1), min(window[1], width - 1)
    win = Window(row, col, min(window[2], height - row), min(window[3], width - col))
    np.testing.assert_array_equal(scratch.window("x", win), image[(slice(None), *win.slices)])
    scratch.remove()
    assert not where.exists()


class _Sync:
    """A client stand-in that computes at once in this thread: staging's writes are what is tested here."""

    def compute(self, collections, retries=0):
        return dask.compute(*collections)


@pytest.fixture(scope="module")
def client():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        with Client(cluster) as c:
            yield c


def _run(client, rows: int, cols: int, scratch) -> PeakInMemory:
    plan = plan_tiles((rows * SIZE, cols * SIZE), SIZE, HALO)
    scheduler = client.cluster.scheduler
    peak = PeakInMemory(scheduler)
    scheduler.add_plugin(peak, name="peak")
    try:
        moving = {"sar": _input(rows, cols, 2)}
        run = run_tiles(
            client, plan, _input(rows, cols, 4), moving, ConstantRegistrator(), Discard(), 0, 1, plan.tiles, 4,
            scratch=TileScratch(str(scratch)),
        )  # fmt: skip
    finally:
        scheduler.remove_plugin("peak")
    assert not scratch.exists()  # the run empties its scratch
    assert not run.failed and len(run.chunks) == len(plan.tiles)
    reads = [n for (r, c, *_), n in READS.items() if (r, c) == (rows, cols)]
    assert len(reads) == 2 * rows * cols and set(reads) == {1}  # each block of both inputs read once
    assert peak.made["register_tile"] == len(plan.tiles)  # each registration tile registered once
    return peak


def test_memory_in_flight_does_not_grow_with_the_scene(client, tmp_path):
    small, tall, wide = (
        _run(client, 6, 3, tmp_path / "a"),
        _run(client, 24, 3, tmp_path / "b"),
        _run(client, 6, 12, tmp_path / "c"),
    )
    block = 4 * 4 * SIZE**2  # an optical block, in bytes
    # Blocks wait in memory only between their read and their staging, two threads at a time; a design that held
    # a row of blocks or fields would hold 12 blocks' worth and more on the wide scene.
    for run in (small, tall, wide):
        assert run.peak_bytes <= 6 * block, run.peak_bytes
    assert tall.peak["stage_block"] < tall.made["stage_block"] / 2  # a staged block's token goes after its last use

"""Tile faults: a transient fault is retried with backoff; a tile that keeps failing costs its own chunks only,
which stay unwritten (their input hash 0, so a rerun redoes them), and is named; no chunk is left half-written."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from affine import Affine
from distributed import Client, LocalCluster

from pipeline.grid import Grid
from pipeline.register_tiles import ConstantRegistrator, TileField, run_tiles
from pipeline.store import CubeLayout, Provenance
from pipeline.tile_retry import RetryPolicy, TileFailure
from pipeline.tile_scratch import TileScratch
from pipeline.tiles import Tile, plan_tiles
from tests.memory_store import MemoryCubeStore

SHAPE = (192, 256)  # 3 x 4 chunks of 64 px
SHIFT = (0.5, -1.0)
QUICK = RetryPolicy((0.0, 0.0))
T0 = np.datetime64("2024-01-01", "ns")


@pytest.fixture(scope="module")
def client():
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster:
        with Client(cluster) as c:
            yield c


def _setup(url: str):
    plan = plan_tiles(SHAPE, 64, 16)
    rng = np.random.default_rng(7)
    fixed = rng.random((4, *SHAPE)).astype(np.float32)
    for tile in plan.tiles:
        fixed[(3, *tile.core.slices)] = 10 * tile.i + tile.j
    grid = Grid.from_affine(32633, Affine(10, 0, 459960, 0, -10, 5110020), *SHAPE)
    store = MemoryCubeStore(url)
    store.init(
        CubeLayout(grid, plan, (T0,), {"optical": tuple("bgrn"), "sar": ("vv", "vh")}),
        [Provenance("o", "s", T0, "d")],
        {},
    )

    def lazy(values):
        return xr.DataArray(values, dims=("band", "y", "x")).chunk({"y": 64, "x": 64})

    return plan, store, lazy(fixed), {"sar": lazy(rng.random((2, *SHAPE)).astype(np.float32))}


def _code(fixed: np.ndarray) -> int:
    h, w = fixed.shape[-2:]
    return int(fixed[-1, h // 2, w // 2])


@dataclass(frozen=True)
class FlakyRegistrator:
    """Raises the first `failures` times it sees tile `code` (counted in a file: the calls run on workers)."""

    code: int
    failures: int
    counter: str

    def __call__(self, fixed: np.ndarray, moving: np.ndarray, *, moving_modality: str) -> TileField:
        if _code(fixed) == self.code:
            path = Path(self.counter)
            seen = int(path.read_text()) if path.exists() else 0
            path.write_text(str(seen + 1))
            if seen < self.failures:
                raise OSError(f"transient fault {seen + 1}")
        return ConstantRegistrator(SHIFT)(fixed, moving, moving_modality=moving_modality)


def test_a_transient_registration_fault_is_retried_and_the_chunk_written(client, tmp_path):
    plan, store, fixed, moving = _setup("memory://faults-transient")
    counter = tmp_path / "calls"
    registrator = FlakyRegistrator(12, QUICK.attempts - 1, str(counter))
    run = run_tiles(
        client,
        plan,
        fixed,
        moving,
        registrator,
        store,
        0,
        3,
        plan.tiles,
        4,
        scratch=TileScratch(store.scratch_url),
        retry=QUICK,
    )
    assert run.failed == [] and (store.written(0) == 3).all()
    assert int(counter.read_text()) == QUICK.attempts


def test_a_tile_that_keeps_failing_costs_the_chunks_that_blend_it_only_and_a_rerun_writes_them(client, tmp_path):
    """Registration tile (0, 0) fails for good: the chunks whose blend needs its field (its own and its
    neighbours') are not written, since a blend without it would differ from a whole run's and never be redone."""
    plan, store, fixed, moving = _setup("memory://faults-persistent")
    broken = FlakyRegistrator(0, 99, str(tmp_path / "calls"))
    run = run_tiles(
        client,
        plan,
        fixed,
        moving,
        broken,
        store,
        0,
        3,
        plan.tiles,
        4,
        scratch=TileScratch(store.scratch_url),
        retry=QUICK,
    )
    needing = sorted((t.i, t.j) for t in plan.tiles if plan.tiles[0] in plan.covering(t.core))
    assert needing == [(0, 0), (0, 1), (1, 0), (1, 1)]
    reason = "registration tile (0, 0): OSError: transient fault 3"
    assert sorted(run.failed, key=lambda f: f.tile) == [TileFailure(k, "sar", reason) for k in needing]
    assert run.failed[0].describe("2024-01-01") == f"2024-01-01 sar tile {run.failed[0].tile}: {reason}"
    written = store.written(0)
    assert sorted(zip(*np.nonzero(written == 0))) == needing and (written[written != 0] == 3).all()
    assert np.isnan(store.read("sar", 0, plan.tiles[0].core)).all()  # nothing of a failed chunk was written
    todo = [t for t in plan.tiles if store.written(0)[t.i, t.j] != 3]
    before = len(store.content.writes)
    rerun = run_tiles(
        client,
        plan,
        fixed,
        moving,
        ConstantRegistrator(SHIFT),
        store,
        0,
        3,
        todo,
        4,
        scratch=TileScratch(store.scratch_url),
        retry=QUICK,
    )
    assert rerun.failed == [] and (store.written(0) == 3).all()
    assert sorted(w[1:] for w in store.content.writes[before:]) == needing


@dataclass(frozen=True)
class DiesMidWrite(MemoryCubeStore):
    """Writes a chunk's data, then fails before its hash, every time, on tile (0, 2)."""

    def write(self, time_index: int, tile: Tile, arrays: Mapping[str, np.ndarray], inputs_hash: int) -> None:
        if (tile.i, tile.j) != (0, 2):
            return super().write(time_index, tile, arrays, inputs_hash)
        ys, xs = tile.core.slices
        for name, value in arrays.items():
            self.content.arrays[name][(time_index, ..., ys, xs)] = value
        raise OSError("storage went away")


def test_a_chunk_whose_write_keeps_failing_keeps_hash_zero_and_is_named(client):
    plan, _, fixed, moving = _setup("memory://faults-write")
    store = DiesMidWrite("memory://faults-write")
    run = run_tiles(
        client,
        plan,
        fixed,
        moving,
        ConstantRegistrator(SHIFT),
        store,
        0,
        3,
        plan.tiles,
        4,
        scratch=TileScratch(store.scratch_url),
        retry=QUICK,
    )
    assert run.failed == [TileFailure((0, 2), "sar", "OSError: storage went away")]
    written = store.written(0)
    assert written[0, 2] == 0 and (np.delete(written.ravel(), 2) == 3).all()
    assert not np.isnan(store.read("sar", 0, plan.tiles[2].core)).all()  # its data got there: only the hash says

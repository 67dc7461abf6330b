"""Per-tile registration plumbing: tile-wise warping equals whole-image warping; the Dask mapping
writes every chunk once, with the fake registrator standing in for a method."""

from __future__ import annotations

import numpy as np
import pytest
import xarray as xr
from affine import Affine
from distributed import Client, LocalCluster
from scipy import ndimage

from kernel.warp import warp_image
from models.api import method_spec
from models.tile_registrator import MethodRegistrator
from pipeline.cube import ZarrCubeStore, init_cube, open_cube
from pipeline.grid import Grid
from pipeline.register_tiles import (
    ConstantRegistrator,
    ModalityInput,
    TileField,
    align_chunk,
    run_tiles,
)
from pipeline.store import CubeLayout, Provenance
from pipeline.tile_scratch import TileScratch
from pipeline.tiles import plan_tiles
from tests.memory_store import MemoryCubeStore

SHAPE = (200, 260)


def _image(rng, bands):
    base = rng.normal(size=(bands, *SHAPE)).astype(np.float32)
    return np.stack([ndimage.gaussian_filter(b, 3) for b in base]).astype(np.float32)


def test_tilewise_warp_matches_whole_image_warp():
    rng = np.random.default_rng(1)
    moving = _image(rng, 2)
    yy, xx = np.mgrid[0 : SHAPE[0], 0 : SHAPE[1]].astype(np.float32)
    field = np.stack([2.5 * np.sin(xx / 40), -3.0 * np.cos(yy / 35)]).astype(np.float32)
    plan = plan_tiles(SHAPE, 64, 16)
    expected = warp_image(moving, field)
    fixed = np.zeros((4, *SHAPE), np.float32)
    for tile in plan.tiles:
        pieces = tuple(
            (n, TileField(field[(slice(None), *n.outer.slices)], np.ones((n.outer.height, n.outer.width), np.float32)))
            for n in plan.covering(tile.core)
        )
        arrays = align_chunk(
            tile,
            fixed[(slice(None), *tile.outer.slices)],
            {"sar": ModalityInput(moving[(slice(None), *tile.outer.slices)], pieces)},
        )
        np.testing.assert_allclose(arrays["displacement_sar"], field[(slice(None), *tile.core.slices)], atol=1e-5)
        np.testing.assert_allclose(arrays["sar"], expected[(slice(None), *tile.core.slices)], atol=1e-4, equal_nan=True)


def test_unmatchable_tile_gets_zero_field_and_zero_confidence():
    """A real method that finds the 2 px shift on the whole tile is not run where under 1 % of it is valid."""
    image = ndimage.gaussian_filter(np.random.default_rng(0).random((2, 64, 64)).astype(np.float32), (0, 2, 2))
    moving = np.roll(image, 2, axis=-1)
    matched = MethodRegistrator(method_spec("phase"))(image, moving, moving_modality="sar")
    assert np.median(matched.displacement[1]) == pytest.approx(2.0, abs=0.1)  # measured 1.99
    sparse = np.full_like(image, np.nan)
    sparse[:, 10:16, 10:16] = image[:, 10:16, 10:16]  # 0.9 % valid
    result = MethodRegistrator(method_spec("phase"))(sparse, moving, moving_modality="sar")
    assert (result.displacement == 0).all() and (result.confidence == 0).all()


@pytest.fixture(scope="module")
def client():
    with LocalCluster(n_workers=2, threads_per_worker=2, processes=False, dashboard_address=None) as cluster:
        with Client(cluster) as c:
            yield c


def _dataarray(values):
    return xr.DataArray(values, dims=("band", "y", "x")).chunk({"y": 64, "x": 64})


def _shifted_pair(seed: int, shift: tuple[float, float]):
    """A 4-band fixed image, a 2-band moving one displaced by a constant `shift` (warping it back by the shift
    gives the fixed image), that field, and the grid and 64 px tile plan they lie on."""
    fixed = _image(np.random.default_rng(seed), 4)
    field = np.empty((2, *SHAPE), np.float32)
    field[0], field[1] = shift
    moving = warp_image(fixed[:2], -field)
    grid = Grid.from_affine(32633, Affine(10, 0, 459960, 0, -10, 5110020), *SHAPE)
    return fixed, moving, field, grid, plan_tiles(SHAPE, 64, 16)


def test_run_tiles_writes_every_chunk_and_skips_done_ones(client, tmp_path):
    shift = (1.5, -2.0)
    fixed, moving, field, grid, plan = _shifted_pair(2, shift)
    path = str(tmp_path / "cube.zarr")
    bands = {"optical": ("b", "g", "r", "n"), "sar": ("vv", "vh")}
    prov = [Provenance("o", "s", np.datetime64("2024-01-01", "ns"), "d")]
    init_cube(path, CubeLayout(grid, plan, (np.datetime64("2024-01-01", "ns"),), bands), prov, {})
    writer = ZarrCubeStore(path)
    progress = []
    half = plan.tiles[::2]
    run = run_tiles(
        client,
        plan,
        _dataarray(fixed),
        {"sar": _dataarray(moving)},
        ConstantRegistrator(shift),
        writer,
        0,
        11,
        half,
        thumb_step=4,
        scratch=TileScratch(writer.scratch_url),
        on_progress=progress.append,
    )
    assert writer.scratch_url == str(tmp_path / ".cube.zarr.scratch") and not (tmp_path / ".cube.zarr.scratch").exists()
    assert len(run.chunks) == len(half) and not run.failed
    # every registration and chunk task reported as it settled, the last report the whole run
    assert len(progress) == progress[-1].registrations + len(half) and progress[-1].share == 1.0
    assert (progress[-1].written, progress[-1].chunks) == (len(half), len(half))
    assert [p.registered + p.written for p in progress] == list(range(1, len(progress) + 1))
    written = writer.written(0)
    assert sorted(zip(*np.nonzero(written == 11))) == sorted((t.i, t.j) for t in half)
    rest = [t for t in plan.tiles if written[t.i, t.j] != 11]
    run_tiles(
        client,
        plan,
        _dataarray(fixed),
        {"sar": _dataarray(moving)},
        ConstantRegistrator(shift),
        writer,
        0,
        11,
        rest,
        thumb_step=4,
        scratch=TileScratch(writer.scratch_url),
    )
    assert (writer.written(0) == 11).all()
    ds = open_cube(path).isel(time=0)
    np.testing.assert_allclose(ds.displacement_sar.sel(component="dy"), 1.5)
    np.testing.assert_allclose(ds.displacement_sar.sel(component="dx"), -2.0)
    np.testing.assert_array_equal(ds.optical.values, fixed)
    inner = (slice(None), slice(8, -8), slice(8, -8))
    np.testing.assert_allclose(ds.sar.values[inner], fixed[:2][inner], atol=0.05)


def test_run_tiles_writes_through_the_store_seam_alone(client):
    """The tile map knows only the CubeStore protocol: an in-memory store takes every chunk, warped right."""
    shift = (-1.0, 2.5)
    fixed, moving, field, grid, plan = _shifted_pair(5, shift)
    store = MemoryCubeStore("memory://seam-test")
    bands = {"optical": ("b", "g", "r", "n"), "sar": ("vv", "vh")}
    t0 = np.datetime64("2024-01-01", "ns")
    index = store.init(CubeLayout(grid, plan, (t0,), bands), [Provenance("o", "s", t0, "d")], {})
    run_tiles(
        client,
        plan,
        _dataarray(fixed),
        {"sar": _dataarray(moving)},
        ConstantRegistrator(shift),
        store,
        index[t0],
        7,
        plan.tiles,
        thumb_step=4,
        scratch=TileScratch(store.scratch_url),
    )
    assert sorted(store.content.writes) == sorted((0, t.i, t.j) for t in plan.tiles)
    assert (store.written(0) == 7).all()
    np.testing.assert_allclose(store.read("displacement_sar", 0)[:, 8:-8, 8:-8], field[:, 8:-8, 8:-8])
    inner = (slice(None), slice(8, -8), slice(8, -8))
    np.testing.assert_allclose(store.read("sar", 0)[inner], warp_image(moving, field)[inner], atol=1e-4)

"""Each modality is registered on its own tiles (`Modality.registration_tile`): the DEM's field does not depend
on the chunk size, while chunks still blend, warp and write on the chunk plan."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import xarray as xr
from affine import Affine
from distributed import Client, LocalCluster

from kernel.contracts import MODALITY
from pipeline.grid import Grid
from pipeline.register_tiles import TileField, registration_plan, run_tiles
from pipeline.store import CubeLayout, Provenance
from pipeline.tile_scratch import TileScratch
from pipeline.tiles import Window, plan_tiles
from tests.memory_store import MemoryCubeStore

SHAPE = (200, 260)


def test_dem_is_registered_on_tiles_of_its_own_size_whatever_the_chunks():
    least = MODALITY["dem"].registration_tile
    assert least > 128
    small, large = plan_tiles((1500, 1500), 128, 32), plan_tiles((1500, 1500), least, 64)
    assert registration_plan(small, "dem") == registration_plan(large, "dem") == large
    assert registration_plan(small, "sar") is small
    wide = plan_tiles((1500, 1500), 2 * least, 96)
    assert registration_plan(wide, "dem") is wide


@pytest.mark.parametrize("size, halo", [(64, 16), (64, 0), (100, 50), (512, 64)])
def test_covering_finds_exactly_the_tiles_whose_outer_window_overlaps(size, halo):
    plan = plan_tiles(SHAPE, size, halo)
    for window in (Window(0, 0, 1, 1), Window(37, 90, 64, 64), Window(150, 200, 50, 60), Window(0, 0, *SHAPE)):
        expected = [t for t in plan.tiles if t.outer.intersection(window) is not None]
        assert plan.covering(window) == expected


@dataclass(frozen=True)
class WindowSizeRegistrator:
    """A fake whose field says how large a window it saw: (height, width) / 100 everywhere."""

    def __call__(self, fixed: np.ndarray, moving: np.ndarray, *, moving_modality: str) -> TileField:
        h, w = fixed.shape[-2:]
        displacement = np.empty((2, h, w), np.float32)
        displacement[0], displacement[1] = h / 100, w / 100
        return TileField(displacement, np.ones((h, w), np.float32))


@pytest.fixture(scope="module")
def client():
    with LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster:
        with Client(cluster) as c:
            yield c


def _fields(client, size: int, halo: int, tag: str = "") -> dict[str, np.ndarray]:
    rng = np.random.default_rng(3)
    images = {name: rng.random((bands, *SHAPE)).astype(np.float32) for name, bands in (("optical", 4), ("sar", 2))}
    images["dem"] = rng.random((1, *SHAPE)).astype(np.float32)
    grid = Grid.from_affine(32633, Affine(10, 0, 459960, 0, -10, 5110020), *SHAPE)
    plan = plan_tiles(SHAPE, size, halo)
    store = MemoryCubeStore(f"memory://registration-plan-{size}{tag}")
    bands = {"optical": ("b", "g", "r", "n"), "sar": ("vv", "vh"), "dem": ("elevation",)}
    t0 = np.datetime64("2024-01-01", "ns")
    index = store.init(CubeLayout(grid, plan, (t0,), bands), [Provenance("o", "s", t0, "d")], {})
    data = {name: xr.DataArray(v, dims=("band", "y", "x")).chunk({"y": 64, "x": 64}) for name, v in images.items()}
    moving = {"sar": data["sar"], "dem": data["dem"]}
    run_tiles(
        client, plan, data["optical"], moving, WindowSizeRegistrator(), store, index[t0], 5, plan.tiles, 4,
        scratch=TileScratch(store.scratch_url),
    )  # fmt: skip
    assert (store.written(0) == 5).all()
    return {m: store.read(f"displacement_{m}", 0) for m in moving}


def test_dem_field_does_not_depend_on_the_chunk_size_and_sar_keeps_its_tiles(client):
    small, large = _fields(client, 64, 16), _fields(client, 256, 64)
    # One registration tile (the whole 200 x 260 grid) for the DEM, whatever the chunks.
    np.testing.assert_array_equal(small["dem"], large["dem"])
    np.testing.assert_allclose(small["dem"][:, 0, 0], [2.0, 2.6])
    # SAR is registered on the chunk tiles: a 64 px chunk's 96 px outer window in the grid's middle.
    np.testing.assert_allclose(small["sar"][:, 100, 100], [0.96, 0.96], atol=1e-6)
    np.testing.assert_allclose(large["sar"][:, 100, 100], [2.0, 2.6])


def test_an_edge_tile_narrower_than_the_chunks_is_registered_on_a_full_tiles_window(client):
    """The 200 px grid's last row of 64 px chunks is 8 px high: its tiles are registered on 80 px (a first
    tile's 64 + 16), not on the 24 px of core and halo, and only their outer part is blended (the tile above
    fades out there, hence the tolerance)."""
    sar = _fields(client, 64, 16, "-edge")["sar"]
    np.testing.assert_allclose(sar[:, 199, 100], [0.80, 0.96], atol=1e-3)
    np.testing.assert_allclose(sar[:, 100, 259], [0.96, 0.80], atol=1e-3)  # the 260 px grid's last column: 4 px

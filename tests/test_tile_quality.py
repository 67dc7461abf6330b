"""Quality gating: a registration tile whose field is not credible falls back to its neighbours' trend (or to no
warp), is flagged in the cube's quality variable, and is reported; credible tiles pass untouched."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pytest
import xarray as xr
from affine import Affine
from distributed import Client, LocalCluster

from pipeline.cube import ZarrCubeStore, init_cube, open_cube
from pipeline.grid import Grid
from pipeline.quality import (
    FLAG_NO_WARP,
    FLAG_REGISTERED,
    FLAG_TREND,
    MAX_TREND_DEVIATION_PX,
    MIN_MEAN_CONFIDENCE,
    TileSummary,
    gate,
    neighbourhood,
)
from pipeline.register_tiles import TileField, run_tiles
from pipeline.store import CubeLayout, Provenance
from pipeline.tile_scratch import TileScratch
from pipeline.tiles import plan_tiles

SHAPE = (192, 256)  # 3 x 4 chunks of 64 px
GOOD, WILD = (1.5, -2.0), (29.0, 3.0)
BAD_TILE = (1, 2)


def _grid_of(shift, confidence=0.6, rows=4, cols=4):
    return {(i, j): TileSummary((shift[0] + 0.1 * j, shift[1]), confidence) for i in range(rows) for j in range(cols)}


def test_a_confident_tile_near_its_trend_is_kept_and_the_others_fall_back_to_their_neighbours_trend():
    summaries = _grid_of((1.0, -2.0))
    far, unsure = (1, 1), (2, 3)
    summaries[far] = TileSummary((1.0 + MAX_TREND_DEVIATION_PX + 5, -2.0), 0.9)
    summaries[unsure] = TileSummary((1.1, -2.0), MIN_MEAN_CONFIDENCE / 2)
    verdicts = gate(summaries, summaries)
    kept = [k for k in summaries if k not in (far, unsure)]
    assert all(verdicts[k].flag == FLAG_REGISTERED and verdicts[k].shift == summaries[k].shift for k in kept)
    assert verdicts[far].flag == verdicts[unsure].flag == FLAG_TREND
    for k in (far, unsure):  # the median of the confident neighbours that agree: neither bad tile counts
        near = [summaries[n].shift for n in neighbourhood(k) if n in summaries and n not in (far, unsure)]
        assert verdicts[k].shift == pytest.approx(tuple(np.median(near, axis=0)))
    assert "from the trend" in verdicts[far].reason and "mean confidence" in verdicts[unsure].reason
    assert verdicts[unsure].confidence == summaries[unsure].confidence


def test_a_tile_is_judged_by_its_neighbours_alone_so_a_partial_rerun_judges_it_the_same():
    summaries = _grid_of((1.0, -2.0), rows=8, cols=8)
    summaries[(6, 6)] = TileSummary((30.0, 0.0), 0.9)
    near = {n: summaries[n] for n in [(1, 1), *neighbourhood((1, 1))] if n in summaries}
    assert gate(summaries, [(1, 1)]) == gate(near, [(1, 1)])
    assert gate(summaries, [(6, 6)])[(6, 6)].flag == FLAG_TREND


def test_without_a_credible_neighbour_an_unsure_tile_gets_no_warp_and_a_sure_one_is_kept():
    verdicts = gate(_grid_of((5.0, 5.0), MIN_MEAN_CONFIDENCE / 3), [(0, 0)])
    assert verdicts[(0, 0)].flag == FLAG_NO_WARP and verdicts[(0, 0)].shift == (0.0, 0.0)
    alone = {(0, 0): TileSummary((31.0, -1.9), 0.107)}  # one DEM tile over a small scene: nothing to compare with
    assert gate(alone, alone)[(0, 0)].flag == FLAG_REGISTERED


@dataclass(frozen=True)
class WildTileRegistrator:
    """The constant field GOOD at confidence 0.9, except on the tile whose outer window's centre pixel of the
    fixed image's last band holds `bad`: there WILD at confidence 0.015 (cfog's failure on one DEM tile)."""

    bad: float

    def __call__(self, fixed: np.ndarray, moving: np.ndarray, *, moving_modality: str) -> TileField:
        h, w = fixed.shape[-2:]
        wild = fixed[-1, h // 2, w // 2] == self.bad
        displacement = np.empty((2, h, w), np.float32)
        displacement[0], displacement[1] = WILD if wild else GOOD
        return TileField(displacement, np.full((h, w), 0.015 if wild else 0.9, np.float32))


@pytest.fixture(scope="module")
def client():
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=False, dashboard_address=None) as cluster:
        with Client(cluster) as c:
            yield c


def test_a_forced_bad_tile_is_flagged_and_not_silently_warped(client, tmp_path):
    plan = plan_tiles(SHAPE, 64, 16)
    rng = np.random.default_rng(4)
    fixed = rng.random((4, *SHAPE)).astype(np.float32)
    for tile in plan.tiles:  # the last band names each chunk's core, so the fake knows which tile it sees
        fixed[(3, *tile.core.slices)] = 10 * tile.i + tile.j
    moving = rng.random((2, *SHAPE)).astype(np.float32)
    grid = Grid.from_affine(32633, Affine(10, 0, 459960, 0, -10, 5110020), *SHAPE)
    path = str(tmp_path / "cube.zarr")
    t0 = np.datetime64("2024-01-01", "ns")
    bands = {"optical": ("b", "g", "r", "n"), "sar": ("vv", "vh")}
    init_cube(path, CubeLayout(grid, plan, (t0,), bands), [Provenance("o", "s", t0, "d")], {})

    def lazy(values):
        return xr.DataArray(values, dims=("band", "y", "x")).chunk({"y": 64, "x": 64})

    bad = 10.0 * BAD_TILE[0] + BAD_TILE[1]
    run = run_tiles(
        client, plan, lazy(fixed), {"sar": lazy(moving)}, WildTileRegistrator(bad), ZarrCubeStore(path), 0, 9,
        plan.tiles, 4, scratch=TileScratch(ZarrCubeStore(path).scratch_url),
    )  # fmt: skip
    assert not run.failed and len(run.chunks) == len(plan.tiles)
    flagged = {k: v for k, v in run.verdicts["sar"].items() if v.flag != FLAG_REGISTERED}
    assert list(flagged) == [BAD_TILE] and flagged[BAD_TILE].flag == FLAG_TREND
    assert flagged[BAD_TILE].confidence == pytest.approx(0.015)

    ds = open_cube(path).isel(time=0)
    quality = ds.quality_sar.values
    expected = np.zeros(SHAPE, np.float32)
    expected[plan.tiles[BAD_TILE[0] * plan.n_cols + BAD_TILE[1]].core.slices] = FLAG_TREND
    np.testing.assert_array_equal(quality, expected)
    assert ds.quality_sar.attrs["flag_meanings"] == "registered fell_back_to_trend no_warp"
    # The fallback is its neighbours' trend: GOOD everywhere, the wild field nowhere.
    np.testing.assert_allclose(ds.displacement_sar.sel(component="dy"), GOOD[0], atol=1e-5)
    np.testing.assert_allclose(ds.displacement_sar.sel(component="dx"), GOOD[1], atol=1e-5)

"""Quality gating: a registration tile whose field is not credible falls back to the scene trend (or to no warp),
is flagged in the cube's quality variable, and is reported; credible tiles pass untouched."""

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
)
from pipeline.register_tiles import TileField, run_tiles
from pipeline.store import CubeLayout, Provenance
from pipeline.tiles import plan_tiles

SHAPE = (192, 256)  # 3 x 4 chunks of 64 px
GOOD, WILD = (1.5, -2.0), (29.0, 3.0)
BAD_TILE = (1, 2)


def test_a_confident_tile_near_the_trend_is_kept_and_the_others_fall_back_to_the_trend_of_the_kept():
    near = {(0, k): TileSummary((1.0 + 0.1 * k, -2.0), 0.6) for k in range(5)}
    far = TileSummary((1.0 + MAX_TREND_DEVIATION_PX + 5, -2.0), 0.9)
    unsure = TileSummary((1.1, -2.0), MIN_MEAN_CONFIDENCE / 2)
    verdicts = gate({**near, "far": far, "unsure": unsure})
    assert all(verdicts[k].flag == FLAG_REGISTERED and verdicts[k].shift == near[k].shift for k in near)
    trend = (float(np.median([s.shift[0] for s in near.values()])), -2.0)
    assert verdicts["far"].flag == verdicts["unsure"].flag == FLAG_TREND
    assert verdicts["far"].shift == verdicts["unsure"].shift == pytest.approx(trend)
    assert "from the scene trend" in verdicts["far"].reason and "mean confidence" in verdicts["unsure"].reason
    assert verdicts["unsure"].confidence == unsure.confidence


def test_with_no_credible_tile_every_tile_gets_no_warp():
    verdicts = gate({k: TileSummary((5.0, 5.0), MIN_MEAN_CONFIDENCE / 3) for k in range(4)})
    assert {v.flag for v in verdicts.values()} == {FLAG_NO_WARP}
    assert {v.shift for v in verdicts.values()} == {(0.0, 0.0)}


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
        plan.tiles, 4,
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
    assert ds.quality_sar.attrs["flag_meanings"] == "registered fell_back_to_scene_trend no_warp"
    # The fallback is the trend of the accepted tiles: GOOD everywhere, the wild field nowhere.
    np.testing.assert_allclose(ds.displacement_sar.sel(component="dy"), GOOD[0], atol=1e-5)
    np.testing.assert_allclose(ds.displacement_sar.sel(component="dx"), GOOD[1], atol=1e-5)

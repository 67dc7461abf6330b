"""Report pieces: chunk thumbnails mosaic back to the whole grid's every-step-th pixel; errors and
checkerboards are what they claim; the report names every quicklook it writes."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.register_tiles import ChunkResult, decimate
from pipeline.report import ErrorStats, TimeReport, assemble, checkerboard, end_point_error, thumb_step, write_report
from pipeline.tiles import plan_tiles


@pytest.mark.parametrize("shape,size,step", [((300, 420), 128, 3), ((256, 256), 64, 4), ((100, 90), 64, 1)])
def test_assembled_thumbnails_equal_global_decimation(shape, size, step):
    full = np.random.default_rng(0).normal(size=(2, *shape)).astype(np.float32)
    plan = plan_tiles(shape, size, 8)
    results = [ChunkResult(t, {"x": decimate(t.core, full[(slice(None), *t.core.slices)], step)}) for t in plan.tiles]
    np.testing.assert_array_equal(assemble(results, shape, step)["x"], full[:, ::step, ::step])


def test_thumb_step_bounds_the_quicklook():
    assert thumb_step((1536, 1536), 768) == 2 and thumb_step((500, 300), 768) == 1


def test_end_point_error_and_stats():
    d = np.zeros((2, 4, 4), np.float32)
    t = np.zeros_like(d)
    t[0], t[1] = 3.0, 4.0
    t[:, 0, 0] = np.nan
    epe = end_point_error(d, t)
    assert np.isnan(epe[0, 0]) and np.nanmax(epe) == pytest.approx(5.0)
    stats = ErrorStats.of(epe)
    assert stats.median == pytest.approx(5.0) and stats.mean == pytest.approx(5.0)
    assert ErrorStats.of(np.full((2, 2), np.nan)) is None


def test_checkerboard_alternates():
    board = checkerboard(np.zeros((8, 8)), np.ones((8, 8)), squares=2)
    assert board[0, 0] == 0 and board[0, 7] == 1 and board[7, 0] == 1 and board[7, 7] == 0


def test_report_links_every_quicklook(tmp_path):
    rng = np.random.default_rng(1)
    q = {
        "optical": rng.random((4, 40, 40)),
        "sar": rng.random((2, 40, 40)),
        "sar_before": rng.random((2, 40, 40)),
        "displacement_sar": rng.normal(size=(2, 40, 40)),
        "confidence_sar": rng.random((40, 40)),
    }
    time = TimeReport(
        "2024-06-04",
        {"optical": "o", "sar": "s"},
        4,
        0,
        q,
        {"sar": ErrorStats(0.2, 0.3, 0.5)},
        {"sar": np.zeros((2, 40, 40))},
    )
    path = write_report(tmp_path, [time], title="t", cube="c.zarr", method="cfog", summary_lines=["x"], step=1)
    text = path.read_text()
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert pngs == ["t00_sar_checkerboard.png", "t00_sar_error.png", "t00_sar_field.png"]
    assert all(f"({name})" in text for name in pngs)
    assert "median 0.200 px" in text


@pytest.mark.filterwarnings("error::RuntimeWarning")
@pytest.mark.parametrize("fill", [0.0, np.nan])
def test_field_quicklook_of_an_empty_field_draws_without_warnings(tmp_path, fill):
    """The identity method's all-zero field (or an all-NaN one) still gets its quicklook."""
    from pipeline.report import _save_field

    path = tmp_path / "field.png"
    _save_field(path, np.full((2, 40, 50), fill, np.float32), np.zeros((40, 50), np.float32), 4, "sar")
    assert path.stat().st_size > 0

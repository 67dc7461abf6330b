"""Report pieces: chunk thumbnails mosaic back to the whole grid's every-step-th pixel; errors and
checkerboards are what they claim; the report names every figure it writes, keeps one section per date
across runs (a rerun replaces its date's section and figures, concurrent writers lose nothing), and crops
where the reference has structure."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from kernel.field_metrics import end_point_error
from pipeline.register_tiles import ChunkResult, decimate
from pipeline.report import Crop, ErrorStats, ResidualCheck, TimeReport, assemble, thumb_step, write_report
from pipeline.report_checks import structured_windows
from pipeline.report_figures import checkerboard, save_field
from pipeline.residual_check import Residuals
from pipeline.tiles import Window, plan_tiles


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


def _time(label: str, seed: int = 1, truth: bool = True, flagged=()) -> TimeReport:
    rng = np.random.default_rng(seed)
    q = {
        "optical": rng.random((4, 40, 40)),
        "sar": rng.random((2, 40, 40)),
        "sar_before": rng.random((2, 40, 40)),
        "displacement_sar": rng.normal(size=(2, 40, 40)),
        "confidence_sar": rng.random((40, 40)),
    }
    crop = Crop(Window(4, 6, 24, 24), *(rng.random((24, 24)) for _ in range(3)))
    check = ResidualCheck("phase", Residuals(9, 9, 2.9, 2.3, 29.0, 23.0), Residuals(8, 9, 0.4, 0.3, 4.0, 3.0))
    return TimeReport(
        label,
        {"optical": f"o-{seed}", "sar": f"s-{seed}"},
        4,
        0,
        q,
        {"sar": ErrorStats(0.2, 0.3, 0.5)},
        {"sar": np.zeros((2, 40, 40))} if truth else {},
        flagged={"sar": list(flagged)},
        crops={"sar": [crop]},
        residuals={"sar": check},
    )


def _write(directory, times, summary="x"):
    return write_report(directory, times, title="t", cube="c.zarr", method="cfog", summary_lines=[summary], step=1)


FIGURES = ("checkerboard", "confidence", "crops", "error", "field")


def test_report_links_every_figure_named_by_date(tmp_path):
    path = _write(tmp_path, [_time("2024-06-04 10:20:31", flagged=[(0, 1), (2, 3)])])
    text = path.read_text()
    pngs = sorted(p.name for p in tmp_path.glob("*.png"))
    assert pngs == [f"2024-06-04T10-20-31_sar_{kind}.png" for kind in FIGURES]
    assert all(f"({name})" in text for name in pngs)
    assert "median 0.200 px" in text and "Flagged tiles: 2 (tile row, col): (0, 1), (2, 3)" in text
    assert "| unregistered input | 9 / 9 | 2.90 | 2.30 | 29.0 | 23.0 |" in text
    assert "| aligned output | 8 / 9 | 0.40 | 0.30 | 4.0 | 3.0 |" in text
    section = json.loads((tmp_path / "report.json").read_text())["sections"]["2024-06-04T10-20-31"]
    confidence = section["modalities"]["sar"]["confidence"]
    assert confidence["p50"] == pytest.approx(np.median(_time("x").quicklooks["confidence_sar"]))
    assert f"p50 {confidence['p50']:.2f}" in text


def test_two_runs_over_different_dates_keep_both_sections_in_date_order(tmp_path):
    _write(tmp_path, [_time("2024-06-14 10:20:31", seed=2)], summary="second window")
    text = _write(tmp_path, [_time("2024-06-04 10:20:31", seed=1)], summary="first window").read_text()
    assert text.index("## 2024-06-04 10:20:31") < text.index("## 2024-06-14 10:20:31")
    assert "`s-1`" in text and "`s-2`" in text and "first window" in text and "second window" not in text
    for key in ("2024-06-04T10-20-31", "2024-06-14T10-20-31"):
        assert all((tmp_path / f"{key}_sar_{kind}.png").is_file() for kind in FIGURES)
    state = json.loads((tmp_path / "report.json").read_text())
    assert list(state["sections"]) == ["2024-06-04T10-20-31", "2024-06-14T10-20-31"]


def test_a_rerun_replaces_only_its_dates_section_and_leaves_no_stale_figure(tmp_path):
    _write(tmp_path, [_time("2024-06-04 10:20:31", seed=1), _time("2024-06-14 10:20:31", seed=2)])
    other = json.loads((tmp_path / "report.json").read_text())["sections"]["2024-06-14T10-20-31"]
    _write(tmp_path, [_time("2024-06-04 10:20:31", seed=3, truth=False, flagged=[(1, 1)])])
    state = json.loads((tmp_path / "report.json").read_text())
    assert state["sections"]["2024-06-14T10-20-31"] == other
    rerun = state["sections"]["2024-06-04T10-20-31"]
    assert rerun["items"]["sar"] == "s-3" and rerun["modalities"]["sar"]["flagged"] == [[1, 1]]
    pngs = {p.name for p in tmp_path.glob("*.png")}
    assert "2024-06-04T10-20-31_sar_error.png" not in pngs  # the rerun had no truth: its error figure went
    assert pngs == set(rerun["files"]) | set(other["files"])
    text = (tmp_path / "report.md").read_text()
    assert text.count("## 2024-06-04 10:20:31") == 1 and "`s-1`" not in text and "`s-3`" in text


def test_concurrent_writers_lose_no_date(tmp_path):
    """Backfill windows in threads of one process, each writing its date into one report at once."""
    labels = [f"2024-06-{day:02d} 10:20:31" for day in range(1, 7)]
    errors = []

    def write(label, seed):
        try:
            _write(tmp_path, [_time(label, seed=seed)])
        except Exception as error:  # surfaced by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=write, args=(label, n)) for n, label in enumerate(labels)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    state = json.loads((tmp_path / "report.json").read_text())
    assert [s["label"] for s in state["sections"].values()] == labels
    text = (tmp_path / "report.md").read_text()
    assert all(f"## {label}" in text for label in labels)


def test_a_report_of_the_earlier_layout_loses_its_run_indexed_figures(tmp_path):
    """Figures named by run index (before report.json) would linger beside the dated ones forever."""
    for name in ("t00_sar_checkerboard.png", "t01_dem_field.png"):
        (tmp_path / name).write_bytes(b"png")
    (tmp_path / "report.md").write_text("# old report\n")
    (tmp_path / "notes.png").write_bytes(b"the operator's own")
    _write(tmp_path, [_time("2024-06-04 10:20:31")])
    state = json.loads((tmp_path / "report.json").read_text())
    pngs = {p.name for p in tmp_path.glob("*.png")}
    assert pngs == set(state["sections"]["2024-06-04T10-20-31"]["files"]) | {"notes.png"}
    (tmp_path / "t00_later.png").write_bytes(b"written after the upgrade")
    _write(tmp_path, [_time("2024-06-14 10:20:31")])
    assert (tmp_path / "t00_later.png").exists()  # only a report without its state is upgraded


def test_a_report_state_it_cannot_read_starts_the_report_again(tmp_path):
    (tmp_path / "report.json").write_text("{not json")
    _write(tmp_path, [_time("2024-06-04 10:20:31")])
    assert list(json.loads((tmp_path / "report.json").read_text())["sections"]) == ["2024-06-04T10-20-31"]


def test_crops_go_where_the_reference_has_structure_and_data():
    """A flat quicklook with two textured patches and a no-data corner: the crops cover the patches only."""
    rng = np.random.default_rng(0)
    reference = np.full((3, 100, 100), 0.5)
    reference[:, 10:30, 60:80] = rng.random((3, 20, 20))
    reference[:, 60:80, 10:30] = rng.random((3, 20, 20))
    reference[:, 85:, 85:] = np.nan
    picks = structured_windows(reference, step=4, shape=(400, 400), size=80, count=3)
    patches = ((80, 280), (280, 80))  # the textured patches' centres at full resolution
    assert all(any(w.row <= y < w.row + 80 and w.col <= x < w.col + 80 for w in picks[:2]) for y, x in patches)
    for w in picks:
        assert 0 <= w.row <= 400 - 80 and 0 <= w.col <= 400 - 80 and (w.height, w.width) == (80, 80)
        assert np.isfinite(reference[:, w.row // 4 : (w.row + 80) // 4, w.col // 4 : (w.col + 80) // 4]).all()


@pytest.mark.filterwarnings("error::RuntimeWarning")
@pytest.mark.parametrize("fill", [0.0, np.nan])
def test_field_quicklook_of_an_empty_field_draws_without_warnings(tmp_path, fill):
    """The identity method's all-zero field (or an all-NaN one) still gets its quicklook."""
    path = tmp_path / "field.png"
    save_field(path, np.full((2, 40, 50), fill, np.float32), np.zeros((40, 50), np.float32), 4, "sar")
    assert path.stat().st_size > 0


def test_concurrent_writer_processes_lose_no_date(tmp_path):
    """Backfill windows in separate processes writing one report at once."""
    labels = [f"2024-07-{day:02d} 10:20:31" for day in range(1, 4)]
    script = "import sys; from pathlib import Path; from tests.test_pipeline_report import _time, _write; "
    script += "_write(Path(sys.argv[1]), [_time(sys.argv[2], seed=int(sys.argv[3]))])"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    runs = [
        subprocess.Popen([sys.executable, "-c", script, str(tmp_path), label, str(n)], env=env)
        for n, label in enumerate(labels)
    ]
    assert [run.wait(timeout=300) for run in runs] == [0] * len(labels)
    state = json.loads((tmp_path / "report.json").read_text())
    assert [s["label"] for s in state["sections"].values()] == labels

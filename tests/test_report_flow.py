"""The report as real runs write it (generated archive -> local STAC API -> Prefect server -> Dask -> cube):
a backfill with one window per date accumulates one section per date with its date-named figures, a rerun
of one date leaves the other date's section as it was, and the independent residual check, measured on the
images alone, finds less misregistration on the aligned output than on the unregistered input."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest

from kernel.config import ClusterConfig, RunConfig, SearchConfig, TileConfig
from pipeline.cube import open_cube

WINDOW_DAYS = 7  # the archive's dates are 10 days apart: one date per window


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    from catalogs.server import serve_static_catalog
    from datagen.demo_archive import generate_archive

    info = generate_archive(tmp_path_factory.mktemp("archive"), size=256, dates=2, seed=4)
    with serve_static_catalog(info.catalog) as server:
        yield info, server.url


@pytest.fixture(scope="module")
def region(archive, prefect_api, tmp_path_factory):
    """A cfog backfill of the archive, window by window, into one cube and one report."""
    from distributed import LocalCluster

    from flows.backfill import backfill

    info, url = archive
    root = tmp_path_factory.mktemp("region")
    with LocalCluster(n_workers=1, threads_per_worker=2, dashboard_address=None) as cluster:
        config = RunConfig(
            bbox=info.bbox,
            start=info.start,
            end=info.end,
            out=str(root / "cube.zarr"),
            search=SearchConfig(profile="local", catalog_url=url),
            method="cfog",
            tiles=TileConfig(size=128, halo=32),
            cluster=ClusterConfig(address=cluster.scheduler_address),
            report_dir=str(root / "report"),
        )
        summary = backfill(config, info.start, info.end, window_days=WINDOW_DAYS)
        assert [s.scene_sets for s in summary.runs if s.scene_sets] == [1, 1]
        yield config, root / "report", cluster.scheduler_address


def _state(report) -> dict:
    return json.loads((report / "report.json").read_text())


def test_a_backfill_leaves_one_section_per_date_with_its_figures(region):
    config, report, _ = region
    times = open_cube(config.out).time.values
    sections = _state(report)["sections"]
    assert list(sections) == [str(t.astype("datetime64[s]")).replace(":", "-") for t in times]
    text = (report / "report.md").read_text()
    for key, section in sections.items():
        assert f"## {section['label']}" in text and set(section["modalities"]) == {"sar", "dem"}
        for name in section["files"]:
            assert name.startswith(key) and (report / name).stat().st_size > 1000 and f"({name})" in text
    assert {p.name for p in report.glob("*.png")} == {name for s in sections.values() for name in s["files"]}


def test_the_residual_check_is_in_the_report_and_lower_after_registration(region):
    """SAR, which cfog registers to a few tenths of a pixel here; the DEM's check is reported, not judged (on this
    archive cfog leaves the DEM no better than it came, and its check may say so)."""
    _, report, _ = region
    text = (report / "report.md").read_text()
    for section in _state(report)["sections"].values():
        check = section["modalities"]["sar"]["residual"]
        assert check["kind"] == "phase"  # cfog matches local features: its check correlates phase
        before, after = check["before"], check["after"]
        assert after["rmse_px"] < before["rmse_px"] and after["ce90_px"] < before["ce90_px"], check
        assert before["ce90_px"] > 1.0 and after["ce90_px"] < 1.0, check
        for name, stats in (("unregistered input", before), ("aligned output", after)):
            row = (
                f"| {name} | {stats['points']} / {stats['windows']} | {stats['ce90_px']:.2f} | {stats['rmse_px']:.2f} |"
            )
            assert row in text
        assert section["modalities"]["dem"]["residual"]["kind"] == "phase"


def test_a_rerun_of_one_date_replaces_only_that_section(region, archive):
    from flows.register_region import register_region

    config, report, _ = region
    info, _ = archive
    first, second = _state(report)["sections"].values()
    rerun = config.model_copy(update={"end": info.start + timedelta(days=WINDOW_DAYS - 1)})
    assert register_region(rerun).tiles_written == 0
    sections = _state(report)["sections"]
    assert sections[second["date"]] == second
    again = sections[first["date"]]
    assert again["tiles_written"] == 0 and again["tiles_skipped"] == first["tiles_written"]
    assert again["modalities"]["sar"]["residual"] == first["modalities"]["sar"]["residual"]
    assert {p.name for p in report.glob("*.png")} == set(first["files"]) | set(second["files"])

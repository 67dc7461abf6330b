"""A run as an operator sees it, through a real local Prefect API and the real flow on the demo archive: dsmar's
INFO lines in the run's Prefect logs, its markdown artifact, its flow-run id in the cube, and a registration tile
forced wild by a test-only method flagged in the cube and the summary instead of being warped in."""

from __future__ import annotations

import numpy as np
import pytest

from kernel.config import ClusterConfig, RunConfig, SearchConfig, TileConfig
from pipeline.quality import FLAG_REGISTERED, FLAG_TREND, TREND_RADIUS
from pipeline.tiles import plan_tiles

TILE, HALO = 64, 16
WILD = (29.0, 3.0)  # cfog's failure on one 128 px DEM tile, at confidence 0.015
WILD_METHOD = "test-wild-tile"
_wild_shape: list[tuple[int, int]] = []  # the SAR window shape the method answers wildly on (set by the fixture)


def _wild_tile():
    """`phase`, except on SAR windows of `_wild_shape`: there a WILD constant field at confidence 0.015."""
    from models.api import method_spec, register_pair

    phase = method_spec("phase")

    def register(fixed, moving, *, fixed_modality, moving_modality, **_):
        if moving_modality == "sar" and fixed.shape[-2:] in _wild_shape:
            h, w = fixed.shape[-2:]
            field = np.empty((2, h, w), np.float32)
            field[0], field[1] = WILD
            return field, np.full((h, w), 0.015, np.float32)
        result = register_pair(
            fixed, moving, fixed_modality=fixed_modality, moving_modality=moving_modality, method=phase
        )
        return result.displacement, result.confidence

    return register


@pytest.fixture(scope="module")
def run(prefect_api, tmp_path_factory):
    """One real flow run on threads in this process (so the test-only method is known to its workers)."""
    from distributed import LocalCluster

    from catalogs.server import serve_static_catalog
    from datagen.demo_archive import generate_archive
    from flows.register_region import register_region
    from models.registry import register_method, registered

    register_method(WILD_METHOD)(_wild_tile)
    info = generate_archive(tmp_path_factory.mktemp("archive"), size=256, dates=1, seed=3)
    out = tmp_path_factory.mktemp("out") / "Visible Cube.zarr"
    try:
        with (
            serve_static_catalog(info.catalog) as server,
            LocalCluster(n_workers=1, threads_per_worker=2, processes=False, dashboard_address=None) as cluster,
        ):
            config = RunConfig(
                bbox=info.bbox,
                start=info.start,
                end=info.end,
                out=str(out),
                search=SearchConfig(profile="local", catalog_url=server.url),
                method=WILD_METHOD,
                tiles=TileConfig(size=TILE, halo=HALO),
                cluster=ClusterConfig(address=cluster.scheduler_address),
            )
            shape = _grid_shape(config)
            plan = plan_tiles(shape, TILE, HALO)
            shapes = [(t.outer.height, t.outer.width) for t in plan.tiles]
            wild = next(t for t, s in zip(plan.tiles, shapes, strict=True) if shapes.count(s) == 1)
            _wild_shape.append(shapes[plan.tiles.index(wild)])
            summary = register_region(config)
        yield summary, out, plan, (wild.i, wild.j)
    finally:
        _wild_shape.clear()
        del registered()[WILD_METHOD]  # type: ignore[attr-defined]  (the table is a dict: no other test sees it)


def _grid_shape(config: RunConfig) -> tuple[int, int]:
    from catalogs.colocate import find_scene_sets
    from catalogs.profiles import profile_for
    from flows.register_region import plan_cube

    found = find_scene_sets(profile_for(config.search), config, config.search)
    return plan_cube(found.scene_sets, config).grid.shape


def test_the_forced_wild_tile_is_flagged_falls_back_to_the_trend_and_is_reported(run):
    """The wild tile is flagged (and so is any tile `phase` itself got wrong), the cube's quality variable
    flags exactly the flagged tiles' cores, and the wild field is nowhere in the cube."""
    from pipeline.cube import open_cube

    summary, out, plan, wild = run
    (outcome,) = summary.outcomes
    flagged = outcome.flagged["sar"]
    assert wild in flagged and summary.failed == ()
    listed = ", ".join(map(str, flagged))
    assert f"Flagged {outcome.label} sar: registration tiles {listed} fell back" in _lines(summary)
    ds = open_cube(str(out)).isel(time=0)
    quality = ds.quality_sar.values
    for tile in plan.tiles:  # SAR registers on the chunk tiles themselves
        expected = FLAG_TREND if (tile.i, tile.j) in flagged else FLAG_REGISTERED
        assert (quality[tile.core.slices] == expected).all(), (tile.i, tile.j)
    assert (ds.quality_dem.values == FLAG_REGISTERED).all()
    field = ds.displacement_sar.values
    assert (np.hypot(field[0] - WILD[0], field[1] - WILD[1]) > 15).all()  # the wild field is nowhere
    core = plan.tiles[wild[0] * plan.n_cols + wild[1]].core
    centre = field[:, core.row + core.height // 2, core.col + core.width // 2]
    near = [
        np.median(field[(slice(None), *t.core.slices)], axis=(1, 2))
        for t in plan.tiles
        if max(abs(t.i - wild[0]), abs(t.j - wild[1])) <= TREND_RADIUS and (t.i, t.j) not in flagged
    ]
    np.testing.assert_allclose(centre, np.median(near, axis=0), atol=0.5)  # its neighbours' trend


def _lines(summary) -> list[str]:
    from flows.register_region import summary_lines

    return summary_lines(summary)


def test_the_cube_names_the_flow_run_whose_logs_hold_dsmars_info_lines(run):
    from prefect import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId

    from pipeline.cube import open_cube

    summary, out, _, _ = run
    (run_id,) = set(open_cube(str(out)).flow_run_id.values)
    with get_client(sync_client=True) as client:
        flow_run = client.read_flow_run(run_id)
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[flow_run.id])))
    assert flow_run.state.is_completed()
    messages = [entry.message for entry in logs if entry.name == "dsmar"]
    assert any("tiles to register" in m for m in messages), messages
    assert any("flagged" in m for m in messages)
    assert any(entry.level == 20 for entry in logs if entry.name == "dsmar")  # INFO, not only warnings


def test_the_run_publishes_a_markdown_artifact_under_its_cubes_key(run):
    from prefect.artifacts import Artifact

    from flows.run_visibility import artifact_key

    summary, out, _, wild = run
    assert artifact_key(str(out)) == "dsmar-visible-cube"
    artifact = Artifact.get("dsmar-visible-cube")
    assert artifact is not None and artifact.type == "markdown"
    text = str(artifact.data)
    assert f"Cube: `{out}`" in text and "| scene set | written | skipped | failed | seconds | quality |" in text
    (outcome,) = summary.outcomes
    assert f"| {outcome.label} | {outcome.tiles_written} | 0 | 0 |" in text
    assert "sar: mean confidence" in text and f"flagged {wild}" in text


def test_only_lines_logged_inside_the_run_reach_its_logs_and_nested_flows_send_each_once(prefect_api, recwarn):
    import logging
    import threading

    from prefect import flow, get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
    from prefect.logging.handlers import APILogHandler
    from prefect.runtime import flow_run

    from flows.run_visibility import dsmar_logs_in_prefect

    log = logging.getLogger("dsmar")

    @flow
    def inner() -> None:
        with dsmar_logs_in_prefect():
            log.info("from the nested flow")

    @flow
    def outer() -> str:
        with dsmar_logs_in_prefect():
            log.info("from the flow")
            worker = threading.Thread(target=log.info, args=("from a worker thread",))
            worker.start()
            worker.join()
            inner()
        return flow_run.id

    run_id = outer()
    with get_client(sync_client=True) as client:
        ids = [r.id for r in client.read_flow_runs() if str(r.id) == run_id or r.parent_task_run_id is not None]
        logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=ids)))
    messages = [entry.message for entry in logs if entry.name == "dsmar"]
    assert messages.count("from the flow") == 1 and messages.count("from the nested flow") == 1
    assert "from a worker thread" not in messages
    assert not [w for w in recwarn if "without a flow run id" in str(w.message)]
    assert not any(isinstance(h, APILogHandler) for h in log.handlers)  # gone with the block

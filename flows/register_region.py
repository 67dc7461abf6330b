"""The production flow: search -> per scene set: grid, lazy loads, tiles on Dask, blend, warp, write.

One Prefect task per stage and per scene set, so the Prefect UI shows where a run is and what
failed. The tile map runs on a `distributed.Client` directly inside a task (not `DaskTaskRunner`:
without a Prefect server every Dask worker would start its own temporary Prefect API).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC
from pathlib import Path

import numpy as np
from distributed import get_task_stream
from prefect import flow, task
from prefect.cache_policies import NO_CACHE

from catalogs.colocate import ColocationResult, find_scene_sets, item_time
from catalogs.profiles import CatalogProfile, profile_for
from catalogs.scenes import SceneSet
from kernel.config import RunConfig
from kernel.contracts import MODALITY, REFERENCE, REGISTERED, MethodSpec
from kernel.field_metrics import end_point_error
from kernel.version import __version__
from models.api import method_spec
from models.tile_registrator import MethodRegistrator
from pipeline.cluster import dask_client
from pipeline.grid import Grid
from pipeline.load import load_stack, load_truth, optical_grid
from pipeline.outputs import open_store
from pipeline.register_tiles import ChunkResult, decimate, registration_plan, run_tiles
from pipeline.report import ErrorStats, TimeReport, assemble, thumb_step, write_report
from pipeline.stac_output import write_cube_stac
from pipeline.store import CubeLayout, CubeStore, Provenance, cube_attrs, inputs_hash, time_settings
from pipeline.tiles import Tile, TilePlan, plan_tiles, region_grid
from pipeline.timings import WORKER_STAGES, StageClock, cpu_between, worker_seconds, workers_usage

log = logging.getLogger("dsmar")


@dataclass(frozen=True)
class SceneSetOutcome:
    label: str
    tiles_written: int
    tiles_skipped: int
    errors: dict[str, ErrorStats | None]  # the registered field's error vs truth
    report: TimeReport
    unregistered: dict[str, ErrorStats | None] = field(default_factory=dict)  # the input's own error vs truth
    stages: dict[str, float] = field(default_factory=dict)  # client wall seconds per stage (`pipeline.timings`)
    worker_seconds: dict[str, float] = field(default_factory=dict)  # worker core-seconds per stage of the tiles


@dataclass(frozen=True)
class RunSummary:
    """What a run did; the CLI prints it and the demo checks its errors against truth."""

    out: str
    report: str | None
    scene_sets: int
    tiles_per_scene: int
    tiles_written: int
    tiles_skipped: int
    wall_seconds: float
    outcomes: tuple[SceneSetOutcome, ...] = ()
    skipped: tuple[str, ...] = ()  # scene sets not processed, with the reason
    rejections: tuple[tuple[str, str], ...] = ()  # (item id, reason) from the search
    stages: dict[str, float] = field(default_factory=dict)  # client wall seconds per stage (`pipeline.timings`)
    worker_seconds: dict[str, float] = field(default_factory=dict)  # worker core-seconds per stage of the tiles
    threads: int = 0  # worker threads of the cluster the tiles ran on
    worker_peak_rss: dict[str, int] = field(default_factory=dict)  # bytes, by worker address
    worker_cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds of the workers per stage
    client_cpu: float = 0.0  # CPU seconds of this process during the run

    def error(self, modality: str, unregistered: bool = False) -> ErrorStats | None:
        """Median/mean end-point error vs truth over all time steps that had truth: of the registered field,
        or (`unregistered`) of the input as it came, which is what the registration is measured against."""
        by_time = [o.unregistered if unregistered else o.errors for o in self.outcomes]
        stats = [errors[modality] for errors in by_time if errors.get(modality) is not None]
        if not stats:
            return None
        return ErrorStats(
            float(np.median([s.median for s in stats])),
            float(np.mean([s.mean for s in stats])),
            float(np.max([s.p90 for s in stats])),
        )


def _utc(item) -> np.datetime64:
    moment = item_time(item)
    if moment.tzinfo is not None:
        moment = moment.astimezone(UTC).replace(tzinfo=None)
    return np.datetime64(moment, "ns")


def _bands(profile: CatalogProfile, config: RunConfig) -> dict[str, tuple[str, ...]]:
    keys = profile.asset_keys
    return {modality: tuple(keys.of(modality)) for modality in (REFERENCE, *config.modalities)}


@task(name="search", cache_policy=NO_CACHE)
def search_scenes(config: RunConfig) -> ColocationResult:
    return find_scene_sets(profile_for(config.search), config, config.search)


@dataclass(frozen=True)
class CubePlan:
    grid: Grid
    full_grid: Grid  # the optical item's own grid (truth assets live on it)
    plan: TilePlan
    scene_sets: tuple[SceneSet, ...]
    skipped: tuple[str, ...]


def plan_cube(scene_sets: Sequence[SceneSet], config: RunConfig) -> CubePlan:
    """The cube grid is the first scene's optical grid cut to the bbox; scenes on another grid wait for another cube."""
    keys = scene_sets[0].asset_keys
    full = optical_grid(scene_sets[0].optical, keys)
    grid = region_grid(full, config.bbox)
    accepted, skipped, taken = [], [], {}
    for scene_set in scene_sets:
        own = region_grid(optical_grid(scene_set.optical, keys), config.bbox)
        when = _utc(scene_set.optical)
        if when in taken:  # e.g. one acquisition reprocessed under two baselines: the cube has one slot per time
            skipped.append(f"{scene_set.optical.id}: same acquisition time as {taken[when]}, which is kept")
        elif own == grid:
            taken[when] = scene_set.optical.id
            accepted.append(scene_set)
        else:
            skipped.append(
                f"{scene_set.optical.id}: optical grid differs from {scene_sets[0].optical.id}'s "
                "(another tile or CRS); run it into another --out"
            )
    plan = plan_tiles(grid.shape, config.tiles.size, config.tiles.halo)
    return CubePlan(grid, full, plan, tuple(accepted), tuple(skipped))


@task(name="prepare-cube", cache_policy=NO_CACHE)
def prepare_cube(
    store: CubeStore, cube: CubePlan, config: RunConfig, profile: CatalogProfile, method: MethodSpec
) -> dict[np.datetime64, int]:
    times = tuple(_utc(s.optical) for s in cube.scene_sets)
    settings = time_settings(method, config.tiles.size, config.tiles.halo)
    provenance = [
        Provenance(
            s.optical.id,
            ",".join(i.id for i in s.sar),
            _utc(s.sar[0]) if s.sar else np.datetime64("NaT", "ns"),
            ",".join(i.id for i in s.dem),
            settings,
        )
        for s in cube.scene_sets
    ]
    layout = CubeLayout(cube.grid, cube.plan, times, _bands(profile, config))
    catalog = {
        "profile": profile.name,
        "url": profile.url,
        **{modality: profile.collection(modality) for modality in (REFERENCE, *REGISTERED)},
    }
    return store.init(layout, provenance, cube_attrs(config.to_json(), catalog, method))


class _Progress:
    """Prints 'label: tiles done/total' at most ~20 times per scene set, so long runs show life."""

    def __init__(self, label: str):
        self.label, self.last = label, -1.0

    def __call__(self, done: int, total: int) -> None:
        share = done / total
        if done == total or share - self.last >= 0.05:
            self.last = share
            log.info("  %s: tiles %d/%d", self.label, done, total)


def _crop(truth: np.ndarray, full: Grid, grid: Grid) -> np.ndarray:
    col, row = ~full.affine @ (grid.transform[2], grid.transform[5])
    r, c = int(round(row)), int(round(col))
    return truth[:, r : r + grid.height, c : c + grid.width]


@task(name="register-scene-set", cache_policy=NO_CACHE)
def register_scene_set(
    client,
    store: CubeStore,
    scene_set: SceneSet,
    cube: CubePlan,
    time_index: int,
    config: RunConfig,
    profile: CatalogProfile,
    method: MethodSpec,
) -> SceneSetOutcome:
    """Register SAR and DEM of one scene set onto its optical scene, tile by tile, into the cube."""
    label = str(_utc(scene_set.optical).astype("datetime64[s]")).replace("T", " ")
    keys = scene_set.asset_keys
    size = config.tiles.size
    clock = StageClock()

    def load(modality: str):
        items = [profile.resign(i) for i in scene_set.items(modality)]
        return load_stack(items, keys.of(modality), cube.grid, chunks=size, quirks=profile.quirks)

    with clock("inputs"):
        fixed = load(REFERENCE)
        moving = {modality: load(modality) for modality in config.modalities}
    registration = {modality: registration_plan(cube.plan, modality) for modality in moving}
    fingerprint = inputs_hash(
        __version__,
        method.fingerprint,
        size,
        config.tiles.halo,
        scene_set.optical.id,
        [i.id for i in scene_set.sar],
        [i.id for i in scene_set.dem],
        sorted(moving),
        {m: (plan.size, plan.halo) for m, plan in registration.items()},  # each modality's registration tiles
    )
    written = store.written(time_index)
    todo = [t for t in cube.plan.tiles if written[t.i, t.j] != fingerprint]
    step = thumb_step(cube.grid.shape)
    log.info("%s: %d tiles to register (%d up to date)", label, len(todo), len(cube.plan.tiles) - len(todo))
    with clock("tiles"), get_task_stream(client) as stream:
        results = run_tiles(
            client,
            cube.plan,
            fixed,
            moving,
            MethodRegistrator(method),
            store,
            time_index,
            fingerprint,
            todo,
            step,
            on_progress=_Progress(label),
        )
    busy = worker_seconds(stream.data, sum(r.write_seconds for r in results))
    with clock("score"):
        if config.report_dir:
            done = {(t.i, t.j) for t in todo}
            skipped = [t for t in cube.plan.tiles if (t.i, t.j) not in done]
            results += [_thumbnails_from_cube(store, time_index, tile, moving, step) for tile in skipped]
        errors, unregistered, truths = _score(store, scene_set, cube, moving, time_index, step)
    report = TimeReport(
        label,
        {modality: ", ".join(i.id for i in scene_set.items(modality)) for modality in (REFERENCE, *REGISTERED)},
        len(todo),
        len(cube.plan.tiles) - len(todo),
        assemble(results, cube.grid.shape, step),
        errors,
        truths,
        unregistered,
    )
    written, skipped = len(todo), len(cube.plan.tiles) - len(todo)
    return SceneSetOutcome(label, written, skipped, errors, report, unregistered, clock.seconds, busy)


def _thumbnails_from_cube(store: CubeStore, time_index: int, tile: Tile, moving, step: int) -> ChunkResult:
    """A skipped chunk's quicklooks: the aligned data from the cube, the 'before' from the source."""
    ys, xs = tile.core.slices
    registered = [MODALITY[m] for m in moving]
    names = [REFERENCE, *moving, *(m.displacement_var for m in registered), *(m.confidence_var for m in registered)]
    thumbs = {name: decimate(tile.core, store.read(name, time_index, tile.core), step) for name in names}
    for modality, image in moving.items():
        before = image.isel(y=ys, x=xs).values
        thumbs[f"{modality}_before"] = decimate(tile.core, before, step)
    return ChunkResult(tile, thumbs)


def _score(store: CubeStore, scene_set: SceneSet, cube: CubePlan, modalities, time_index: int, step: int):
    """End-point error against the items' `truth_displacement`, where they carry one, of the cube's fields and of
    the unregistered input (the zero field): the geolocation error before and after registration."""
    errors, unregistered, truths = {}, {}, {}
    for modality in modalities:
        items = scene_set.items(modality)
        truth = next((t for t in (load_truth(i, cube.full_grid) for i in items) if t is not None), None)
        if truth is None:
            continue
        truth = _crop(truth, cube.full_grid, cube.grid)
        recovered = store.read(MODALITY[modality].displacement_var, time_index)
        errors[modality] = ErrorStats.of(end_point_error(recovered, truth))
        unregistered[modality] = ErrorStats.of(end_point_error(np.zeros_like(truth), truth))
        truths[modality] = truth[:, ::step, ::step]
    return errors, unregistered, truths


@task(name="report", cache_policy=NO_CACHE)
def report_task(directory: str, outcomes: Sequence[SceneSetOutcome], cube: CubePlan, config: RunConfig, lines) -> str:
    path = write_report(
        Path(directory),
        [o.report for o in outcomes],
        title="dsmar registration report",
        cube=config.out,
        method=config.method,
        summary_lines=lines,
        step=thumb_step(cube.grid.shape),
    )
    return str(path)


@flow(name="register-region", log_prints=False)
def register_region(config: RunConfig) -> RunSummary:
    """Search the catalog for the config's region and period and write the aligned cube (and report)."""
    started, started_cpu = time.perf_counter(), time.process_time()
    clock = StageClock()
    method = method_spec(config.method)  # weights and settings resolved once, for the attrs, hashes and tiles
    profile = profile_for(config.search)
    with clock("search"):
        found = search_scenes(config)
    rejections = tuple((r.item_id, r.reason) for r in found.rejections)
    if not found.scene_sets:
        return RunSummary(config.out, None, 0, 0, 0, 0, time.perf_counter() - started, rejections=rejections)
    with clock("plan"):
        cube = plan_cube(found.scene_sets, config)
    log.info(
        "%d scene set(s); grid %d x %d px; %d tiles of %d px (+%d halo) each",
        len(cube.scene_sets),
        cube.grid.height,
        cube.grid.width,
        len(cube.plan.tiles),
        config.tiles.size,
        config.tiles.halo,
    )
    outcomes = []
    store = open_store(config.out)
    cluster_started = time.perf_counter()
    with dask_client(config.cluster) as client, store.lock():
        clock.add({"cluster": time.perf_counter() - cluster_started})
        usage_before = workers_usage(client)
        # Only once the cluster answers: an unreachable scheduler must not leave an empty cube behind.
        with clock("layout"):
            index = prepare_cube(store, cube, config, profile, method)
        for scene_set in cube.scene_sets:
            t = index[_utc(scene_set.optical)]
            outcomes.append(register_scene_set(client, store, scene_set, cube, t, config, profile, method))
        threads, usage_after = sum(client.nthreads().values()), workers_usage(client)
        cluster_closing = time.perf_counter()
    clock.add({"cluster": time.perf_counter() - cluster_closing})
    for outcome in outcomes:
        clock.add(outcome.stages)
    with clock("stac"):
        stac = write_cube_stac(store.url)
    if stac is not None:
        log.info("STAC catalog of the cube: %s", stac)
    summary = RunSummary(
        config.out,
        None,
        len(outcomes),
        len(cube.plan.tiles),
        sum(o.tiles_written for o in outcomes),
        sum(o.tiles_skipped for o in outcomes),
        time.perf_counter() - started,
        tuple(outcomes),
        cube.skipped,
        rejections,
        clock.seconds,
        {stage: sum(o.worker_seconds.get(stage, 0.0) for o in outcomes) for stage in WORKER_STAGES},
        threads,
        {worker: use["peak_rss"] for worker, use in usage_after.items()},
        cpu_between(usage_before, usage_after),
    )
    if config.report_dir:
        with clock("report"):
            report = report_task(config.report_dir, outcomes, cube, config, summary_lines(summary))
        summary = replace(summary, report=report, stages=clock.seconds, wall_seconds=time.perf_counter() - started)
    return replace(summary, client_cpu=time.process_time() - started_cpu)


def summary_lines(summary: RunSummary) -> list[str]:
    """The human summary, shared by the CLI and report.md."""
    lines = [
        f"Scene sets: {summary.scene_sets}; tiles per scene: {summary.tiles_per_scene}; "
        f"tiles written: {summary.tiles_written}, skipped (up to date): {summary.tiles_skipped}",
        f"Wall time: {summary.wall_seconds:.1f} s",
    ]
    for modality in REGISTERED:
        stats, before = summary.error(modality), summary.error(modality, unregistered=True)
        if stats is not None:
            unmoved = f" (unregistered: median {before.median:.3f} px)" if before is not None else ""
            lines.append(
                f"{modality.upper()} field vs injected truth: median EPE {stats.median:.3f} px, "
                f"mean EPE {stats.mean:.3f} px{unmoved}"
            )
    lines += [f"Not processed: {reason}" for reason in summary.skipped]
    return lines

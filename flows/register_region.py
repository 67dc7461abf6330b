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
from prefect.runtime import flow_run

from catalogs.colocate import ColocationResult, find_scene_sets, item_time
from catalogs.profiles import CatalogProfile, profile_for
from catalogs.scenes import SceneSet
from flows.run_visibility import dsmar_logs_in_prefect, publish_run_artifact
from flows.shared_cluster import cluster_for
from kernel.config import RunConfig
from kernel.contracts import MODALITY, REFERENCE, REGISTERED, MethodSpec
from kernel.field_metrics import end_point_error
from kernel.version import __version__
from models.api import method_spec
from models.tile_registrator import MethodRegistrator
from pipeline.cluster import warmed_workers
from pipeline.grid import Grid
from pipeline.load import load_stack, load_truth, optical_grid
from pipeline.outputs import open_store
from pipeline.preflight import check_workers
from pipeline.progress import TileProgress, TileRate
from pipeline.register_tiles import ChunkResult, decimate, registration_plan, run_tiles
from pipeline.report import ErrorStats, TimeReport, assemble, thumb_step, write_report
from pipeline.report_checks import full_resolution_evidence
from pipeline.stac_output import write_cube_stac
from pipeline.store import CubeLayout, CubeStore, Provenance, cube_attrs, inputs_hash, time_settings
from pipeline.tile_scratch import TileScratch
from pipeline.tiles import CONTEXT_RULE, Tile, TilePlan, plan_tiles, region_grid
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
    failed: tuple[str, ...] = ()  # chunks not written: "YYYY-MM-DD modality tile (i, j): reason"
    # Per modality, of the registration tiles this run registered (none where every chunk was up to date): those
    # quality gating flagged, (row, col) in the modality's registration plan, and each one's mean confidence.
    flagged: dict[str, list[tuple[int, int]]] = field(default_factory=dict)
    tile_confidence: dict[str, list[float]] = field(default_factory=dict)
    seconds: float = 0.0  # wall time of the scene set: load, register, write, score
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
    failed: tuple[str, ...] = ()  # chunks not written, "YYYY-MM-DD modality tile (i, j): reason"; a rerun retries them
    stages: dict[str, float] = field(default_factory=dict)  # client wall seconds per stage (`pipeline.timings`)
    worker_seconds: dict[str, float] = field(default_factory=dict)  # worker core-seconds per stage of the tiles
    threads: int = 0  # worker threads of the cluster the tiles ran on
    worker_peak_rss: dict[str, int] = field(default_factory=dict)  # bytes, by worker address
    worker_cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds of the workers per stage
    client_cpu: float = 0.0  # CPU seconds of this process during the run
    # Workers there at the start and gone at the end (killed above 95 % of their memory limit, or lost): their CPU
    # time and peak memory are not in `worker_cpu` and `worker_peak_rss`.
    workers_restarted: int = 0

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
            flow_run.id or "",
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
    """Logs 'label: tiles written and registered (share), rate, ETA' at most ~20 times per scene set, so long runs
    show life from their first registrations on."""

    def __init__(self, label: str, tiles: Sequence[Tile]):
        megapixels = sum(t.core.height * t.core.width for t in tiles) / 1e6
        self.label, self.last = label, -1.0
        self.rate = TileRate(megapixels, time.monotonic())

    def __call__(self, progress: TileProgress) -> None:
        share = progress.share
        if share >= 1 or share - self.last >= 0.05:
            self.last = share
            log.info("  %s: %s", self.label, self.rate.line(progress, time.monotonic()))


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
    started = time.perf_counter()
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
        CONTEXT_RULE,
    )
    written = store.written(time_index)
    todo = [t for t in cube.plan.tiles if written[t.i, t.j] != fingerprint]
    step = thumb_step(cube.grid.shape)
    log.info("%s: %d tiles to register (%d up to date)", label, len(todo), len(cube.plan.tiles) - len(todo))
    with clock("tiles"), get_task_stream(client) as stream:
        run = run_tiles(
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
            scratch=TileScratch(store.scratch_url),
            on_progress=_Progress(label, todo),
        )
    results = run.chunks
    busy = worker_seconds(stream.data, sum(r.write_seconds for r in results))
    failed = tuple(f.describe(label[:10]) for f in run.failed)
    for line in failed:
        log.warning("tile failed, not written (a rerun retries it): %s", line)
    for m, tiles in run.flagged.items():
        for k in tiles:
            v = run.verdicts[m][k]
            log.warning("%s %s registration tile %s flagged (quality %d): %s", label, m, k, v.flag, v.reason)
    with clock("score"):
        if config.report_dir:
            done = {(t.i, t.j) for t in todo}
            skipped = [t for t in cube.plan.tiles if (t.i, t.j) not in done]
            results += [_thumbnails_from_cube(store, time_index, tile, moving, step) for tile in skipped]
        errors, unregistered, truths = _score(store, scene_set, cube, moving, time_index, step)
    written, skipped = len(todo) - len(failed), len(cube.plan.tiles) - len(todo)
    quicklooks = assemble(results, cube.grid.shape, step)
    crops, residuals = {}, {}
    if config.report_dir:
        crops, residuals = full_resolution_evidence(
            store,
            time_index,
            moving,
            cube.grid.shape,
            quicklooks[REFERENCE],
            step,
            cube.grid.resolution[0],
            method.name,
        )
    report = TimeReport(
        label,
        {modality: ", ".join(i.id for i in scene_set.items(modality)) for modality in (REFERENCE, *REGISTERED)},
        written,
        skipped,
        quicklooks,
        errors,
        truths,
        unregistered,
        flagged=run.flagged,
        crops=crops,
        residuals=residuals,
    )
    return SceneSetOutcome(
        label,
        written,
        skipped,
        errors,
        report,
        unregistered,
        failed,
        run.flagged,
        run.confidence,
        time.perf_counter() - started,
        clock.seconds,
        busy,
    )


def _thumbnails_from_cube(store: CubeStore, time_index: int, tile: Tile, moving, step: int) -> ChunkResult:
    """A skipped chunk's quicklooks: the aligned data from the cube, the 'before' from the source."""
    ys, xs = tile.core.slices
    registered = [MODALITY[m] for m in moving]
    names = [
        REFERENCE,
        *moving,
        *(v for m in registered for v in (m.displacement_var, m.confidence_var, m.quality_var)),
    ]
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
    """Search the catalog for the config's region and period and write the aligned cube (and report); dsmar's
    log lines go to the run's Prefect logs, and the run's summary is published as a markdown artifact."""
    with dsmar_logs_in_prefect():
        summary = _register_region(config)
        publish_run_artifact(config.out, run_markdown(summary))
    return summary


def _register_region(config: RunConfig) -> RunSummary:
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
    store = open_store(config.out)
    # The lock spans the STAC files and the report too: a run waiting for it rewrites the cube's metadata.
    with store.lock():
        return _register_locked(config, store, cube, method, profile, clock, rejections, started, started_cpu)


def _register_locked(
    config: RunConfig,
    store: CubeStore,
    cube: CubePlan,
    method: MethodSpec,
    profile: CatalogProfile,
    clock: StageClock,
    rejections: tuple[tuple[str, str], ...],
    started: float,
    started_cpu: float,
) -> RunSummary:
    outcomes = []
    cluster_started = time.perf_counter()
    with cluster_for(config.cluster) as client:
        clock.add({"cluster": time.perf_counter() - cluster_started})
        usage_before = workers_usage(client)
        # Only once every worker can take part: an unreachable scheduler, or a worker that cannot write the
        # store or runs other weights, must not leave an empty cube behind.
        registrator = MethodRegistrator(method)
        check_workers(client, store, registrator.weights_here, method.weights_sha256, config.cluster.connect_timeout_s)
        with warmed_workers(client, registrator.warm):
            with clock("layout"):
                index = prepare_cube(store, cube, config, profile, method)
            for scene_set in cube.scene_sets:
                t = index[_utc(scene_set.optical)]
                outcomes.append(register_scene_set(client, store, scene_set, cube, t, config, profile, method))
        threads, usage_after = sum(client.nthreads().values()), workers_usage(client)
        restarted = len(set(usage_before) - set(usage_after))
        if restarted:
            log.warning(
                "%d worker(s) left the cluster during the run (a worker above 95 %% of its memory limit is restarted: "
                "raise --memory-limit); their CPU time and peak memory are missing from the run's figures",
                restarted,
            )
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
        tuple(line for o in outcomes for line in o.failed),
        clock.seconds,
        {stage: sum(o.worker_seconds.get(stage, 0.0) for o in outcomes) for stage in WORKER_STAGES},
        threads,
        {worker: use["peak_rss"] for worker, use in usage_after.items()},
        cpu_between(usage_before, usage_after),
        workers_restarted=restarted,
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
    for outcome in summary.outcomes:
        for modality, tiles in outcome.flagged.items():
            if tiles:
                listed = ", ".join(f"({i}, {j})" for i, j in tiles)
                lines.append(f"Flagged {outcome.label} {modality}: registration tiles {listed} fell back")
    lines += [f"Failed (a rerun retries it): {line}" for line in summary.failed]
    return lines


def run_markdown(summary: RunSummary) -> str:
    """The run's Prefect artifact: the summary lines, then per scene set its tiles, time and registration quality
    (mean confidence over the registration tiles and the tiles gating flagged, per modality)."""
    lines = ["# dsmar run", "", f"Cube: `{summary.out}`", "", *(f"- {line}" for line in summary_lines(summary))]
    if summary.scene_sets == 0:
        lines += ["", "Nothing to do: no co-located scene sets in this period."]
    lines += ["", "| scene set | written | skipped | failed | seconds | quality |", "|---|---|---|---|---|---|"]
    for o in summary.outcomes:
        quality = "; ".join(
            f"{m}: mean confidence {np.mean(c):.3f}, flagged {', '.join(map(str, o.flagged.get(m, []))) or 'none'}"
            for m, c in o.tile_confidence.items()
            if c
        )
        row = [o.label, o.tiles_written, o.tiles_skipped, len(o.failed), f"{o.seconds:.1f}", quality or "up to date"]
        lines.append("| " + " | ".join(map(str, row)) + " |")
    return "\n".join(lines) + "\n"

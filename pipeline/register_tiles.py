"""Per-tile registration, blending and warping, and their mapping onto a Dask cluster.

The core (`TileRegistrator`, `align_chunk`, `warp_core`) is pure numpy and knows nothing of Dask or
Prefect; `run_tiles` at the bottom is the only place that talks to a `distributed.Client`. Any
callable matching `TileRegistrator` plugs in: `models.tile_registrator.MethodRegistrator` runs a real
method through the pair API; `ConstantRegistrator` returns a fixed field instantly, to test or time the
plumbing alone.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import dask.array as da
import numpy as np
import xarray as xr

from kernel.contracts import MODALITY, REFERENCE
from kernel.warp import warp_image
from pipeline.blend import blend
from pipeline.quality import FLAG_REGISTERED, TileSummary, Verdict, gate, neighbourhood
from pipeline.tile_retry import TILE_RETRY, RetryPolicy, TileFailure, error_line
from pipeline.tiles import Tile, TilePlan, Window, plan_tiles

# Below this share of valid pixels in either image a tile is not matched: zero field, zero confidence.
MIN_VALID_SHARE = 0.01
# A modality registered on tiles of its own (`Modality.registration_tile`) gets at least this share of
# their side as halo: the overlap its tile fields blend across.
REGISTRATION_HALO_SHARE = 1 / 8


def registration_plan(plan: TilePlan, modality: str) -> TilePlan:
    """The tiles a modality is registered on: the chunk tiles `plan`, or, where they are smaller than the
    modality's `registration_tile`, tiles of that side on the same grid (halo: the larger of the chunks' and
    `REGISTRATION_HALO_SHARE` of it). Its field then does not depend on the chunk size; chunks still
    blend, warp and write on `plan`."""
    least = MODALITY[modality].registration_tile
    if plan.size >= least:
        return plan
    return plan_tiles(plan.shape, least, max(plan.halo, int(least * REGISTRATION_HALO_SHARE)))


@dataclass(frozen=True)
class TileField:
    """A tile's field on its outer window: displacement (2, h, w) per Contract 1, confidence (h, w)."""

    displacement: np.ndarray
    confidence: np.ndarray

    @classmethod
    def unmatched(cls, shape: tuple[int, int]) -> TileField:
        return cls(np.zeros((2, *shape), np.float32), np.zeros(shape, np.float32))


class TileRegistrator(Protocol):
    """Registers one tile's moving image (C, h, w) onto its fixed optical image (C, h, w)."""

    def __call__(self, fixed: np.ndarray, moving: np.ndarray, *, moving_modality: str) -> TileField: ...


def enough_valid(image: np.ndarray) -> bool:
    """Whether an image has enough valid pixels to be matched at all (`MIN_VALID_SHARE`)."""
    return bool(np.isfinite(image).all(axis=0).mean() >= MIN_VALID_SHARE)


@dataclass(frozen=True)
class ConstantRegistrator:
    """A fake for tests and plumbing benchmarks: the same (dy, dx) everywhere, full confidence."""

    shift: tuple[float, float] = (0.0, 0.0)
    confidence: float = 1.0

    def __call__(self, fixed: np.ndarray, moving: np.ndarray, *, moving_modality: str) -> TileField:
        h, w = fixed.shape[-2:]
        displacement = np.empty((2, h, w), np.float32)
        displacement[0], displacement[1] = self.shift
        return TileField(displacement, np.full((h, w), self.confidence, np.float32))


def warp_core(moving_outer: np.ndarray, field_core: np.ndarray, core_in_outer: Window) -> np.ndarray:
    """Warp the core of a tile: sample the moving outer window (halo included) at core + field.

    The field is defined on the core only; shifting it by the core's offset inside the outer window
    makes `warp_image` read the halo pixels a displacement points into.
    """
    offset = np.array([core_in_outer.row, core_in_outer.col], np.float32)[:, None, None]
    return warp_image(moving_outer, field_core + offset)


@dataclass(frozen=True)
class ModalityInput:
    """What a chunk needs per modality: the moving outer window, the neighbours' tile fields, and what gating
    made of each (`pipeline.quality`; none: every piece taken as registered)."""

    moving_outer: np.ndarray
    pieces: tuple[tuple[Tile, TileField], ...]
    verdicts: tuple[Verdict, ...] | None = None


def gated(field: TileField, verdict: Verdict) -> TileField:
    """The field a tile contributes after gating: its own, or its fallback's constant field at its own confidence."""
    if verdict.flag == FLAG_REGISTERED:
        return field
    displacement = np.empty_like(field.displacement)
    displacement[0], displacement[1] = verdict.shift
    return TileField(displacement, field.confidence)


def quality_flags(core: Window, pieces: Sequence[Tile], verdicts: Sequence[Verdict]) -> np.ndarray:
    """(H, W) uint8 flags over a chunk's core: each pixel takes the verdict of the registration tile whose core
    holds it (registration cores partition the grid)."""
    flags = np.zeros((core.height, core.width), np.uint8)
    for tile, verdict in zip(pieces, verdicts, strict=True):
        overlap = tile.core.intersection(core)
        if overlap is not None:
            flags[overlap.relative_to(core).slices] = verdict.flag
    return flags


def align_chunk(tile: Tile, fixed_outer: np.ndarray, inputs: Mapping[str, ModalityInput]) -> dict[str, np.ndarray]:
    """Everything the cube stores for one chunk: optical core, and per modality the aligned image,
    blended displacement and confidence (and the quality flags, where gated). Pure: arrays in, arrays out."""
    core = tile.core.relative_to(tile.outer)
    arrays = {REFERENCE: fixed_outer[(slice(None), *core.slices)]}
    for modality, data in inputs.items():
        tiles, fields = [t for t, _ in data.pieces], [f for _, f in data.pieces]
        if data.verdicts is not None:
            fields = [gated(f, v) for f, v in zip(fields, data.verdicts, strict=True)]
        displacement, confidence = blend(
            tile.core, [(t, f.displacement, f.confidence) for t, f in zip(tiles, fields, strict=True)]
        )
        arrays[modality] = warp_core(data.moving_outer, np.nan_to_num(displacement), core)
        arrays[MODALITY[modality].displacement_var] = displacement
        arrays[MODALITY[modality].confidence_var] = confidence
        if data.verdicts is not None:
            arrays[MODALITY[modality].quality_var] = quality_flags(tile.core, tiles, data.verdicts)
    return arrays


class ChunkWriter(Protocol):
    """Writes one chunk (a tile's core) of every variable for one time step, then marks it done."""

    def write(self, time_index: int, tile: Tile, arrays: Mapping[str, np.ndarray], inputs_hash: int) -> None: ...


@dataclass(frozen=True)
class ChunkResult:
    tile: Tile
    thumbnails: dict[str, np.ndarray] = field(default_factory=dict)


def decimate(core: Window, array: np.ndarray, step: int) -> np.ndarray:
    """The pixels of a core that fall on the global every-`step`-th row/column lattice."""
    r0, c0 = (-core.row) % step, (-core.col) % step
    return array[..., r0::step, c0::step]


def finish_chunk(
    tile: Tile,
    fixed_outer: np.ndarray,
    moving_outers: Mapping[str, np.ndarray],
    pieces: Mapping[str, list[tuple[Tile, TileField, Verdict]]],
    writer: ChunkWriter,
    time_index: int,
    inputs_hash: int,
    thumb_step: int,
) -> ChunkResult:
    """Blend, warp and write one chunk; return small thumbnails for the report."""
    inputs = {
        m: ModalityInput(moving_outers[m], tuple((t, f) for t, f, _ in pieces[m]), tuple(v for _, _, v in pieces[m]))
        for m in moving_outers
    }
    arrays = align_chunk(tile, fixed_outer, inputs)
    writer.write(time_index, tile, arrays, inputs_hash)
    core = tile.core.relative_to(tile.outer)
    thumbs = {name: decimate(tile.core, value, thumb_step) for name, value in arrays.items()}
    for modality, moving in moving_outers.items():
        thumbs[f"{modality}_before"] = decimate(tile.core, moving[(slice(None), *core.slices)], thumb_step)
    return ChunkResult(tile, thumbs)


def _window(array: xr.DataArray, window: Window) -> da.Array:
    return da.asarray(array.data)[(slice(None), *window.slices)].astype(np.float32)


def register_tile(
    registrator: TileRegistrator, fixed: np.ndarray, moving: np.ndarray, modality: str, retry: RetryPolicy
) -> tuple[TileField, TileSummary]:
    """One registration tile's field (retried per `retry`) and its summary for gating."""
    field = retry.call(f"{modality} registration", registrator, fixed, moving, moving_modality=modality)
    return field, TileSummary.of(field.displacement, field.confidence)


def _neighbours(plan: TilePlan, tiles: Sequence[Tile]) -> list[Tile]:
    """The tiles of `plan` whose summaries the trends of `tiles` read (`pipeline.quality.neighbourhood`), not in `tiles`."""
    by_position = {(t.i, t.j): t for t in plan.tiles}
    near = dict.fromkeys(p for t in tiles for p in neighbourhood((t.i, t.j)) if p in by_position)
    return [by_position[p] for p in near if by_position[p] not in tiles]


def _error(future) -> str | None:
    """A settled future's error as one line, or None where it succeeded."""
    return error_line(future.exception()) if future.status == "error" else None


def _field(registered: tuple[TileField, TileSummary]) -> TileField:
    return registered[0]


def _summary(registered: tuple[TileField, TileSummary]) -> TileSummary:
    return registered[1]


@dataclass(frozen=True)
class TileRun:
    """What `run_tiles` did for one scene set: the written chunks' thumbnails, the chunks that failed, and per
    modality each registration tile's gating verdict, keyed by its (row, col) in that modality's plan."""

    chunks: list[ChunkResult]
    failed: list[TileFailure]
    verdicts: dict[str, dict[tuple[int, int], Verdict]]

    @property
    def flagged(self) -> dict[str, list[tuple[int, int]]]:
        """Per modality, the registration tiles (of those this run gated) that gating did not accept."""
        return {m: [k for k, v in by_tile.items() if v.flag != FLAG_REGISTERED] for m, by_tile in self.verdicts.items()}

    @property
    def confidence(self) -> dict[str, list[float]]:
        """Per modality, the mean confidence of each registration tile this run gated."""
        return {m: [v.confidence for v in by_tile.values()] for m, by_tile in self.verdicts.items()}


def run_tiles(
    client,
    plan: TilePlan,
    fixed: xr.DataArray,
    moving: Mapping[str, xr.DataArray],
    registrator: TileRegistrator,
    writer: ChunkWriter,
    time_index: int,
    inputs_hash: int,
    todo: Iterable[Tile],
    thumb_step: int,
    on_progress: Callable[[int, int], None] = lambda done, total: None,
    retry: RetryPolicy = TILE_RETRY,
) -> TileRun:
    """Register, gate, blend, warp and write the `todo` tiles of one scene set on a Dask cluster.

    Windows of the lazy (band, y, x) inputs are read on the workers, each once; each modality is
    registered on its `registration_plan`, a registration tile once even when several chunks' blends
    need it, and so are the registration tiles around them that gating (`pipeline.quality`) reads the trends
    from. The chunks are blended, warped and written once those are registered and gated (two phases: the
    chunks' windows wait in worker memory meanwhile); each chunk task writes its own chunks only.
    A task that still fails after `retry` costs its chunks only: they are not written and are returned
    as failed.
    """
    from distributed import as_completed, wait

    todo = list(todo)
    if not todo:
        return TileRun([], [], {m: {} for m in moving})
    plans = {m: registration_plan(plan, m) for m in moving}
    pieces = {m: {tile: plans[m].covering(tile.core) for tile in todo} for m in moving}
    needed = {m: list(dict.fromkeys(n for ns in pieces[m].values() for n in ns)) for m in moving}
    tiles = {m: needed[m] + _neighbours(plans[m], needed[m]) for m in moving}  # the neighbours make the trends
    images = {REFERENCE: fixed, **moving}
    windows: dict[tuple[str, Window], None] = {}  # what each chunk reads, in the chunks' order
    for tile in todo:
        windows.update(dict.fromkeys((name, tile.outer) for name in images))
        for m in moving:
            windows.update(dict.fromkeys((name, n.outer) for n in pieces[m][tile] for name in (REFERENCE, m)))
    for m in moving:
        windows.update(dict.fromkeys((name, n.outer) for n in tiles[m] for name in (REFERENCE, m)))
    reads = client.compute([_window(images[name], window) for name, window in windows], retries=retry.attempts - 1)
    read = dict(zip(windows, reads))
    registered = {
        m: {
            n: client.submit(register_tile, registrator, read[REFERENCE, n.outer], read[m, n.outer], m, retry)
            for n in tiles[m]
        }
        for m in moving
    }
    fields = {m: {n: client.submit(_field, registered[m][n]) for n in needed[m]} for m in moving}
    summaries = {m: {n: client.submit(_summary, r) for n, r in by_tile.items()} for m, by_tile in registered.items()}
    del registered
    wait([f for by_tile in summaries.values() for f in by_tile.values()])
    errors = {m: {n: _error(f) for n, f in by_tile.items()} for m, by_tile in summaries.items()}
    verdicts = {}
    for m in moving:
        ok = [n for n in summaries[m] if errors[m][n] is None]
        known = dict(zip(((n.i, n.j) for n in ok), client.gather([summaries[m][n] for n in ok])))
        gated_ones = [n for n in needed[m] if errors[m][n] is None]
        verdicts[m] = dict(zip(gated_ones, gate(known, [(n.i, n.j) for n in gated_ones]).values(), strict=True))
    del summaries
    failed, finals = [], {}
    for tile in todo:
        broken = [(m, n) for m in moving for n in pieces[m][tile] if errors[m][n] is not None]
        if broken:
            m, n = broken[0]
            failed.append(TileFailure((tile.i, tile.j), m, f"registration tile ({n.i}, {n.j}): {errors[m][n]}"))
            continue
        future = client.submit(
            retry.call,
            f"chunk ({tile.i}, {tile.j})",
            finish_chunk,
            tile,
            read[REFERENCE, tile.outer],
            {m: read[m, tile.outer] for m in moving},
            {m: [(n, fields[m][n], verdicts[m][n]) for n in pieces[m][tile]] for m in moving},
            writer,
            time_index,
            inputs_hash,
            thumb_step,
            pure=False,
        )
        finals[future.key] = (future, tile)
    # Only the chunk tasks hold the windows and fields now: each is freed once its last reader is done.
    del read, fields, reads
    results = []
    for done, future in enumerate(as_completed([f for f, _ in finals.values()]), start=1):
        error = _error(future)
        if error is None:
            results.append(future.result())
        else:
            tile = finals[future.key][1]
            failed.append(TileFailure((tile.i, tile.j), "+".join(moving), error))
        future.release()
        on_progress(done, len(finals))
    keyed = {m: {(n.i, n.j): v for n, v in verdicts[m].items()} for m in moving}
    return TileRun(results, failed, keyed)

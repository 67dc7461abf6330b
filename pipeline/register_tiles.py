"""Per-tile registration, blending and warping, and their mapping onto a Dask cluster.

The core (`TileRegistrator`, `align_chunk`, `warp_core`) is pure numpy and knows nothing of Dask or
Prefect; `run_tiles` at the bottom is the only place that talks to a `distributed.Client`. Any
callable matching `TileRegistrator` plugs in: `models.tile_registrator.MethodRegistrator` runs a real
method through the pair API; `ConstantRegistrator` returns a fixed field instantly, to test or time the
plumbing alone.
"""

from __future__ import annotations

import math
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from itertools import chain
from typing import Protocol

import numpy as np
import xarray as xr

from kernel.contracts import MODALITY, REFERENCE
from kernel.warp import warp_image
from pipeline.blend import blend
from pipeline.progress import TileProgress
from pipeline.quality import FLAG_REGISTERED, TileSummary, Verdict, gate
from pipeline.tile_reads import StagedInputs
from pipeline.tile_retry import TILE_RETRY, RetryPolicy, TileFailure, error_line
from pipeline.tile_scratch import TileScratch, block_side
from pipeline.tile_stream import StreamRow, stream_rows
from pipeline.tiles import Tile, TilePlan, Window, plan_tiles
from pipeline.timings import CHUNK_TASK, cpu_clock

# Below this share of valid pixels in either image a tile is not matched: zero field, zero confidence.
MIN_VALID_SHARE = 0.01
# A modality registered on tiles of its own (`Modality.registration_tile`) gets at least this share of
# their side as halo: the overlap its tile fields blend across.
REGISTRATION_HALO_SHARE = 1 / 8
# Chunk rows registered and gated past the oldest unfinished one, at the least: the workers find ready tasks while
# a row's last chunks finish, and the windows and fields in flight stay a few rows, whatever the scene's height.
ROWS_AHEAD = 1


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


def outer_part(field: TileField, tile: Tile) -> TileField:
    """The part of a field registered on `tile.context` that lies on its outer window, which the blend reads."""
    inside = tile.outer.relative_to(tile.context).slices
    return TileField(field.displacement[(slice(None), *inside)], field.confidence[inside])


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
    write_seconds: float = 0.0  # of the chunk's task, spent writing (`pipeline.timings`)


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
    with cpu_clock("warp"):
        arrays = align_chunk(tile, fixed_outer, inputs)
    started = time.perf_counter()
    with cpu_clock("write"):
        writer.write(time_index, tile, arrays, inputs_hash)
    write_seconds = time.perf_counter() - started
    core = tile.core.relative_to(tile.outer)
    with cpu_clock("warp"):
        thumbs = {name: decimate(tile.core, value, thumb_step) for name, value in arrays.items()}
        for modality, moving in moving_outers.items():
            thumbs[f"{modality}_before"] = decimate(tile.core, moving[(slice(None), *core.slices)], thumb_step)
    return ChunkResult(tile, thumbs, write_seconds)


def register_tile(
    registrator: TileRegistrator,
    scratch: TileScratch,
    modality: str,
    tile: Tile,
    keep_field: bool,
    retry: RetryPolicy,
    staged: Sequence[None] = (),
) -> TileSummary:
    """Register one registration tile of one modality from its windows on the scratch (`staged`: the tokens of the
    blocks under them, for Dask to wait on), write its field there where a chunk will read it, and return the
    summary gating reads. Retried per `retry`; the task's name tells it apart in the task stream
    (`pipeline.timings`)."""

    def attempt() -> TileSummary:
        fixed, moving = scratch.window(REFERENCE, tile.context), scratch.window(modality, tile.context)
        with cpu_clock("register"):
            field = outer_part(registrator(fixed, moving, moving_modality=modality), tile)
        if keep_field:
            scratch.put_field(modality, tile.i, tile.j, np.concatenate([field.displacement, field.confidence[None]]))
        return TileSummary.of(field.displacement, field.confidence)

    return retry.call(f"{modality} registration", attempt)


def finish_staged_chunk(
    tile: Tile,
    scratch: TileScratch,
    pieces: Mapping[str, Sequence[tuple[Tile, Verdict]]],
    ready: Sequence[object],
    **finish,
) -> ChunkResult:
    """`finish_chunk` on what the scratch holds for `tile`: its windows and its pieces' fields (`ready`: the tasks
    that put them there, for Dask to wait on)."""
    fixed_outer = scratch.window(REFERENCE, tile.outer)
    moving_outers = {m: scratch.window(m, tile.outer) for m in pieces}
    fields = {m: [(n, _stored_field(scratch, m, n), v) for n, v in by_modality] for m, by_modality in pieces.items()}
    return finish_chunk(tile, fixed_outer, moving_outers, fields, **finish)


def _stored_field(scratch: TileScratch, modality: str, tile: Tile) -> TileField:
    stored = scratch.field(modality, tile.i, tile.j, (tile.outer.height, tile.outer.width))
    return TileField(stored[:2], stored[2])


def _error(future) -> str | None:
    """A settled future's error as one line, or None where it succeeded."""
    return error_line(future.exception()) if future.status == "error" else None


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


def rows_ahead(client, n_cols: int) -> int:
    """How many chunk rows past the oldest unfinished one `run_tiles` registers and gates: `ROWS_AHEAD`, or more
    where that would leave the cluster's threads fewer than two ready tasks each."""
    threads = sum(client.nthreads().values())
    return max(ROWS_AHEAD, math.ceil(2 * threads / n_cols))


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
    *,
    scratch: TileScratch,
    on_progress: Callable[[TileProgress], None] = lambda progress: None,
    retry: RetryPolicy = TILE_RETRY,
) -> TileRun:
    """Register, gate, blend, warp and write the `todo` tiles of one scene set on a Dask cluster.

    Each modality is registered on its `registration_plan`, a registration tile once even when several chunks'
    blends need it, and so are the registration tiles around them that gating (`pipeline.quality`) reads the
    trends from. The run streams row by row of chunks (`pipeline.tile_stream`): a row's registration tiles are
    submitted a few rows ahead of it, the row is gated as soon as the summaries its gating reads are in, and its
    chunks are then blended, warped and written, each chunk task writing its own chunk only. The tasks hand each
    other their data through `scratch` (`pipeline.tile_scratch`), removed when the run ends (an interrupted run
    leaves it to the next, which lays it out anew): the input blocks are staged there as the registrations that
    read them are submitted (`pipeline.tile_reads`), the registrations write their fields there, and Dask passes
    only summaries, so a worker holds the tasks it runs, whatever the scene's size.
    A task that still fails after `retry` costs its chunks only: they are not written and are returned
    as failed. `on_progress` gets the registrations and chunks settled after each (chunks to do: less those failed
    for want of a registration tile).
    """
    todo = list(todo)
    if not todo:
        return TileRun([], [], {m: {} for m in moving})
    stream = _TileStream(client, plan, fixed, moving, registrator, todo, scratch, retry)
    finish = partial(
        finish_staged_chunk, writer=writer, time_index=time_index, inputs_hash=inputs_hash, thumb_step=thumb_step
    )
    run = stream.run(finish, on_progress)
    scratch.remove()  # not when interrupted: tasks still running would fail writing to it; the next run lays it out anew
    return run


class _TileStream:
    """`run_tiles`' state: what is submitted, settled and still to be used, row by row of chunks."""

    def __init__(
        self,
        client,
        plan: TilePlan,
        fixed: xr.DataArray,
        moving: Mapping[str, xr.DataArray],
        registrator: TileRegistrator,
        todo: Sequence[Tile],
        scratch: TileScratch,
        retry: RetryPolicy,
    ):
        self.client, self.moving, self.registrator, self.retry = client, list(moving), registrator, retry
        plans = {m: registration_plan(plan, m) for m in moving}
        self.pieces = {m: {tile: plans[m].covering(tile.core) for tile in todo} for m in moving}
        self.rows = stream_rows(plans, self.pieces, todo)
        self.ahead = rows_ahead(client, plan.n_cols)
        images = {REFERENCE: fixed, **moving}
        self.scratch = scratch
        self.chunk_reads = {tile: [(name, tile.outer) for name in images] for tile in todo}
        self.registration_reads = {
            (m, n): [(REFERENCE, n.context), (m, n.context)]
            for row in self.rows
            for m in moving
            for n in row.register[m]
        }
        uses = [*chain(*self.registration_reads.values()), *chain(*self.chunk_reads.values())]
        self.inputs = StagedInputs(client, images, scratch, uses, retry.attempts - 1)
        scratch.create(
            {name: (image.shape[0], (image.shape[-2], image.shape[-1])) for name, image in images.items()},
            block_side(self.inputs.chunks),
            plans,
        )
        self.registrations = sum(len(row.register[m]) for row in self.rows for m in moving)
        self.chunks = sum(len(row.chunks) for row in self.rows)
        self.registered = 0  # registrations settled, failed ones included
        self.field_uses = Counter((m, n) for tile in todo for m in moving for n in self.pieces[m][tile])
        # The registration futures chunk tasks will wait on, each dropped once the last chunk reading it is submitted.
        self.fields: dict[tuple[str, Tile], object] = {}
        self.summaries: dict[str, dict[tuple[int, int], TileSummary]] = {m: {} for m in moving}
        self.errors: dict[str, dict[Tile, str]] = {m: {} for m in moving}
        self.verdicts: dict[str, dict[Tile, Verdict]] = {m: {} for m in moving}
        self.unfinished = [len(row.chunks) for row in self.rows]  # per row, its chunks not settled yet
        self.pending: dict[str, tuple] = {}  # future key -> (modality, registration tile) or (chunk tile, row)
        self.results: list[ChunkResult] = []
        self.unregistered: list[TileFailure] = []  # chunks not submitted: a registration tile they read failed
        self.failed: list[TileFailure] = []  # chunk tasks that failed

    def run(self, finish: Callable[..., ChunkResult], on_progress: Callable[[TileProgress], None]) -> TileRun:
        from distributed import as_completed

        # The client's own loop: without one, as_completed looks up dask's default client, which dsmar's never are.
        events = as_completed(self._register(0), loop=self.client.loop, with_results=True, raise_errors=False)
        staged, gated, oldest = 1, 0, 0
        while True:
            while oldest < len(self.rows) and not self.unfinished[oldest]:
                oldest += 1
            if gated < staged and self._settled(self.rows[gated]):
                events.update(self._gate(gated, finish))
                gated += 1
            elif staged < len(self.rows) and staged <= oldest + self.ahead:
                events.update(self._register(staged))
                staged += 1
            elif not self.pending:
                break
            else:
                for future, result in events.next_batch():
                    self._settle(future, result, on_progress)
        keyed = {m: {(n.i, n.j): v for n, v in by_tile.items()} for m, by_tile in self.verdicts.items()}
        return TileRun(self.results, self.unregistered + self.failed, keyed)

    def _settled(self, row: StreamRow) -> bool:
        """Whether every summary the gating of `row` reads is in (or its registration failed)."""
        return all(n in self.errors[m] or (n.i, n.j) in self.summaries[m] for m in self.moving for n in row.wait[m])

    def _register(self, k: int) -> list:
        """Submit the registration tiles row `k` brings (staging the input blocks under them); return their futures."""
        order = [(m, n) for m in self.moving for n in self.rows[k].register[m]]
        staged = self.inputs.ready([self.registration_reads[key] for key in order])
        futures = []
        for (m, n), tokens in zip(order, staged, strict=True):
            keep = bool(self.field_uses[m, n])
            future = self.client.submit(register_tile, self.registrator, self.scratch, m, n, keep, self.retry, tokens)
            if keep:
                self.fields[m, n] = future
            self.pending[future.key] = (m, n)
            futures.append(future)
        return futures

    def _gate(self, k: int, finish: Callable[..., ChunkResult]) -> list:
        """Gate the registration tiles row `k` needs first, submit its chunks; return the chunk tasks' futures."""
        row = self.rows[k]
        for m in self.moving:
            ok = [n for n in row.gate[m] if n not in self.errors[m]]
            verdicts = gate(self.summaries[m], [(n.i, n.j) for n in ok]).values()
            self.verdicts[m].update(zip(ok, verdicts, strict=True))
        broken = {}
        for tile in row.chunks:
            errors = [(m, n) for m in self.moving for n in self.pieces[m][tile] if n in self.errors[m]]
            if errors:
                m, n = errors[0]
                broken[tile] = TileFailure(
                    (tile.i, tile.j), m, f"registration tile ({n.i}, {n.j}): {self.errors[m][n]}"
                )
        self.inputs.skip(use for tile in broken for use in self.chunk_reads[tile])
        chunks = [tile for tile in row.chunks if tile not in broken]
        staged = self.inputs.ready([self.chunk_reads[tile] for tile in chunks])
        futures = []
        for tile, tokens in zip(chunks, staged, strict=True):
            pieces = {m: [(n, self.verdicts[m][n]) for n in self.pieces[m][tile]] for m in self.moving}
            ready = [*tokens, *(self.fields[m, n] for m in self.moving for n in self.pieces[m][tile])]
            future = self.client.submit(
                self.retry.call, f"chunk ({tile.i}, {tile.j})", finish, tile, self.scratch, pieces, ready,
                key=f"{CHUNK_TASK}-{uuid.uuid4().hex}",  # named for the timings' task stream
            )  # fmt: skip
            self.pending[future.key] = (tile, k)
            futures.append(future)
        for tile in row.chunks:
            for m in self.moving:
                for n in self.pieces[m][tile]:
                    self.field_uses[m, n] -= 1
                    if not self.field_uses[m, n]:
                        self.fields.pop((m, n), None)
        self.unregistered += broken.values()
        self.unfinished[k] -= len(broken)
        self.chunks -= len(broken)
        return futures

    def _settle(self, future, result, on_progress: Callable[[TileProgress], None]) -> None:
        """Take in a finished registration (its summary kept on the client: gating reads it) or chunk task."""
        owner, error = self.pending.pop(future.key), _error(future)
        if isinstance(owner[0], str):
            m, n = owner
            self.registered += 1
            if error is None:
                self.summaries[m][n.i, n.j] = result
            else:
                self.errors[m][n] = error
        else:
            tile, k = owner
            if error is None:
                self.results.append(result)
            else:
                self.failed.append(TileFailure((tile.i, tile.j), "+".join(self.moving), error))
            self.unfinished[k] -= 1
        on_progress(
            TileProgress(
                registered=self.registered,
                registrations=self.registrations,
                written=len(self.results) + len(self.failed),
                chunks=self.chunks,
            )
        )

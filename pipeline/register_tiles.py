"""Per-tile registration, blending and warping, and their mapping onto a Dask cluster.

The core (`TileRegistrator`, `align_chunk`, `warp_core`) is pure numpy and knows nothing of Dask or
Prefect; `run_tiles` at the bottom is the only place that talks to a `distributed.Client`. Any
callable matching `TileRegistrator` plugs in: `models.tile_registrator.MethodRegistrator` runs a real
method through the pair API; `ConstantRegistrator` returns a fixed field instantly, to test or time the
plumbing alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Protocol

import dask.array as da
import numpy as np
import xarray as xr

from kernel.contracts import MODALITY, REFERENCE
from kernel.warp import warp_image
from pipeline.blend import blend
from pipeline.tiles import Tile, TilePlan, Window, plan_tiles
from pipeline.timings import cpu_clock

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
    """What a chunk needs per modality: the moving outer window and the neighbours' tile fields."""

    moving_outer: np.ndarray
    pieces: tuple[tuple[Tile, TileField], ...]


def align_chunk(tile: Tile, fixed_outer: np.ndarray, inputs: Mapping[str, ModalityInput]) -> dict[str, np.ndarray]:
    """Everything the cube stores for one chunk: optical core, and per modality the aligned image,
    blended displacement and confidence. Pure: arrays in, arrays out."""
    core = tile.core.relative_to(tile.outer)
    arrays = {REFERENCE: fixed_outer[(slice(None), *core.slices)]}
    for modality, data in inputs.items():
        displacement, confidence = blend(tile.core, [(t, f.displacement, f.confidence) for t, f in data.pieces])
        arrays[modality] = warp_core(data.moving_outer, np.nan_to_num(displacement), core)
        arrays[MODALITY[modality].displacement_var] = displacement
        arrays[MODALITY[modality].confidence_var] = confidence
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
    pieces: Mapping[str, list[tuple[Tile, TileField]]],
    writer: ChunkWriter,
    time_index: int,
    inputs_hash: int,
    thumb_step: int,
) -> ChunkResult:
    """Blend, warp and write one chunk; return small thumbnails for the report."""
    inputs = {m: ModalityInput(moving_outers[m], tuple(pieces[m])) for m in moving_outers}
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


def register_tile(registrator: TileRegistrator, fixed: np.ndarray, moving: np.ndarray, modality: str) -> TileField:
    """One registration task; its name tells the registration apart in the task stream (`pipeline.timings`)."""
    with cpu_clock("register"):
        return registrator(fixed, moving, moving_modality=modality)


def _window(array: xr.DataArray, window: Window) -> da.Array:
    return da.asarray(array.data)[(slice(None), *window.slices)].astype(np.float32)


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
) -> list[ChunkResult]:
    """Register, blend, warp and write the `todo` tiles of one scene set on a Dask cluster.

    Windows of the lazy (band, y, x) inputs are read on the workers, each once; each modality is
    registered on its `registration_plan`, a registration tile once even when several chunks' blends
    need it; each chunk task writes its own chunks only.
    """
    from distributed import as_completed

    todo = list(todo)
    if not todo:
        return []
    plans = {m: registration_plan(plan, m) for m in moving}
    pieces = {m: {tile: plans[m].covering(tile.core) for tile in todo} for m in moving}
    images = {REFERENCE: fixed, **moving}
    read: dict[tuple[str, Window], object] = {}  # window futures, by (image, window)
    fields: dict[str, dict[Tile, object]] = {m: {} for m in moving}
    finals = []
    for k, tile in enumerate(todo):
        # What a chunk needs first is asked for at its priority, higher for earlier chunks (and, per chunk, its
        # write before its registrations before its reads): workers follow the row-major work front, so memory
        # holds about a row of windows and fields, not the whole scene's. Unoptimised graphs keep the input
        # chunks' own keys, so a chunk that several chunks' windows overlap is read once, not once per call.
        front = -3 * k
        needed = dict.fromkeys((name, tile.outer) for name in images)
        for m in moving:
            needed.update(dict.fromkeys((name, n.outer) for n in pieces[m][tile] for name in (REFERENCE, m)))
        new = [key for key in needed if key not in read]
        if new:
            arrays = [_window(images[name], window) for name, window in new]
            read.update(zip(new, client.compute(arrays, priority=front, optimize_graph=False)))
        for m in moving:
            for n in pieces[m][tile]:
                if n not in fields[m]:
                    fields[m][n] = client.submit(
                        register_tile, registrator, read[REFERENCE, n.outer], read[m, n.outer], m, priority=front + 1
                    )
        finals.append(
            client.submit(
                finish_chunk,
                tile,
                read[REFERENCE, tile.outer],
                {m: read[m, tile.outer] for m in moving},
                {m: [(n, fields[m][n]) for n in pieces[m][tile]] for m in moving},
                writer,
                time_index,
                inputs_hash,
                thumb_step,
                pure=False,
                priority=front + 2,
            )
        )
    # Only the chunk tasks hold the windows and fields now: each is freed once its last reader is done,
    # so memory follows the (row-major) work front instead of the whole scene.
    del read, fields
    results = []
    for done, future in enumerate(as_completed(finals), start=1):
        results.append(future.result())
        future.release()
        on_progress(done, len(finals))
    return results

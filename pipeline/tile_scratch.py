"""A tile run's scratch: the Zarr group where its tasks hand each other the input windows and the tile fields.

Tasks never pass images or fields to each other through Dask: every input block is read from its sources once
and written here (`stage_block`), a registration task reads its two windows here and writes its field here, and
a chunk task reads its windows and its neighbours' fields back. Worker memory then holds the tasks running and
nothing between them, whatever the scene's size; what is in flight between tasks lives on the store, which
every worker already reaches because it reaches the cube (`pipeline.store.CubeStore.scratch_url`).

Inputs are chunked in squares of `side` pixels with every band in one chunk; `side` divides the input blocks, so
the block writes of parallel tasks never share a chunk. A field is one chunk: (3, h, w) = displacement (dy, dx)
and confidence on the registration tile's outer window, at index (i, j) of its modality's registration plan.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import numpy as np
import zarr
from zarr.storage import FsspecStore

from pipeline.object_store import filesystem, scheme, zarr_store
from pipeline.tiles import TilePlan, Window

# The scratch chunks' side is the largest divisor of the input blocks' side up to this: small enough that a
# tile's outer window (core plus halo) reads little beyond itself, large enough to keep the chunk count low.
SCRATCH_SIDE = 256
FIELDS = "fields"


def scratch_side(block_side: int) -> int:
    """The largest divisor of `block_side` up to `SCRATCH_SIDE`, or `block_side` itself where that divisor would
    be under a quarter of `SCRATCH_SIDE` (odd block sides: a few large chunks beat thousands of slivers)."""
    side = max(d for d in range(1, min(block_side, SCRATCH_SIDE) + 1) if block_side % d == 0)
    return side if side * 4 >= SCRATCH_SIDE or side == block_side else block_side


@dataclass(frozen=True)
class TileScratch:
    """The scratch group at `url` (a local path or an object-store URL). Picklable: workers reopen it."""

    url: str

    def _location(self, read_only: bool = False) -> str | FsspecStore:
        return self.url if scheme(self.url) in ("", "file") else zarr_store(self.url, read_only)

    def _array(self, path: str, mode: Literal["r", "r+"]) -> zarr.Array:
        return zarr.open_array(self._location(mode == "r"), path=path, mode=mode, zarr_format=3)

    def create(
        self, inputs: Mapping[str, tuple[int, tuple[int, int]]], block_side: int, plans: Mapping[str, TilePlan]
    ) -> None:
        """Empty the scratch and lay it out: per input (bands, (height, width)), per modality its plan's fields."""
        group = zarr.open_group(self._location(), mode="w", zarr_format=3)
        side = scratch_side(block_side)
        for name, (bands, shape) in inputs.items():
            group.create_array(
                name, shape=(bands, *shape), chunks=(bands, side, side), dtype="float32", fill_value=np.nan,
                compressors=None,
            )  # fmt: skip
        fields = group.create_group(FIELDS)
        for modality, plan in plans.items():
            height = max(t.outer.height for t in plan.tiles)
            width = max(t.outer.width for t in plan.tiles)
            fields.create_array(
                modality, shape=(plan.n_rows, plan.n_cols, 3, height, width), chunks=(1, 1, 3, height, width), dtype="float32", fill_value=np.nan,
                compressors=None,
            )  # fmt: skip

    def put_block(self, name: str, extent: Window, block: np.ndarray) -> None:
        self._array(name, "r+")[(slice(None), *extent.slices)] = block

    def window(self, name: str, window: Window) -> np.ndarray:
        """(bands, h, w) float32 of one input."""
        return np.asarray(self._array(name, "r")[(slice(None), *window.slices)])

    def put_field(self, modality: str, i: int, j: int, field: np.ndarray) -> None:
        """Registration tile (i, j)'s (3, h, w) field: displacement and confidence."""
        _, h, w = field.shape
        self._array(f"{FIELDS}/{modality}", "r+")[i, j, :, :h, :w] = field

    def field(self, modality: str, i: int, j: int, shape: tuple[int, int]) -> np.ndarray:
        """Registration tile (i, j)'s (3, h, w) field, `shape` = (h, w) its outer window's."""
        h, w = shape
        return np.asarray(self._array(f"{FIELDS}/{modality}", "r")[i, j, :, :h, :w])

    def remove(self) -> None:
        fs, path = filesystem(self.url)
        if fs.exists(path):
            fs.rm(path, recursive=True)


def block_side(chunks: Mapping[str, tuple[tuple[int, ...], ...]]) -> int:
    """The side every input block boundary is a multiple of: the gcd of the (y, x) block sizes of all inputs
    (`chunks`: each input's Dask chunks along y and x), the last block of each axis aside."""
    sizes = [size for rows_cols in chunks.values() for axis in rows_cols for size in axis[:-1]]
    return (
        math.gcd(*sizes) if sizes else max(size for rows_cols in chunks.values() for axis in rows_cols for size in axis)
    )

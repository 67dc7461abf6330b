"""Windows of lazy (band, y, x) inputs, read on a Dask cluster as the tile tasks that use them are submitted.

Each block (Dask chunk) of an input is read once, by a task submitted with the first window over it, and
dropped once the last window a run will ask for over it is made; a window is assembled from its blocks by a task
of its own, shared by the uses asked for together. Only the blocks between their first and their last use stay
in worker memory, not the scene; the windows live as long as the tasks that read them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

import dask.array as da
import numpy as np
import xarray as xr

from pipeline.tiles import Window

Use = tuple[str, Window]  # an input's name and a window of it
Block = tuple[str, int, int]  # an input's name and a block's (row, col) in its chunk grid


def assemble(window: Window, parts: Sequence[tuple[Window, np.ndarray]]) -> np.ndarray:
    """A (band, h, w) float32 window from the blocks (with their extents) that cover it."""
    out = np.empty((parts[0][1].shape[0], window.height, window.width), np.float32)
    for extent, block in parts:
        overlap = extent.intersection(window)
        out[(slice(None), *overlap.relative_to(window).slices)] = block[
            (slice(None), *overlap.relative_to(extent).slices)
        ]
    return out


class WindowReads:
    """Window futures of `images`, each of whose `uses` (every use a run will make, in any order) is asked for
    once through `take` or given up through `skip`; block reads are retried `retries` times by Dask."""

    def __init__(self, client, images: Mapping[str, xr.DataArray], uses: Iterable[Use], retries: int):
        self.client, self.retries = client, retries
        self.arrays = {name: da.asarray(image.data) for name, image in images.items()}
        self.edges = {name: [np.cumsum((0, *c)) for c in a.chunks[1:]] for name, a in self.arrays.items()}
        self.left = Counter(b for use in uses for b in self._blocks(use))
        self.blocks: dict[Block, object] = {}

    def _blocks(self, use: Use) -> list[Block]:
        name, window = use
        rows, cols = self.edges[name]
        i0 = np.searchsorted(rows, window.row, side="right") - 1
        i1 = np.searchsorted(rows, window.row + window.height, side="left")
        j0 = np.searchsorted(cols, window.col, side="right") - 1
        j1 = np.searchsorted(cols, window.col + window.width, side="left")
        return [(name, int(i), int(j)) for i in range(i0, i1) for j in range(j0, j1)]

    def _extent(self, block: Block) -> Window:
        name, i, j = block
        rows, cols = self.edges[name]
        return Window(int(rows[i]), int(cols[j]), int(rows[i + 1] - rows[i]), int(cols[j + 1] - cols[j]))

    def take(self, uses: Sequence[Use]) -> list:
        """A window future per use; the same window asked for twice here is read and assembled once."""
        unique = list(dict.fromkeys(uses))
        missing = list(dict.fromkeys(b for use in unique for b in self._blocks(use) if b not in self.blocks))
        if missing:
            reads = [self.arrays[name].blocks[:, i, j] for name, i, j in missing]
            self.blocks.update(zip(missing, self.client.compute(reads, retries=self.retries), strict=True))
        windows = {
            use: self.client.submit(assemble, use[1], [(self._extent(b), self.blocks[b]) for b in self._blocks(use)])
            for use in unique
        }
        self.skip(uses)
        return [windows[use] for use in uses]

    def skip(self, uses: Iterable[Use]) -> None:
        """Give up uses (their tasks are not submitted): a block none of the remaining uses reads is dropped."""
        for use in uses:
            for block in self._blocks(use):
                self.left[block] -= 1
                if not self.left[block]:
                    self.blocks.pop(block, None)

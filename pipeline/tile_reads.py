"""The inputs of a tile run, staged onto its scratch (`pipeline.tile_scratch`) block by block, ahead of the tasks
that read windows of them.

Each block (Dask chunk) of a lazy (band, y, x) input is read from its sources once, by a task that writes it to
the scratch and returns nothing but a token; a tile task takes the tokens of the blocks under its windows as
dependencies and reads the windows from the scratch itself. No block is held in worker memory past its own
staging task, so what a worker holds does not grow with the scene.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

import dask
import dask.array as da
import numpy as np
import xarray as xr

from pipeline.tile_scratch import TileScratch
from pipeline.tiles import Window

Use = tuple[str, Window]  # an input's name and a window of it
Block = tuple[str, int, int]  # an input's name and a block's (row, col) in its chunk grid


def stage_block(block: np.ndarray, scratch: TileScratch, name: str, extent: Window) -> None:
    """Write one input block to the scratch (the staging task's name marks it as input work in the timings)."""
    scratch.put_block(name, extent, block.astype(np.float32, copy=False))


class StagedInputs:
    """Staging of `images` onto `scratch`, block by block as `ready` asks for them; each of `uses` (every window a
    run will read, in any order) is asked for once through `ready` or given up through `skip`, and a block's token
    is dropped after its last use. Block reads are retried `retries` times by Dask."""

    def __init__(
        self, client, images: Mapping[str, xr.DataArray], scratch: TileScratch, uses: Iterable[Use], retries: int
    ):
        self.client, self.scratch, self.retries = client, scratch, retries
        self.arrays = {name: da.asarray(image.data) for name, image in images.items()}
        self.edges = {name: [np.cumsum((0, *c)) for c in a.chunks[1:]] for name, a in self.arrays.items()}
        self.left = Counter(b for use in uses for b in self._blocks(use))
        self.staged: dict[Block, object] = {}  # each staged block's token future (its result is None)

    @property
    def chunks(self) -> dict[str, tuple[tuple[int, ...], ...]]:
        """Each input's Dask chunks along y and x."""
        return {name: a.chunks[1:] for name, a in self.arrays.items()}

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

    def ready(self, groups: Sequence[Sequence[Use]]) -> list[list]:
        """Per group of uses (one task's windows), the tokens of every block under them, staging those not staged
        yet: all in one graph (one graph per call, not per task, keeps the client's work small; in one graph Dask
        finishes each block's staging before it reads many more)."""
        per_group = [list(dict.fromkeys(b for use in uses for b in self._blocks(use))) for uses in groups]
        missing = list(dict.fromkeys(b for blocks in per_group for b in blocks if b not in self.staged))
        if missing:
            stages = [
                dask.delayed(stage_block)(
                    self.arrays[name].blocks[:, i, j], self.scratch, name, self._extent((name, i, j))
                )
                for name, i, j in missing
            ]
            self.staged.update(zip(missing, self.client.compute(stages, retries=self.retries), strict=True))
        tokens = [[self.staged[b] for b in blocks] for blocks in per_group]
        self.skip(use for uses in groups for use in uses)
        return tokens

    def skip(self, uses: Iterable[Use]) -> None:
        """Give up uses (their tasks are not submitted): a block none of the remaining uses reads drops its token."""
        for use in uses:
            for block in self._blocks(use):
                self.left[block] -= 1
                if not self.left[block]:
                    self.staged.pop(block, None)

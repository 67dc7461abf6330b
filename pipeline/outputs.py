"""Which cube store serves an output location: the one place a new kind of store is wired in."""

from __future__ import annotations

from pipeline.cube import ZarrCubeStore
from pipeline.store import CubeStore


def open_store(url: str) -> CubeStore:
    """The store for `--out`: every location dsmar writes today (a local path, any fsspec URL) is a Zarr cube."""
    return ZarrCubeStore.at(url)

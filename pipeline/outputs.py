"""Which cube store serves an output location: the one place a new kind of store is wired in."""

from __future__ import annotations

from kernel.errors import InputError
from kernel.paths import check_writable_dir
from pipeline.cube import ZarrCubeStore
from pipeline.cube_reorder import local_dir
from pipeline.store import CubeStore


def open_store(url: str) -> CubeStore:
    """The store for `--out`: every location dsmar writes today (a local path, any fsspec URL) is a Zarr cube."""
    return ZarrCubeStore.at(url)


def check_output(out: str) -> str:
    """A local output path must end in .zarr and sit in a writable directory; URLs pass to fsspec."""
    path = local_dir(out)
    if path is None:
        return out
    if path.suffix != ".zarr":
        raise InputError(f"--out must be a path ending in .zarr, got {out!r}")
    if path.exists() and not path.is_dir():
        raise InputError(f"--out {out!r} exists and is not a Zarr directory")
    ZarrCubeStore.at(str(path)).check_target()  # before the write probe: a refused folder stays untouched
    check_writable_dir(path.parent if not path.exists() else path, "output directory")
    return ZarrCubeStore.at(str(path)).url  # absolute: the path travels to workers that may run elsewhere

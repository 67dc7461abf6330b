"""Which cube store serves an output location: the one place a new kind of store is wired in."""

from __future__ import annotations

from kernel.errors import InputError
from kernel.paths import check_writable_dir
from pipeline.cube import ZarrCubeStore
from pipeline.cube_reorder import local_dir
from pipeline.object_store import require_filesystem
from pipeline.store import CubeStore


def open_store(url: str) -> CubeStore:
    """The store for `--out`: every location dsmar writes today (a local path, any fsspec URL) is a Zarr cube."""
    return ZarrCubeStore.at(url)


def check_output(out: str) -> str:
    """An output must end in .zarr; a local one must sit in a writable directory, a URL's file system
    must be installed (s3:// needs the `s3` extra). Reaching a URL is checked when the run starts."""
    if not out.rstrip("/").endswith(".zarr"):
        raise InputError(f"--out must be a path or URL ending in .zarr, got {out!r}")
    path = local_dir(out)
    if path is None:
        require_filesystem(out)
        return out.rstrip("/")
    if path.exists() and not path.is_dir():
        raise InputError(f"--out {out!r} exists and is not a Zarr directory")
    ZarrCubeStore.at(str(path)).check_target()  # before the write probe: a refused folder stays untouched
    check_writable_dir(path.parent if not path.exists() else path, "output directory")
    return ZarrCubeStore.at(str(path)).url  # absolute: the path travels to workers that may run elsewhere

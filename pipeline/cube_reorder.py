"""Create or rewrite a local cube without ever leaving it half-written.

A cube is built beside its path (`<cube>.building`) and renamed into place (`rewrite`), so a crash
while laying it out leaves nothing at the path. Zarr can only grow an axis at its end, so a period
earlier than the cube's last time needs a new cube too: the old one's chunks are copied
into it byte for byte (same codecs, a new time index), and the two directories are swapped by
renames. A crash at any point leaves either the old or the new cube whole, or none; `recover` (run
before anything opens the cube) finishes or undoes an interrupted swap. One process writes a cube's
layout at a time.
"""

from __future__ import annotations

import itertools
import math
import os
import shutil
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

import zarr

from kernel.errors import DsmarError

_CODEC_KEYS = ("data_type", "chunk_grid", "chunk_key_encoding", "codecs", "fill_value")


def local_dir(path: str) -> Path | None:
    """The directory of a cube on the local file system; None for any other fsspec URL."""
    if path.startswith("file://"):
        return Path(path.removeprefix("file://"))
    return None if "://" in path else Path(path)


def _siblings(root: Path) -> tuple[Path, Path]:
    """(where the new cube is built, where the old one waits during the swap)."""
    return root.with_name(root.name + ".building"), root.with_name(root.name + ".previous")


def recover(root: Path) -> None:
    """Leave exactly one whole cube (or none, if it was being created) at `root` after a crash."""
    building, previous = _siblings(root)
    if previous.exists() and not root.exists():  # died between the two renames: keep the old cube
        previous.rename(root)
    shutil.rmtree(previous, ignore_errors=True)  # the new cube is in place, or the old one is back
    shutil.rmtree(building, ignore_errors=True)  # never swapped in: the cube at `root` is whole


def rewrite(root: Path, build: Callable[[Path], None]) -> None:
    """Put what `build` writes into a fresh sibling directory at `root`, replacing the cube there if
    any (the caller has run `recover` first). Absent or an empty folder, `root` is replaced directly."""
    building, previous = _siblings(root)
    build(building)
    if root.exists() and any(root.iterdir()):
        os.rename(root, previous)
        os.rename(building, root)
        shutil.rmtree(previous)
    else:
        os.rename(building, root)  # replaces an empty folder atomically


def copy_time_steps(source: Path, target: Path, moves: Mapping[int, int]) -> None:
    """Copy every written chunk of each time-major array from time i in `source` to time moves[i] in `target`.

    Raw bytes, so nothing is decoded; chunks never written stay absent (they read as the fill
    value). Arrays along time only (coordinates, provenance) are left to whoever built `target`.
    """
    old_group = zarr.open_group(source, mode="r", zarr_format=3)
    new_group = zarr.open_group(target, mode="r", zarr_format=3)
    for name, new in _time_arrays_by_name(new_group):
        if new.ndim < 2:
            continue
        old = old_group[name]
        _check_same_codecs(old, new, name)
        for i, j in moves.items():
            for rest in _chunk_grid(old):
                src = source / name / old.metadata.encode_chunk_key((i, *rest))
                if src.exists():
                    dst = target / name / new.metadata.encode_chunk_key((j, *rest))
                    dst.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(src, dst)


def time_arrays(group: zarr.Group) -> list[zarr.Array]:
    """Every array of the cube along time, the bookkeeping group's included."""
    return [array for _, array in _time_arrays_by_name(group)]


def _time_arrays_by_name(group: zarr.Group) -> list[tuple[str, zarr.Array]]:
    """(path in the cube, array) of every array along time, in the root group and its subgroups."""
    return [
        (name, member)
        for name, member in group.members(max_depth=None)
        if isinstance(member, zarr.Array) and along_time(member)
    ]


def along_time(array: zarr.Array) -> bool:
    """Whether the array's first dimension is `time` (data, hashes, provenance and `time` itself)."""
    return (array.metadata.dimension_names or (None,))[0] == "time"


def _chunk_grid(array: zarr.Array) -> Iterator[tuple[int, ...]]:
    """Chunk coordinates of one time step (every dimension but the first)."""
    return itertools.product(*(range(math.ceil(s / c)) for s, c in zip(array.shape[1:], array.chunks[1:])))


def _check_same_codecs(old: zarr.Array, new: zarr.Array, name: str) -> None:
    old_meta, new_meta = old.metadata.to_dict(), new.metadata.to_dict()
    if old.chunks[0] != 1 or any(old_meta.get(k) != new_meta.get(k) for k in _CODEC_KEYS):
        raise DsmarError(
            f"cannot reorder {name}: the cube stores it with another zarr encoding; "
            "write the earlier period to a new --out"
        )

"""The Zarr cube (Contract 3): lay it out once at full size, then fill it chunk by chunk.

`init_cube` writes coordinates, CRS, provenance and attrs, and declares every data variable at full
size without computing anything (lazy dask templates); the writers then fill whole chunks with plain
zarr writes, so parallel tile writers never touch the same chunk. The bookkeeping lives apart from the
science variables, in the `_dsmar` group: `_dsmar/tile_inputs_hash` (one chunk per time and tile)
records what each chunk was computed from; a re-run with the same inputs skips it.
`time` stays strictly increasing whatever order periods arrive in, so `.sel(time=slice(...))` works.

Everything a user opens is CF-described (`standard_name` where the CF table has one, `long_name`,
`units`), times are int64 microseconds with CF units, and text is fixed-width UTF-8 bytes
(`_Encoding: utf-8`, decoded by xarray) rather than zarr's variable-length `string` type.

An interrupted run never leaves a cube that cannot be opened: a local cube is created beside its
path and renamed into place; a remote one is marked whole (`STATE_ATTR`) only once laid out. Before
new times are appended the old time length is written to the attrs (`APPEND_ATTR`), because zarr
grows each array in turn: a run that finds the mark cuts every time axis back and appends again.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import tempfile
import warnings
from collections.abc import Hashable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, cast

import dask.array as da
import numpy as np
import rioxarray  # noqa: F401  (registers the .rio accessor)
import xarray as xr
import zarr
from pyproj import CRS
from zarr.storage import FsspecStore

from kernel.contracts import MODALITY, REFERENCE, MethodSpec
from kernel.errors import InputError
from pipeline.cube_reorder import copy_time_steps, local_dir, recover, rewrite, time_arrays
from pipeline.object_lock import ObjectLock, lock_url
from pipeline.object_store import S3_SCHEMES, check_reachable, filesystem, scheme, zarr_store
from pipeline.quality import QUALITY_ATTRS, QUALITY_FILL
from pipeline.store import CubeLayout, Provenance, method_attrs
from pipeline.tiles import Tile, Window

COMPONENTS = ("dy", "dx")
BOOKKEEPING = "_dsmar"  # the group of what only dsmar reads
HASH_VAR = f"{BOOKKEEPING}/tile_inputs_hash"
LEGACY_HASH_VAR = "tile_inputs_hash"  # where cubes of earlier layouts kept it, among the science variables
# Microseconds keep the catalogs' fractional seconds (Python datetimes) exactly, in units CF checkers accept.
TIME_UNITS = "microseconds since 1970-01-01"
TIME_ENCODING = {"units": TIME_UNITS, "calendar": "proleptic_gregorian", "dtype": "int64"}
PROVENANCE = ("optical_item", "sar_item", "sar_time", "dem_item", "settings", "flow_run_id")
TEXT_BYTES = 1024  # width of the per-time text columns (item ids, settings), UTF-8
# CF standard names where the CF table has one for the variable's quantity and units; SAR backscatter in dB has none.
STANDARD_NAMES = {"optical": "surface_bidirectional_reflectance", "dem": "surface_altitude"}
TEXT_ATTRS = {
    "optical_item": "id of the optical STAC item of this time",
    "sar_item": "ids of the SAR STAC items registered at this time (comma-separated)",
    "dem_item": "ids of the DEM STAC items registered at this time (comma-separated)",
    "settings": "JSON of the settings that shaped this time: method spec, weights sha256, tile size, halo",
    "flow_run_id": "id of the Prefect flow run that last wrote this time (empty outside a flow run)",
}
STATE_ATTR = "dsmar_cube"  # "creating" while the layout is written, "complete" once it is whole
APPEND_ATTR = "dsmar_appending_from"  # the time length before an append; present only while it runs
log = logging.getLogger("dsmar")
RUNS_ATTR = "runs"  # JSON list: created, config and catalog of the latest runs that wrote the cube
RUNS_KEPT = 50  # how many runs `runs` keeps, the latest: a cube updated daily must not grow its attrs forever


Step = tuple[np.datetime64, Provenance]  # one time of the cube and what it was made from


def _template(layout: CubeLayout, times: Sequence[np.datetime64], provenance: Sequence[Provenance]) -> xr.Dataset:
    """The cube's variables at full size as never-computed dask arrays, plus real coords and provenance."""
    grid, plan = layout.grid, layout.plan
    n_t, (ch_y, ch_x) = len(times), plan.chunks

    def lazy(shape, chunks, fill=np.nan, dtype=np.float32):
        return da.full(shape, fill, dtype=dtype, chunks=chunks)

    data_vars: dict[str, Any] = {}
    for name, bands in layout.bands.items():
        modality = MODALITY[name]  # CF units: the loader's physical units (docs/loading.md)
        standard = {"standard_name": STANDARD_NAMES[name]} if name in STANDARD_NAMES else {}
        data_vars[name] = (
            ("time", modality.band_dim, "y", "x"),
            lazy((n_t, len(bands), *grid.shape), (1, len(bands), ch_y, ch_x)),
            {**standard, "units": modality.units, "long_name": modality.long_name},
        )
    for m in layout.modalities:
        data_vars[MODALITY[m].displacement_var] = (
            ("time", "component", "y", "x"),
            lazy((n_t, 2, *grid.shape), (1, 2, ch_y, ch_x)),
            {
                "units": "pixel",
                "long_name": f"displacement (dy, dx) in optical-grid pixels from each optical pixel to where it lies "
                f"in the original {m} image (Contract 1)",
                "convention": "optical pixel (y, x) matches the original image at (y + dy, x + dx)",
            },
        )
        data_vars[MODALITY[m].confidence_var] = (
            ("time", "y", "x"),
            lazy((n_t, *grid.shape), (1, ch_y, ch_x)),
            {"units": "1", "long_name": f"confidence of {MODALITY[m].displacement_var}", "valid_range": [0.0, 1.0]},
        )
        data_vars[MODALITY[m].quality_var] = (
            ("time", "y", "x"),
            lazy((n_t, *grid.shape), (1, ch_y, ch_x), fill=QUALITY_FILL, dtype=np.uint8),
            {**QUALITY_ATTRS, "long_name": f"{QUALITY_ATTRS['long_name']} of {MODALITY[m].displacement_var}"},
        )
    for name, long_name in TEXT_ATTRS.items():
        data_vars[name] = ("time", _utf8([getattr(p, name) for p in provenance], TEXT_BYTES), _text_attrs(long_name))
    data_vars["sar_time"] = (
        "time",
        np.array([p.sar_time for p in provenance], dtype="datetime64[ns]"),
        {"long_name": "acquisition time of the (first) SAR item of this time"},
    )
    coords = {
        "time": (
            "time",
            np.array(times, dtype="datetime64[ns]"),
            {"standard_name": "time", "long_name": "optical acquisition time", "axis": "T"},
        ),
        "y": ("y", grid.y_coords(), _axis_attrs("y")),
        "x": ("x", grid.x_coords(), _axis_attrs("x")),
        "component": ("component", _utf8(COMPONENTS), _text_attrs("displacement component (dy: rows, dx: columns)")),
        **{
            MODALITY[name].band_dim: (MODALITY[name].band_dim, _utf8(bands), _text_attrs(f"{name} band name"))
            for name, bands in layout.bands.items()
        },
    }
    ds = xr.Dataset(data_vars, coords=coords)
    ds = ds.rio.write_crs(grid.crs_wkt).rio.write_transform(grid.affine)
    ds["spatial_ref"].attrs["long_name"] = "CRS definition (CF grid mapping)"
    for var in ds.data_vars.values():
        # Contract 3: every data variable carries the grid mapping, provenance too.
        var.attrs["grid_mapping"] = "spatial_ref"
        var.encoding.pop("grid_mapping", None)
    return ds


def _axis_attrs(axis: str) -> dict[str, str]:
    return {
        "units": "m",
        "standard_name": f"projection_{axis}_coordinate",
        "long_name": f"{axis} coordinate of projection (pixel centre)",
        "axis": axis.upper(),
    }


def _text_attrs(long_name: str) -> dict[str, str]:
    return {"long_name": long_name, "_Encoding": "utf-8"}


def _utf8(values: Iterable[str], width: int | None = None) -> np.ndarray:
    """Text as fixed-width UTF-8 bytes (`width`, or the longest value's); a longer value is one InputError line."""
    encoded = [str(v).encode() for v in values]
    longest = max((len(e) for e in encoded), default=1)
    if width is not None and longest > width:
        raise InputError(
            f"a provenance entry is {longest} bytes, more than the cube's {width}; "
            "register fewer items per time or write to a new --out"
        )
    return np.array(encoded, dtype=f"S{width or max(longest, 1)}")


def _encoding(ds: xr.Dataset) -> dict:
    enc: dict[Hashable, dict[str, Any]] = {}
    for name, var in ds.data_vars.items():
        if isinstance(var.data, da.Array):
            enc[name] = {"chunks": tuple(c[0] for c in var.data.chunks)}
        if var.dtype == np.uint8:  # the quality flags: unwritten chunks read as missing
            enc[name].update({"_FillValue": QUALITY_FILL, "fill_value": QUALITY_FILL})
    # Re-runs write sar_time in these same units (`_micros`) without asking xarray which units it picked.
    enc["time"] = dict(TIME_ENCODING)
    enc["sar_time"] = dict(TIME_ENCODING)
    return enc


def _create_bookkeeping(path: str, plan_shape: tuple[int, int], n_times: int) -> None:
    """The `_dsmar` group: tile input hashes, (time, tile_row, tile_col), one chunk each, 0 = not written."""
    group = zarr.open_group(_at(path), mode="r+", zarr_format=3, use_consolidated=False).require_group(BOOKKEEPING)
    group.attrs["description"] = "dsmar's own bookkeeping (which chunks were written from which inputs)"
    group.create_array(
        HASH_VAR.removeprefix(f"{BOOKKEEPING}/"),
        shape=(n_times, *plan_shape),
        chunks=(1, 1, 1),
        dtype="int64",
        fill_value=0,
        dimension_names=("time", "tile_row", "tile_col"),
        attributes={"long_name": "fingerprint of the inputs each chunk was written from; 0 = not written"},
    )


def init_cube(
    path: str, layout: CubeLayout, provenance: Sequence[Provenance], attrs: Mapping[str, str]
) -> dict[np.datetime64, int]:
    """Create the cube, or add new times to an existing one on the same grid; return time -> index.

    `time` is always strictly increasing: times after the cube's last one are appended; an
    earlier period makes a local cube be rewritten in order (`cube_reorder`), its written chunks
    following their times. Existing times' provenance is refreshed (a changed item changes the
    inputs hash, so those chunks are recomputed). The attrs describe the latest run; `runs` keeps
    the latest runs' config and catalog, and `created` the first run's time.
    """
    steps = _by_time((t.astype("datetime64[ns]"), p) for t, p in zip(layout.times, provenance, strict=True))
    for name in TEXT_ATTRS:  # before anything is written: a too-long entry leaves the cube as it was
        _utf8([getattr(p, name) for p in provenance], TEXT_BYTES)
    root = local_dir(path)
    if root is not None:
        recover(root)
    group = _existing_cube(path, mode="r+")  # r+: an interrupted append is cut back through it
    if group is None:
        _create_whole(path, root, layout, steps, _merged_attrs({}, attrs))
        _consolidate(path)
        return {t: i for i, (t, _) in enumerate(steps)}
    _refuse_legacy(group, path)
    cut = _interrupted_append(group)
    if cut is not None:
        _undo_append(path, group, cut)
    # No dask: a few reads.
    existing = xr.open_zarr(_at(path, read_only=True), decode_coords="all", consolidated=False, chunks=None)
    _check_compatible(existing, layout, path)
    _check_same_method(existing.attrs, attrs, path)
    old = _steps_of(existing)
    old_attrs = dict(existing.attrs)
    existing.close()
    if _add_missing_variables(path, layout, old):
        _consolidate(path)  # xarray's write of the new variables rewrote the attrs without it
    known = {t for t, _ in old}
    new = [(t, p) for t, p in steps if t not in known]
    fresh = dict(steps)
    stored = [(t, fresh.get(t, p)) for t, p in old] + new  # this run's provenance wins
    reorder = _inserts(old, new)
    if reorder:
        stored = _by_time(stored)
        _reorder(path, root, layout, old, stored, old_attrs)
    elif new:
        _append(path, layout, new, len(old))
    with _fixed_width_text():
        if not reorder:  # new times, and a rewritten cube, got their provenance with their append or template
            group = zarr.open_group(_at(path), mode="r+", zarr_format=3, use_consolidated=False)
            _write_provenance(group, stored[: len(old)])
        top = _root_attrs(path)
        top.attrs.put(_merged_attrs(top.attrs.asdict(), attrs))  # last: drops the append mark
    _consolidate(path)
    return {t: i for i, (t, _) in enumerate(stored)}


def _at(path: str, read_only: bool = False) -> str | FsspecStore:
    """What zarr and xarray open for `path`: a local path as it is; a URL as a store opened with this
    environment's endpoint and region (pipeline/object_store.py)."""
    return path if local_dir(path) is not None else zarr_store(path, read_only)


def _root_attrs(path: str) -> zarr.Group:
    """The cube's root group, to write its attrs: opened with its consolidated metadata where it has some, so that
    the write keeps it (zarr rewrites the root's zarr.json whole) and a reader opening the cube consolidated, as
    Contract 3 does, finds it at every moment of a run. Children are not read through it (their consolidated
    entries may be behind the arrays until `_consolidate`)."""
    return zarr.open_group(_at(path), mode="r+", zarr_format=3, use_consolidated=None)


def _add_missing_variables(path: str, layout: CubeLayout, old: Sequence[Step]) -> bool:
    """Give a cube written before a variable joined the layout (the quality flags, `flow_run_id`) that variable:
    flags unwritten (its chunks read as missing; the chunks already written are not redone for it), text empty.
    Whether any was missing."""
    with _fixed_width_text():
        group = zarr.open_group(_at(path), mode="r+", zarr_format=3, use_consolidated=False)
        template = _template(layout, [t for t, _ in old], [p for _, p in old])
        missing = [str(name) for name in template.data_vars if str(name) not in group]
        if not missing:
            return False
        extra = template[missing]
        extra = extra.drop_vars(list(extra.coords))  # the coordinates are there already
        extra.attrs = group.attrs.asdict()  # xarray writes the dataset's attrs onto the group
        encoding = {name: spec for name, spec in _encoding(template).items() if name in missing}
        extra.to_zarr(_at(path), mode="a", compute=False, consolidated=False, encoding=encoding)
    return True


def _array(group: zarr.Group, name: str) -> zarr.Array:
    """A variable of the cube (zarr types a group's member as an array or a group)."""
    return cast(zarr.Array, group[name])


def _write_provenance(group: zarr.Group, steps: Sequence[Step], start: int = 0) -> None:
    """Write the provenance of the cube's times from `start` on (len(steps) of them), one write per column."""
    span = slice(start, start + len(steps))
    for name in TEXT_ATTRS:
        _array(group, name)[span] = _utf8([getattr(p, name) for _, p in steps], TEXT_BYTES)
    _array(group, "sar_time")[span] = np.array([_micros(p.sar_time) for _, p in steps], dtype=np.int64)


def _merged_attrs(old: Mapping, run: Mapping) -> dict:
    """The cube's attrs after a run: the run's own, the first `created`, and the run added to `runs` (which keeps
    the latest `RUNS_KEPT`)."""
    entry = {
        key: json.loads(run[key]) if key in ("config", "catalog") else run[key]
        for key in ("created", "config", "catalog")
        if key in run
    }
    merged = {**old, **run, STATE_ATTR: "complete"}
    merged.pop(APPEND_ATTR, None)
    merged["created"] = old.get("created", run.get("created", ""))
    merged[RUNS_ATTR] = json.dumps([*json.loads(old.get(RUNS_ATTR, "[]")), entry][-RUNS_KEPT:])
    return merged


def check_out_path(path: str, method: MethodSpec | None = None, tile_size: int | None = None) -> None:
    """Refuse, before anything is written, an output that holds something other than a dsmar cube,
    or (where given) a cube of another method, weights, settings or tile size; the grid is known only
    after the search.

    Nothing there, an empty folder and a whole dsmar cube pass (an interrupted append counts as
    whole: the next run repairs it)."""
    group = _existing_cube(path)
    if group is None:
        return
    _refuse_legacy(group, path)
    if method is not None:
        _check_same_method(group.attrs, method_attrs(method), path)
    if tile_size is not None and REFERENCE in group:
        optical = _array(group, REFERENCE)
        _check_tiles(optical.chunks[-2:], tuple(min(tile_size, n) for n in optical.shape[-2:]), path)


def _existing_cube(path: str, mode: Literal["r", "r+"] = "r") -> zarr.Group | None:
    """The cube's root group, or None where there is nothing yet; anything else is one InputError line."""
    try:
        group = zarr.open_group(_at(path, read_only=mode == "r"), mode=mode, zarr_format=3, use_consolidated=False)
    except (FileNotFoundError, ValueError):  # zarr's errors, and a zarr.json that is not JSON
        group = None
    if group is not None and STATE_ATTR not in group.attrs and _legacy(group):
        return group
    if group is None or STATE_ATTR not in group.attrs:
        if group is None and _empty(path):
            return None
        raise InputError(f"{path} exists and is not a dsmar cube; choose another --out or delete it")
    if group.attrs[STATE_ATTR] != "complete":
        raise InputError(f"{path} is an incomplete cube from an interrupted run; delete it and run again")
    return group


def is_dsmar_cube(path: str) -> bool:
    """Whether `path` holds a cube dsmar wrote (whole or not), by the same marks `_existing_cube` reads."""
    try:
        group = zarr.open_group(_at(path, read_only=True), mode="r", zarr_format=3, use_consolidated=False)
    except (FileNotFoundError, ValueError):
        return False
    return STATE_ATTR in group.attrs or _legacy(group)


def _legacy(group: zarr.Group) -> bool:
    """A cube of an earlier dsmar layout (hashes among the science variables, nanosecond times, zarr strings)."""
    return str(group.attrs.get("software", "")).startswith("dsmar ") and LEGACY_HASH_VAR in group


def _refuse_legacy(group: zarr.Group, path: str) -> None:
    """An earlier layout is read, never extended: one cube, one layout."""
    if _legacy(group):
        raise InputError(
            f"{path} has an earlier dsmar cube layout; it still opens for reading, but write this run to a new --out"
        )


def _empty(path: str) -> bool:
    """Whether nothing is at `path` (a local path or any fsspec URL), or only an empty folder."""
    fs, where = filesystem(path)
    return not fs.exists(where) or (fs.isdir(where) and not fs.ls(where))


def _create_whole(path: str, root: Path | None, layout: CubeLayout, steps: Sequence[Step], attrs: Mapping) -> None:
    """Create a cube that a crash cannot leave half-made: locally built beside `path` and renamed
    into place; elsewhere (no rename) marked complete last, so a half-made one is recognised."""
    if root is None:
        _create(path, layout, steps, attrs)
    else:
        rewrite(root, lambda target: _create(str(target), layout, steps, attrs))


def _append(path: str, layout: CubeLayout, new: Sequence[Step], old_length: int) -> None:
    """Append the times `new` after the cube's `old_length` ones, marked so that a crash can be undone.

    zarr grows one array after another, so a crash part-way leaves time axes of different lengths,
    which xarray refuses to open: the mark tells the next run where to cut them back (`_undo_append`).
    The arrays are grown and the new times' coordinates and provenance written through zarr, so the root's
    metadata is written once, with its consolidated metadata (`_root_attrs`); the new times' data chunks
    stay unwritten (missing) until their tiles are.
    """
    with _fixed_width_text():
        _root_attrs(path).attrs[APPEND_ATTR] = old_length  # before any array grows
        group = zarr.open_group(_at(path), mode="r+", zarr_format=3, use_consolidated=False)
        length = old_length + len(new)
        for array in time_arrays(group):  # the bookkeeping's hashes too
            array.resize((length, *array.shape[1:]))
        _array(group, "time")[old_length:] = np.array([_micros(t) for t, _ in new], dtype=np.int64)
        _write_provenance(group, new, start=old_length)


def _interrupted_append(group: zarr.Group) -> int | None:
    """The time length to cut back to after an interrupted append, or None where none was.

    The append mark says it; an append interrupted before the mark existed left time axes of
    different lengths, the shortest being the old one."""
    if APPEND_ATTR in group.attrs:
        return int(cast(int, group.attrs[APPEND_ATTR]))
    lengths = {array.shape[0] for array in time_arrays(group)}
    return min(lengths) if len(lengths) > 1 else None


def _undo_append(path: str, group: zarr.Group, old_length: int) -> None:
    """Cut every time axis back to `old_length` after an interrupted append (the new times' chunks
    were never written: only their coordinates and provenance, which the next append writes again)."""
    for array in time_arrays(group):
        if array.shape[0] != old_length:
            array.resize((old_length, *array.shape[1:]))
    if APPEND_ATTR in group.attrs:
        with _fixed_width_text():
            del _root_attrs(path).attrs[APPEND_ATTR]


def _steps_of(ds: xr.Dataset) -> list[Step]:
    """The cube's times with their provenance, in stored order."""
    n = ds.sizes["time"]  # a cube written before a column joined the provenance reads it as empty
    columns = [ds[name].values if name in ds else [""] * n for name in ("time", *PROVENANCE)]
    return [
        (np.datetime64(t, "ns"), Provenance(str(o), str(s), np.datetime64(st, "ns"), str(d), str(c), str(r)))
        for t, o, s, st, d, c, r in zip(*columns)
    ]


def _by_time(steps: Iterable[Step]) -> list[Step]:
    return sorted(steps, key=lambda step: step[0])


def _inserts(old: Sequence[Step], new: Sequence[Step]) -> bool:
    """Whether some of `new` (sorted) falls before the cube's last time, so appending would break the order."""
    return bool(old and new) and bool(new[0][0] < max(t for t, _ in old))


def _create(path: str, layout: CubeLayout, steps: Sequence[Step], attrs: Mapping) -> None:
    """Write a new cube at `path` with these times (in order) and empty data variables."""
    ds = _template(layout, [t for t, _ in steps], [p for _, p in steps])
    ds.attrs.update({**attrs, STATE_ATTR: "creating"})
    with _fixed_width_text():
        ds.to_zarr(_at(path), mode="w-", compute=False, zarr_format=3, encoding=_encoding(ds), consolidated=False)
    _create_bookkeeping(path, (layout.plan.n_rows, layout.plan.n_cols), len(steps))
    zarr.open_group(_at(path), mode="r+", zarr_format=3, use_consolidated=False).attrs[STATE_ATTR] = "complete"


def _reorder(
    path: str, root: Path | None, layout: CubeLayout, old: Sequence[Step], merged: Sequence[Step], attrs: Mapping
) -> None:
    """Rewrite the cube with the times `merged` (old and new, in order); each written chunk moves with its time."""
    if root is None:
        raise InputError(
            f"{path} is not a local cube: an earlier period cannot be inserted into it "
            "(times must stay in order); write that period to a new --out"
        )
    position = {t: j for j, (t, _) in enumerate(merged)}

    def build(target: Path) -> None:
        _create(str(target), layout, merged, attrs)
        copy_time_steps(root, target, {i: position[t] for i, (t, _) in enumerate(old)})

    rewrite(root, build)


def _consolidate(path: str) -> None:
    """Consolidate the metadata once the layout is final (chunk writes never change it), so that
    `xr.open_zarr(path)` opens fast and without xarray's non-consolidated warning.

    zarr warns that consolidated metadata is an extension of format 3; xarray and zarr-python,
    the readers Contract 3 names, both support it.
    """
    with warnings.catch_warnings(), _fixed_width_text():
        warnings.filterwarnings("ignore", message="Consolidated metadata is currently not part", category=UserWarning)
        zarr.consolidate_metadata(_at(path), zarr_format=3)


@contextmanager
def _fixed_width_text() -> Iterator[None]:
    """zarr-python calls its fixed-width bytes type unstable; it is a registered zarr extension type
    (`null_terminated_bytes`) of fixed size, which readers in any language decode without a codec."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="The data type .* does not have a Zarr V3 specification")
        yield


def _micros(t: np.datetime64) -> int:
    return int(t.astype("datetime64[us]").astype(np.int64))


def _check_same_method(old: Mapping, new: Mapping, path: str) -> None:
    """One cube, one method, one set of weights and settings: the attrs describe every chunk, not the last run."""
    _check_method(old, new.get("method"), path)
    other_weights = "weights_sha256" in old and old["weights_sha256"] != new.get("weights_sha256")
    if other_weights or old.get("inference") != new.get("inference"):  # no settings: absent on both sides
        raise InputError(
            f"{path} was written by {new.get('method')} with weights {old.get('weights_sha256', 'unrecorded')} and "
            f"settings {old.get('inference', 'none')}, this run has weights {new.get('weights_sha256')} and settings "
            f"{new.get('inference', 'none')}; write to a new --out"
        )


def _check_method(old: Mapping, method: str | None, path: str) -> None:
    if "method" in old and old["method"] != method:
        raise InputError(
            f"{path} was written with method {old['method']!r}; rerun with --method {old['method']} "
            "or write to a new --out"
        )


def _check_tiles(chunks: Sequence[int | None], expected: Sequence[int], path: str) -> None:
    """The cube's (y, x) chunks are its tiles (each clipped to the grid): a run takes the same tile size."""
    if tuple(chunks) != tuple(expected):
        raise InputError(
            f"{path} was written with {chunks[-1]} px tiles; rerun with --tile-size {chunks[-1]} or a new --out"
        )


def _check_compatible(existing: xr.Dataset, layout: CubeLayout, path: str) -> None:
    grid = layout.grid
    same_grid = (
        existing.sizes.get("y") == grid.height
        and existing.sizes.get("x") == grid.width
        and existing.rio.crs is not None
        and CRS.from_user_input(existing.rio.crs) == grid.crs
        and np.allclose(tuple(existing.rio.transform())[:6], grid.transform)
    )
    if not same_grid:
        raise InputError(f"{path} holds a cube on another grid; write this region to a new --out path")
    _check_tiles(existing[REFERENCE].encoding.get("chunks", (None, None, None, None))[-2:], layout.plan.chunks, path)
    for name, bands in layout.bands.items():
        if name not in existing or tuple(existing[MODALITY[name].band_dim].values.tolist()) != tuple(bands):
            raise InputError(f"{path} has different {name} bands; write to a new --out path")


@dataclass(frozen=True)
class ZarrCubeStore:
    """The Zarr v3 cube store (`pipeline.store.CubeStore`) at a local path or an s3:// URL (docs/storage.md).

    Picklable: it holds the location, not an open store or credentials, so Dask workers reopen the cube
    themselves, with the credentials of their own environment.
    Build it with `at`, which makes a local path absolute before it leaves for workers in other folders.
    """

    path: str

    @classmethod
    def at(cls, url: str) -> ZarrCubeStore:
        root = local_dir(url)
        return cls(str(root.resolve()) if root is not None else url)

    @property
    def url(self) -> str:
        return self.path

    @property
    def scratch_url(self) -> str:
        """A hidden sibling named like the lock (`.<cube name>.scratch`)."""
        parent, _, name = self.path.rstrip("/").rpartition("/")
        return f"{parent}/.{name}.scratch"

    def check_target(self, method: MethodSpec | None = None, tile_size: int | None = None) -> None:
        if local_dir(self.path) is None:  # a missing bucket or refused credentials: one line, before any work
            problem = self.check_reachable()
            if problem is not None:
                raise InputError(problem)
        check_out_path(self.path, method, tile_size)

    def check_reachable(self) -> str | None:
        """A local cube (or, before it exists, its folder) takes a probe file here; for an object store, a probe
        object is written beside the cube and deleted."""
        root = local_dir(self.path)
        if root is None:
            try:
                check_reachable(self.path)
            except InputError as err:
                return str(err)
            return None
        target = root if root.exists() else root.parent
        if not target.is_dir():
            return f"{target} is not a folder here"
        try:
            handle, probe = tempfile.mkstemp(dir=target, prefix=".dsmar-worker-probe-")
            os.close(handle)
            os.unlink(probe)
        except OSError as err:
            return f"{target} is not writable here ({err.strerror or err})"
        return None

    def init(
        self, layout: CubeLayout, provenance: Sequence[Provenance], attrs: Mapping[str, str]
    ) -> dict[np.datetime64, int]:
        return init_cube(self.path, layout, provenance, attrs)

    def write(self, time_index: int, tile: Tile, arrays: Mapping[str, np.ndarray], inputs_hash: int) -> None:
        group = zarr.open_group(_at(self.path), mode="r+", zarr_format=3)
        ys, xs = tile.core.slices
        for name, value in arrays.items():
            _array(group, name)[(time_index, ..., ys, xs)] = value
        # Last, so a chunk interrupted mid-write is recomputed next time.
        _array(group, HASH_VAR)[time_index, tile.i, tile.j] = inputs_hash

    def written(self, time_index: int) -> np.ndarray:
        return np.asarray(
            _array(zarr.open_group(_at(self.path, read_only=True), mode="r", zarr_format=3), HASH_VAR)[time_index]
        )

    def read(self, name: str, time_index: int, window: Window | None = None) -> np.ndarray:
        array = _array(zarr.open_group(_at(self.path, read_only=True), mode="r", zarr_format=3), name)
        ys, xs = window.slices if window is not None else (slice(None), slice(None))
        return np.asarray(array[(time_index, ..., ys, xs)])

    @contextmanager
    def lock(self) -> Iterator[None]:
        """One writing run per cube: an advisory lock on a hidden file beside a local cube (released by the
        kernel if the run dies), a lease lock object beside a cube on S3 (`pipeline.object_lock`).

        Other remote stores offer no primitive for one, so it says so once."""
        root = local_dir(self.path)
        if root is None:
            if scheme(self.path) in S3_SCHEMES:
                with ObjectLock(lock_url(self.path)).held():
                    yield
                return
            log.warning("%s is remote: concurrent runs on it are not prevented; run one writer at a time", self.path)
            yield
            return
        root.parent.mkdir(parents=True, exist_ok=True)
        with open(root.parent / f".{root.name}.lock", "a+") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                log.info("%s is being written by another run; waiting for it to finish", self.path)
                fcntl.flock(handle, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def open_cube(path: str) -> xr.Dataset:
    """Open a cube per Contract 3 (the CRS comes back through `decode_coords="all"`)."""
    return xr.open_zarr(_at(path, read_only=True), decode_coords="all", consolidated=False)

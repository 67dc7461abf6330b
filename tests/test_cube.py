"""The Zarr cube (Contract 3): layout, CRS round trip via rioxarray, whole-chunk writes, appends."""

from __future__ import annotations

import itertools
import json
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
import zarr
from affine import Affine
from hypothesis import given, settings
from hypothesis import strategies as st
from pyproj import CRS

from kernel.contracts import MethodSpec
from kernel.errors import InputError
from pipeline.cube import (
    APPEND_ATTR,
    RUNS_KEPT,
    STATE_ATTR,
    ZarrCubeStore,
    _consolidate,
    check_out_path,
    init_cube,
    open_cube,
)
from pipeline.cube_reorder import along_time
from pipeline.grid import Grid
from pipeline.outputs import check_output
from pipeline.store import CubeLayout, Provenance, cube_attrs, inputs_hash
from pipeline.tiles import plan_tiles

BANDS = {"optical": ("blue", "green", "red", "nir"), "sar": ("vv", "vh"), "dem": ("elevation",)}
T0, T1, T2 = (np.datetime64(d, "ns") for d in ("2024-06-04T10:00", "2024-06-14T10:00", "2024-06-24T10:00"))


def _grid(height=150, width=200):
    return Grid.from_affine(32633, Affine(10, 0, 459960, 0, -10, 5110020), height, width)


def _prov(n):
    return Provenance(f"opt-{n}", f"sar-{n}", np.datetime64("2024-06-05T05:00", "ns"), "dem-0")


def _layout(grid, times, size=64):
    return CubeLayout(grid, plan_tiles(grid.shape, size, 16), times, BANDS)


def _arrays(tile, value):
    h, w = tile.core.height, tile.core.width
    out = {"optical": np.full((4, h, w), value, np.float32)}
    for m, c in (("sar", 2), ("dem", 1)):
        out[m] = np.full((c, h, w), value, np.float32)
        out[f"displacement_{m}"] = np.full((2, h, w), value, np.float32)
        out[f"confidence_{m}"] = np.full((h, w), 0.5, np.float32)
    return out


@pytest.fixture
def cube(tmp_path):
    path = str(tmp_path / "cube.zarr")
    layout = _layout(_grid(), (T0, T1))
    init_cube(
        path,
        layout,
        [_prov(0), _prov(1)],
        cube_attrs('{"k": 1}', {"profile": "local"}, MethodSpec("cfog", weights_sha256="ab" * 32)),
    )
    return path, layout


def test_round_trip_keeps_crs_transform_and_contract_variables(cube):
    path, layout = cube
    writer = ZarrCubeStore(path)
    for tile in layout.plan.tiles:
        writer.write(1, tile, _arrays(tile, tile.i * 10 + tile.j), 7)
    ds = open_cube(path)
    assert CRS.from_user_input(ds.rio.crs) == CRS.from_epsg(32633)
    assert tuple(ds.rio.transform())[:6] == pytest.approx(layout.grid.transform)
    np.testing.assert_allclose(ds.x.values, layout.grid.x_coords())
    np.testing.assert_allclose(ds.y.values, layout.grid.y_coords())
    assert {"crs_wkt", "spatial_ref", "GeoTransform"} <= set(ds.spatial_ref.attrs)
    for name in (
        "optical",
        "sar",
        "dem",
        "displacement_sar",
        "displacement_dem",
        "confidence_sar",
        "confidence_dem",
        "optical_item",
        "sar_item",
        "sar_time",
        "dem_item",
    ):
        assert name in ds.data_vars, name
    assert ds.displacement_sar.dims == ("time", "component", "y", "x")
    assert list(ds.component.values) == ["dy", "dx"]
    assert list(ds.band_sar.values) == ["vv", "vh"]
    assert ds.optical.encoding["chunks"] == (1, 4, 64, 64)
    assert list(ds.optical_item.values) == ["opt-0", "opt-1"]
    assert ds.attrs["weights_sha256"] == "ab" * 32 and ds.attrs["config"] == '{"k": 1}'
    assert {"software", "catalog", "created", "method"} <= set(ds.attrs)
    tile = layout.plan.tile(1, 2)
    np.testing.assert_array_equal(ds.sar.isel(time=1).values[:, tile.core.slices[0], tile.core.slices[1]], 12.0)
    assert np.isnan(ds.optical.isel(time=0).values).all()  # never written: NaN, not zeros


def test_users_plain_open_is_quiet_and_sees_appended_times(tmp_path):
    """Contract 3's own call, xr.open_zarr(path, decode_coords="all"), reads consolidated metadata."""
    import warnings

    import xarray as xr

    path = str(tmp_path / "cube.zarr")
    attrs = cube_attrs("{}", {}, MethodSpec("identity"))
    init_cube(path, _layout(_grid(), (T0, T1)), [_prov(0), _prov(1)], attrs)
    init_cube(path, _layout(_grid(), (T0, T1, T2)), [_prov(0), _prov(1), _prov(2)], attrs)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ds = xr.open_zarr(path, decode_coords="all")
    assert ds.sizes["time"] == 3 and ds.rio.crs is not None
    assert ds.attrs["weights_sha256"] == "none: method identity has no weights"


def test_each_write_touches_exactly_one_chunk_per_variable(cube, tmp_path):
    path, layout = cube
    tile = layout.plan.tile(1, 1)
    ZarrCubeStore(path).write(0, tile, _arrays(tile, 1.0), 3)
    for name in ("optical", "sar", "displacement_dem", "confidence_sar", "_dsmar/tile_inputs_hash"):
        chunk_files = [p for p in (tmp_path / "cube.zarr" / name / "c").rglob("*") if p.is_file()]
        assert len(chunk_files) == 1, (name, chunk_files)


def test_concurrent_chunk_writers_never_lose_each_others_data(cube):
    path, layout = cube
    writer = ZarrCubeStore(path)
    threads = [
        threading.Thread(target=writer.write, args=(0, t, _arrays(t, t.i * 10 + t.j), 5)) for t in layout.plan.tiles
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ds = open_cube(path)
    for tile in layout.plan.tiles:
        block = ds.displacement_sar.isel(time=0).values[:, tile.core.slices[0], tile.core.slices[1]]
        np.testing.assert_array_equal(block, tile.i * 10 + tile.j)
    assert (writer.written(0) == 5).all()


def test_reinit_appends_new_times_and_refreshes_provenance(cube):
    path, layout = cube
    tile = layout.plan.tile(0, 0)
    ZarrCubeStore(path).write(1, tile, _arrays(tile, 4.0), 9)
    created = open_cube(path).attrs["created"]
    changed = Provenance("opt-1b", "sar-1b", np.datetime64("2024-06-15T05:00", "ns"), "dem-0")
    index = init_cube(
        path,
        _layout(_grid(), (T1, T2)),
        [changed, _prov(2)],
        cube_attrs("{}", {}, MethodSpec("cfog", weights_sha256="ab" * 32)),
    )
    assert index == {T0: 0, T1: 1, T2: 2}
    ds = open_cube(path)
    assert list(ds.time.values) == [T0, T1, T2]
    assert list(ds.optical_item.values) == ["opt-0", "opt-1b", "opt-2"]
    assert ds.attrs["created"] == created
    assert float(ds.sar.isel(time=1, x=0, y=0, band_sar=0)) == 4.0  # existing data kept
    assert ZarrCubeStore(path).written(2).sum() == 0


def test_reinit_on_another_grid_is_refused(cube):
    path, _ = cube
    with pytest.raises(InputError, match="another grid"):
        init_cube(path, _layout(_grid(150, 210), (T0,)), [_prov(0)], {})
    with pytest.raises(InputError, match="--tile-size"):
        init_cube(path, _layout(_grid(), (T0,), size=128), [_prov(0)], {})


def test_inputs_hash_is_stable_positive_and_sensitive():
    a = inputs_hash("0.1", "cfog", None, 512, 64, "opt", ["sar"], ["dem"])
    assert a == inputs_hash("0.1", "cfog", None, 512, 64, "opt", ["sar"], ["dem"])
    assert a > 0 and a != inputs_hash("0.1", "cfog", None, 512, 32, "opt", ["sar"], ["dem"])


def test_rerun_keeps_fractional_sar_times(tmp_path):
    path = str(tmp_path / "cube.zarr")
    layout = _layout(_grid(), (T0,))
    prov = [Provenance("opt-0", "sar-0", np.datetime64("2024-06-05T05:00:19.523", "ns"), "dem-0")]
    for _ in range(2):  # the second run rewrites provenance into the existing store
        init_cube(path, layout, prov, cube_attrs("{}", {}, MethodSpec("cfog")))
    assert open_cube(path).sar_time.values[0] == np.datetime64("2024-06-05T05:00:19.523", "ns")


def test_a_cube_keeps_one_method(cube):
    path, _ = cube
    with pytest.raises(InputError, match="written with method 'cfog'; rerun with --method cfog"):
        init_cube(
            path,
            _layout(_grid(), (T0, T1, T2)),
            [_prov(0), _prov(1), _prov(2)],
            cube_attrs("{}", {}, MethodSpec("dsmar", weights_sha256="cd" * 32)),
        )


def test_a_cube_keeps_one_set_of_weights_and_inference_settings(tmp_path):
    path, layout = str(tmp_path / "cube.zarr"), _layout(_grid(), (T0, T1))
    tuned = {"augment": 4, "polish": [5, 3], "trend": "affine"}
    init_cube(
        path,
        layout,
        [_prov(0), _prov(1)],
        cube_attrs("{}", {}, MethodSpec("dsmar", weights_sha256="cd" * 32, settings=tuned)),
    )
    assert json.loads(zarr.open_group(path, mode="r").attrs["inference"]) == tuned
    grown = _layout(_grid(), (T0, T1, T2))
    with pytest.raises(InputError, match=f"weights {'cd' * 32} and settings .*this run has weights {'ef' * 32} and"):
        init_cube(
            path,
            grown,
            [_prov(0), _prov(1), _prov(2)],
            cube_attrs("{}", {}, MethodSpec("dsmar", weights_sha256="ef" * 32, settings=tuned)),
        )
    with pytest.raises(
        InputError, match=r"settings \{.*\[5, 3\].*this run has .* settings \{.*\"polish\": 5.*new --out"
    ):
        init_cube(
            path,
            grown,
            [_prov(0), _prov(1), _prov(2)],
            cube_attrs("{}", {}, MethodSpec("dsmar", weights_sha256="cd" * 32, settings={**tuned, "polish": 5})),
        )
    init_cube(
        path,
        grown,
        [_prov(0), _prov(1), _prov(2)],
        cube_attrs("{}", {}, MethodSpec("dsmar", weights_sha256="cd" * 32, settings=dict(tuned))),
    )
    assert open_cube(path).sizes["time"] == 3

    older = str(tmp_path / "older.zarr")  # a dsmar cube from before the settings were recorded
    init_cube(older, layout, [_prov(0), _prov(1)], cube_attrs("{}", {}, MethodSpec("dsmar", weights_sha256="cd" * 32)))
    with pytest.raises(InputError, match="and settings none, this run has"):
        init_cube(
            older,
            grown,
            [_prov(0), _prov(1), _prov(2)],
            cube_attrs("{}", {}, MethodSpec("dsmar", weights_sha256="cd" * 32, settings=tuned)),
        )


DAYS = tuple(np.datetime64(f"2024-05-{d:02d}T10:00", "ns") for d in (3, 9, 15, 21, 27))


def _dated_prov(t):
    """Provenance that names its own time, so a test can tell which time a row belongs to."""
    day = str(t)[:10]
    return Provenance(f"opt-{day}", f"sar-{day}", t - np.timedelta64(5, "h"), f"dem-{day}")


def _init(path, grid, times, size=64):
    layout = _layout(grid, tuple(times), size)
    return init_cube(path, layout, [_dated_prov(t) for t in times], cube_attrs("{}", {}, MethodSpec("cfog"))), layout


def _stamp(path, index, tile, t):
    """Write one tile for time t with values and an inputs hash derived from t."""
    value = float(t.astype("datetime64[D]").astype(int) % 1000)
    ZarrCubeStore(path).write(index[t], tile, _arrays(tile, value), int(value) + 1)
    return value


def _assert_tile(ds, tile, t, value):
    ys, xs = tile.core.slices
    step = ds.sel(time=t)
    for name in ("optical", "sar", "dem", "displacement_sar", "displacement_dem"):
        np.testing.assert_array_equal(step[name].values[..., ys, xs], value, err_msg=f"{name} at {t}")
    np.testing.assert_array_equal(step["confidence_dem"].values[ys, xs], 0.5)
    prov = _dated_prov(t)
    assert (str(step.optical_item.values), str(step.sar_item.values), str(step.dem_item.values)) == (
        prov.optical_item,
        prov.sar_item,
        prov.dem_item,
    )
    assert step.sar_time.values == prov.sar_time


def test_an_earlier_period_is_inserted_in_order_and_written_tiles_follow_their_times(tmp_path):
    path = str(tmp_path / "cube.zarr")
    later = (DAYS[2], DAYS[4])
    index, layout = _init(path, _grid(), later)
    tiles = {later[0]: layout.plan.tile(0, 1), later[1]: layout.plan.tile(2, 3)}
    values = {t: _stamp(path, index, tile, t) for t, tile in tiles.items()}
    created = open_cube(path).attrs["created"]

    index, _ = _init(path, _grid(), (DAYS[0], DAYS[3]))  # one before, one between the cube's times

    assert index == {DAYS[0]: 0, DAYS[2]: 1, DAYS[3]: 2, DAYS[4]: 3}
    ds = open_cube(path)
    assert list(ds.time.values) == [DAYS[0], DAYS[2], DAYS[3], DAYS[4]]
    assert ds.sel(time=slice(DAYS[1], DAYS[3])).sizes["time"] == 2
    for t, tile in tiles.items():
        _assert_tile(ds, tile, t, values[t])
        hashes = ZarrCubeStore(path).written(index[t])
        assert hashes[tile.i, tile.j] == int(values[t]) + 1 and np.count_nonzero(hashes) == 1
    for t in (DAYS[0], DAYS[3]):
        assert np.isnan(ds.optical.sel(time=t).values).all() and not ZarrCubeStore(path).written(index[t]).any()
        assert str(ds.optical_item.sel(time=t).values) == _dated_prov(t).optical_item
    assert ds.attrs["created"] == created and ds.rio.crs is not None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cube.zarr"]  # no sibling left behind


def test_later_times_are_appended_without_rewriting_written_chunks(tmp_path):
    path = str(tmp_path / "cube.zarr")
    index, layout = _init(path, _grid(), DAYS[:2])
    tile = layout.plan.tile(1, 1)
    _stamp(path, index, tile, DAYS[1])
    chunk = tmp_path / "cube.zarr" / "sar" / "c" / "1" / "0" / "1" / "1"
    inode = chunk.stat().st_ino

    _init(path, _grid(), DAYS[3:])

    assert chunk.stat().st_ino == inode
    assert list(open_cube(path).time.values) == list(DAYS[:2] + DAYS[3:])


def test_a_reorder_that_died_between_its_renames_leaves_the_old_cube_whole(tmp_path):
    path = tmp_path / "cube.zarr"
    index, layout = _init(str(path), _grid(), DAYS[2:4])
    tile = layout.plan.tile(0, 0)
    value = _stamp(str(path), index, tile, DAYS[3])
    _init(str(tmp_path / "cube.zarr.building"), _grid(), DAYS[:1])  # a finished new cube, never swapped in
    os.rename(path, tmp_path / "cube.zarr.previous")

    index, _ = _init(str(path), _grid(), DAYS[:1])

    assert index == {DAYS[0]: 0, DAYS[2]: 1, DAYS[3]: 2}
    _assert_tile(open_cube(str(path)), tile, DAYS[3], value)
    assert ZarrCubeStore(str(path)).written(2)[0, 0] == int(value) + 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cube.zarr"]


def test_a_reorder_that_died_while_building_keeps_the_old_cube(tmp_path):
    path = tmp_path / "cube.zarr"
    _init(str(path), _grid(), DAYS[3:])
    (tmp_path / "cube.zarr.building" / "sar").mkdir(parents=True)  # half a new cube
    index, _ = _init(str(path), _grid(), DAYS[4:])
    assert index == {DAYS[3]: 0, DAYS[4]: 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cube.zarr"]


def test_an_earlier_period_is_refused_for_a_remote_cube(tmp_path):
    path = f"memory://{uuid.uuid4().hex}/cube.zarr"
    _init(path, _grid(), DAYS[2:3])
    with pytest.raises(InputError, match="earlier period cannot be inserted"):
        _init(path, _grid(), DAYS[:1])
    assert list(open_cube(path).time.values) == [DAYS[2]]
    _init(path, _grid(), DAYS[3:4])  # later periods still append
    assert list(open_cube(path).time.values) == [DAYS[2], DAYS[3]]


@settings(max_examples=6, deadline=None)
@given(order=st.permutations(range(len(DAYS))), cuts=st.sets(st.integers(1, len(DAYS) - 1), max_size=2))
def test_periods_arriving_in_any_order_give_sorted_time_with_data_on_its_time(order, cuts):
    bounds = [0, *sorted(cuts), len(DAYS)]
    periods = [[DAYS[k] for k in order[a:b]] for a, b in itertools.pairwise(bounds)]
    grid = _grid(40, 40)
    with tempfile.TemporaryDirectory() as tmp:
        path = str(Path(tmp) / "cube.zarr")
        values, tile = {}, None
        for period in periods:
            index, layout = _init(path, grid, period, size=32)
            seen = sorted([*values, *period])
            assert index == {t: i for i, t in enumerate(seen)}
            tile = layout.plan.tile(1, 0)
            values.update({t: _stamp(path, index, tile, t) for t in period})
        ds = open_cube(path)
        assert list(ds.time.values) == sorted(DAYS)
        for i, t in enumerate(sorted(DAYS)):
            _assert_tile(ds, tile, t, values[t])
            assert ZarrCubeStore(path).written(i).tolist() == [[0, 0], [int(values[t]) + 1, 0]]
            assert np.isnan(ds.sar.sel(time=t).values[:, :32, :]).all()


def _interrupt(monkeypatch, cls, method, after):
    """Make `cls.method` raise KeyboardInterrupt (a Ctrl-C or kill) on its call number `after` + 1."""
    real, calls = getattr(cls, method), itertools.count()

    def flaky(self, *args, **kwargs):
        if next(calls) == after:
            raise KeyboardInterrupt
        return real(self, *args, **kwargs)

    monkeypatch.setattr(cls, method, flaky)


def _place(tmp_path, where):
    return str(tmp_path / "cube.zarr") if where == "local" else f"memory://{uuid.uuid4().hex}/cube.zarr"


@pytest.mark.parametrize("where", ["local", "remote"])
def test_an_append_interrupted_between_array_resizes_is_undone_by_the_next_run(tmp_path, monkeypatch, where):
    path = _place(tmp_path, where)
    index, layout = _init(path, _grid(), DAYS[:2])
    tile = layout.plan.tile(1, 1)
    value = _stamp(path, index, tile, DAYS[1])
    _interrupt(monkeypatch, zarr.Array, "resize", after=3)
    with pytest.raises(KeyboardInterrupt):
        _init(path, _grid(), DAYS[2:4])
    monkeypatch.undo()
    lengths = {a.shape[0] for _, a in zarr.open_group(path, mode="r", use_consolidated=False).arrays() if along_time(a)}
    assert lengths == {2, 4}  # the state xarray refuses to open

    index, _ = _init(path, _grid(), DAYS[2:4])

    assert index == {t: i for i, t in enumerate(DAYS[:4])}
    ds = open_cube(path)
    assert list(ds.time.values) == list(DAYS[:4]) and APPEND_ATTR not in ds.attrs
    _assert_tile(ds, tile, DAYS[1], value)
    assert ZarrCubeStore(path).written(1)[1, 1] == int(value) + 1
    for t in DAYS[2:4]:
        assert str(ds.optical_item.sel(time=t).values) == _dated_prov(t).optical_item
        assert not ZarrCubeStore(path).written(index[t]).any()


def _files(path):
    return {p.relative_to(path): p.read_bytes() for p in sorted(Path(path).rglob("*")) if p.is_file()}


def test_an_out_that_is_not_a_dsmar_cube_is_refused_untouched(tmp_path):
    folder = tmp_path / "notes.zarr"
    folder.mkdir()
    (folder / "notes.txt").write_text("mine")
    group = tmp_path / "other.zarr"
    zarr.create_group(str(group)).create_array("v", shape=(2,), dtype="f4")
    remote = f"memory://{uuid.uuid4().hex}/other.zarr"
    zarr.create_group(remote).create_array("v", shape=(2,), dtype="f4")
    for path in (folder, group):
        before = _files(path)
        message = f"{path} exists and is not a dsmar cube; choose another --out or delete it"
        with pytest.raises(InputError, match=f"^{re.escape(message)}$"):
            check_output(str(path))
        with pytest.raises(InputError, match="is not a dsmar cube"):
            _init(str(path), _grid(), DAYS[:1])
        assert _files(path) == before
    with pytest.raises(InputError, match="is not a dsmar cube"):
        _init(remote, _grid(), DAYS[:1])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.zarr", "other.zarr"]  # no sibling either

    empty = tmp_path / "empty.zarr"
    empty.mkdir()
    assert check_output(str(empty)) == str(empty)
    _init(str(empty), _grid(), DAYS[:1])
    assert list(open_cube(str(empty)).time.values) == [DAYS[0]]
    assert check_output(str(empty)) == str(empty)  # and once it holds a cube, it may be extended


@pytest.mark.parametrize("where", ["local", "remote"])
def test_a_creation_interrupted_part_way_is_never_taken_for_a_cube_on_another_grid(tmp_path, monkeypatch, where):
    path = _place(tmp_path, where)
    _interrupt(monkeypatch, zarr.Group, "create", after=3)
    with pytest.raises(KeyboardInterrupt):
        _init(path, _grid(), DAYS[:2])
    monkeypatch.undo()
    if where == "remote":  # no rename there: the cube is recognised as unfinished
        with pytest.raises(InputError, match="incomplete cube from an interrupted run; delete it"):
            _init(path, _grid(), DAYS[:2])
        return
    assert not Path(path).exists()  # the half-made cube sits beside it, never at the path
    index, _ = _init(path, _grid(), DAYS[:2])
    assert index == {DAYS[0]: 0, DAYS[1]: 1}
    assert list(open_cube(path).time.values) == list(DAYS[:2])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cube.zarr"]


def test_attrs_describe_the_latest_run_and_keep_every_run_in_runs(tmp_path):
    path = str(tmp_path / "cube.zarr")
    runs = [
        {**cube_attrs(json.dumps({"start": start}), {"profile": profile}, MethodSpec("cfog")), "created": created}
        for start, profile, created in (
            ("2024-05-15", "a", "2026-01-01T00:00:00+00:00"),
            ("2024-05-27", "b", "2026-01-02T00:00:00+00:00"),
            ("2024-05-03", "c", "2026-01-03T00:00:00+00:00"),
        )
    ]
    for attrs, times in zip(runs, (DAYS[2:3], DAYS[4:], DAYS[:1]), strict=True):  # append, then reorder
        init_cube(path, _layout(_grid(), times), [_dated_prov(t) for t in times], attrs)
    attrs = open_cube(path).attrs
    assert json.loads(attrs["config"]) == {"start": "2024-05-03"} and json.loads(attrs["catalog"]) == {"profile": "c"}
    assert attrs["created"] == "2026-01-01T00:00:00+00:00"
    assert json.loads(attrs["runs"]) == [
        {"created": r["created"], "config": json.loads(r["config"]), "catalog": json.loads(r["catalog"])} for r in runs
    ]


def test_pixel_variables_carry_cf_units_and_every_data_variable_a_grid_mapping(cube):
    import inspect

    from pipeline.load import load_stack

    path, _ = cube
    ds = xr.open_zarr(path, decode_coords="all")
    assert inspect.signature(load_stack).parameters["sar_db"].default is True  # what `sar` holds
    units = {
        "optical": "1",
        "sar": "dB",
        "dem": "m",
        "displacement_sar": "pixel",
        "displacement_dem": "pixel",
        "confidence_sar": "1",
        "confidence_dem": "1",
    }
    for name, unit in units.items():
        assert ds[name].attrs["units"] == unit and ds[name].attrs["long_name"], name
        assert ds[name].encoding["grid_mapping"] == "spatial_ref", name
    assert "Contract 1" in ds.displacement_dem.attrs["long_name"]
    for name in ds.data_vars:  # Contract 3, as written: every data variable
        assert ds[name].encoding.get("grid_mapping") == "spatial_ref", name
    assert CRS.from_user_input(ds.rio.crs) == CRS.from_epsg(32633)


def test_a_cube_of_the_earlier_layout_opens_but_is_refused_for_appends_in_one_line(cube):
    """Earlier cubes kept `tile_inputs_hash` among the science variables and had no completion marker."""
    path, layout = cube
    group = zarr.open_group(path, mode="r+", zarr_format=3, use_consolidated=False)
    group.attrs.pop(STATE_ATTR)
    group.create_array("tile_inputs_hash", shape=(2, 3, 4), dtype="int64", dimension_names=("time", "r", "c"))
    _consolidate(path)
    before = sorted(p.relative_to(path) for p in Path(path).rglob("*"))
    for attempt in (lambda: check_out_path(path), lambda: init_cube(path, layout, [_prov(0), _prov(1)], {})):
        with pytest.raises(InputError, match="earlier dsmar cube layout.*new --out") as err:
            attempt()
        assert "\n" not in str(err.value)
    assert sorted(p.relative_to(path) for p in Path(path).rglob("*")) == before
    assert open_cube(path).sizes["time"] == 2


def test_a_cube_left_uneven_by_an_unmarked_interrupted_append_is_repaired(cube):
    """Older dsmar versions appended without a marker: some time arrays grew, others did not."""
    path, layout = cube
    writer = ZarrCubeStore(path)
    tile = layout.plan.tiles[0]
    writer.write(1, tile, _arrays(tile, 5.0), 7)
    group = zarr.open_group(path, mode="r+", zarr_format=3, use_consolidated=False)
    group["sar_item"].resize((3,))
    group["time"].resize((3,))
    later = _layout(_grid(), (T0, T1, T2))
    index = init_cube(
        path,
        later,
        [_prov(0), _prov(1), _prov(2)],
        cube_attrs('{"k": 1}', {"profile": "local"}, MethodSpec("cfog", weights_sha256="ab" * 32)),
    )
    ds = open_cube(path)
    assert list(ds.time.values) == [T0, T1, T2] and index[T2] == 2
    assert list(ds.sar_item.values) == ["sar-0", "sar-1", "sar-2"]
    assert bool(ZarrCubeStore(path).written(1)[tile.i, tile.j])


def test_check_out_path_refuses_another_method_or_tile_size_and_takes_a_tile_larger_than_the_grid(tmp_path):
    path, cfog = str(tmp_path / "small.zarr"), MethodSpec("cfog")
    init_cube(
        path, _layout(_grid(40, 50), (T0,), size=512), [_prov(0)], cube_attrs('{"k": 1}', {"profile": "local"}, cfog)
    )  # chunks clipped to (40, 50)
    check_out_path(path, cfog, 512)
    check_out_path(path, cfog, 64)  # 64 px tiles clip to the same 40 x 50 chunks
    with pytest.raises(InputError, match="written with method 'cfog'; rerun with --method cfog"):
        check_out_path(path, MethodSpec("identity"), 512)
    with pytest.raises(InputError, match=r"settings none, this run has .* settings \{\"fine_radius\": 3\}"):
        check_out_path(path, MethodSpec("cfog", {"fine_radius": 3}, None, {"fine_radius": 3}), 512)
    with pytest.raises(InputError, match="written with 50 px tiles; rerun with --tile-size 50"):
        check_out_path(path, cfog, 32)


def test_a_second_writer_waits_for_the_cube_lock_until_the_first_run_ends(tmp_path):
    path = str(tmp_path / "cube.zarr")
    held = tmp_path / "held"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time, pathlib\n"
            "from pipeline.cube import ZarrCubeStore\n"
            f"with ZarrCubeStore.at({path!r}).lock():\n"
            f"    pathlib.Path({str(held)!r}).write_text(str(time.time()))\n"
            "    time.sleep(1.5)\n"
            "    released = time.time()\n"
            "print(released)\n",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    deadline = time.time() + 60
    while not held.exists() and time.time() < deadline:
        time.sleep(0.05)
    assert held.exists(), "the holder never took the lock"
    with ZarrCubeStore.at(path).lock():
        acquired = time.time()
    out, _ = holder.communicate(timeout=60)
    assert acquired >= float(out) - 0.05  # the second writer got in only once the first let go


def test_the_store_resolves_a_relative_path_before_it_leaves_for_workers(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = ZarrCubeStore.at("runs/c.zarr")
    assert store.url == str(tmp_path / "runs" / "c.zarr")
    assert ZarrCubeStore.at("s3://bucket/c.zarr").url == "s3://bucket/c.zarr"


def test_a_provenance_entry_wider_than_its_column_is_refused_in_one_line_and_the_cube_kept(cube):
    path, layout = cube
    many = ",".join(f"dem-tile-{i:04d}" for i in range(100))  # 1399 bytes, over the 1024-byte column
    with pytest.raises(InputError, match="provenance entry is 1399 bytes, more than the cube's 1024") as err:
        init_cube(path, layout, [_prov(0), Provenance("opt-1", "sar-1", T0, many)], _cfog_attrs())
    assert "\n" not in str(err.value)
    assert list(open_cube(path).dem_item.values) == ["dem-0", "dem-0"]


def _cfog_attrs() -> dict:
    return cube_attrs('{"k": 1}', {"profile": "local"}, MethodSpec("cfog", weights_sha256="ab" * 32))


def test_runs_keeps_the_latest_runs_only(tmp_path):
    path = str(tmp_path / "cube.zarr")
    layout = _layout(_grid(), (T0,))
    for k in range(RUNS_KEPT + 3):
        attrs = {**cube_attrs(json.dumps({"run": k}), {"profile": "local"}, MethodSpec("cfog")), "created": f"c{k}"}
        init_cube(path, layout, [_prov(0)], attrs)
    runs = json.loads(open_cube(path).attrs["runs"])
    assert [r["config"]["run"] for r in runs] == list(range(3, RUNS_KEPT + 3))
    assert open_cube(path).attrs["created"] == "c0"


def test_each_time_records_the_flow_run_that_last_wrote_it(tmp_path):
    path = str(tmp_path / "cube.zarr")
    first = [replace(_prov(0), flow_run_id="run-a"), replace(_prov(1), flow_run_id="run-a")]
    init_cube(path, _layout(_grid(), (T0, T1)), first, {})
    init_cube(path, _layout(_grid(), (T1, T2)), [replace(_prov(1), flow_run_id="run-b")] * 2, {})
    ds = open_cube(path)
    assert list(ds.flow_run_id.values) == ["run-a", "run-b", "run-b"]


def test_a_cube_from_before_the_quality_flags_gets_them_unwritten_and_keeps_its_chunks(tmp_path):
    """A cube laid out before the quality variables and the flow-run column existed takes a new run: the
    variables are added (its written chunks read as missing there), nothing written is lost."""
    path = str(tmp_path / "cube.zarr")
    layout = _layout(_grid(), (T0,))
    init_cube(path, layout, [_prov(0)], {})
    store = ZarrCubeStore.at(path)
    tile = layout.plan.tiles[0]
    store.write(0, tile, _arrays(tile, 3.0), 17)
    group = zarr.open_group(path, mode="r+", use_consolidated=False)
    for name in ("quality_sar", "quality_dem", "flow_run_id"):
        del group[name]
    _consolidate(path)
    index = init_cube(path, _layout(_grid(), (T0, T1)), [_prov(0), replace(_prov(1), flow_run_id="r")], {})
    assert index == {T0: 0, T1: 1}
    ds = open_cube(path)
    assert np.isnan(ds.quality_sar.values).all() and ds.quality_sar.attrs["flag_values"] == [0, 1, 2]
    assert list(ds.flow_run_id.values) == ["", "r"]
    np.testing.assert_array_equal(ds.sar.isel(time=0).values[:, tile.core.slices[0], tile.core.slices[1]], 3.0)
    assert store.written(0)[0, 0] == 17
    flags = {"quality_sar": np.ones((tile.core.height, tile.core.width), np.uint8)}
    store.write(1, tile, {**_arrays(tile, 1.0), **flags}, 5)
    assert (open_cube(path).quality_sar.isel(time=1).values[tile.core.slices] == 1).all()


def test_a_reader_opening_the_cube_as_contract_3_says_never_fails_while_runs_add_times(tmp_path):
    """xr.open_zarr(path) reads the consolidated metadata: every write of the cube's own metadata keeps it, so a
    reader opening the cube while a run appends times or rewrites the attrs sees the cube before or after, never
    a cube without consolidated metadata ('not found' from zarr)."""
    path = str(tmp_path / "cube.zarr")
    attrs = cube_attrs("{}", {}, MethodSpec("identity"))
    days = [np.datetime64("2024-06-01T10:00", "ns") + np.timedelta64(d, "D") for d in range(12)]
    init_cube(path, _layout(_grid(), tuple(days[:1])), [_prov(0)], attrs)
    failures: list[str] = []
    seen: set[int] = set()
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            try:
                with xr.open_zarr(path, decode_coords="all", consolidated=True) as ds:
                    seen.add(ds.sizes["time"])
            except Exception as error:  # noqa: BLE001 - any failure of the user's open is the finding
                failures.append(f"{type(error).__name__}: {error}")

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for n in range(2, len(days) + 1):
            init_cube(path, _layout(_grid(), tuple(days[:n])), [_prov(i) for i in range(n)], attrs)  # appends one
            init_cube(path, _layout(_grid(), tuple(days[:n])), [_prov(i) for i in range(n)], attrs)  # attrs only
    finally:
        done.set()
        reader.join()
    assert not failures, failures[:3]
    assert len(seen) > 1  # the reader did open the cube between the runs

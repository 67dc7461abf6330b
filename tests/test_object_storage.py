"""Cubes and assets on S3-compatible object storage, against a real S3 server on loopback (tests/s3_server.py):
the cube store's create, write, resume, append and read-back; what object storage refuses; the lock object;
asset headers read through GDAL's /vsis3/ from the environment's endpoint; s3fs missing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import rasterio
import xarray as xr
from rasterio.transform import from_origin

import dsmar
from dsmar.cli import main
from kernel.contracts import MethodSpec
from kernel.errors import InputError
from pipeline.cube import ZarrCubeStore, open_cube
from pipeline.load_assets import read_header
from pipeline.object_lock import ObjectLock, lock_url
from pipeline.object_store import gdal_s3_env, storage_options
from pipeline.outputs import check_output, open_store
from pipeline.store import cube_attrs
from tests.conftest import REPO
from tests.s3_server import SECRET, s3_server
from tests.test_cube import T0, T1, T2, _arrays, _grid, _layout, _prov
from tests.test_pipeline_cli import RUN

ATTRS = cube_attrs('{"k": 1}', {"profile": "local"}, MethodSpec("cfog", weights_sha256="ab" * 32))


@pytest.fixture(scope="module")
def s3():
    with s3_server() as server:
        yield server


def test_a_cube_on_s3_is_created_filled_resumed_appended_and_read_back(s3):
    store = open_store(s3.url("roundtrip/cube.zarr"))
    store.check_target()  # nothing there yet: passes
    layout = _layout(_grid(), (T0, T1))
    assert store.init(layout, [_prov(0), _prov(1)], ATTRS) == {T0: 0, T1: 1}
    tile = layout.plan.tiles[0]
    store.write(1, tile, _arrays(tile, 7.0), inputs_hash=42)
    assert store.written(1)[tile.i, tile.j] == 42 and np.count_nonzero(store.written(1)) == 1
    ys, xs = tile.core.slices
    assert np.all(store.read("sar", 1)[:, ys, xs] == 7.0)

    appended = _layout(_grid(), (T0, T1, T2))
    assert store.init(appended, [_prov(0), _prov(1), _prov(2)], ATTRS) == {T0: 0, T1: 1, T2: 2}
    assert store.written(1)[tile.i, tile.j] == 42  # resume: the written chunk and its hash survive the append
    assert not store.written(2).any()
    with pytest.raises(InputError, match="was written with method 'cfog'"):
        store.check_target(MethodSpec("phase"), 64)
    with pytest.raises(InputError, match="--tile-size 64"):
        store.check_target(tile_size=128)
    plain = xr.open_zarr(store.url, storage_options=storage_options(store.url), decode_coords="all")
    for ds in (open_cube(store.url), dsmar.open_cube(store.url), plain):
        assert ds.sizes["time"] == 3 and ds.rio.crs.to_epsg() == 32633
        assert float(ds.sar.isel(time=1, y=ys, x=xs).min()) == 7.0
        assert ds.attrs["dsmar_cube"] == "complete" and len(json.loads(ds.attrs["runs"])) == 2


def test_an_earlier_period_is_refused_on_s3_in_one_line_and_the_cube_is_kept(s3):
    store = open_store(s3.url("reorder/cube.zarr"))
    store.init(_layout(_grid(), (T1, T2)), [_prov(1), _prov(2)], ATTRS)
    with pytest.raises(InputError, match="earlier period cannot be inserted") as refused:
        store.init(_layout(_grid(), (T0,)), [_prov(0)], ATTRS)
    assert "\n" not in str(refused.value)
    assert open_cube(store.url).sizes["time"] == 2


def test_a_missing_bucket_is_one_line_before_anything_is_written(s3):
    store = open_store("s3://no-such-bucket/cube.zarr")
    with pytest.raises(InputError, match="cannot write beside s3://no-such-bucket/cube.zarr") as refused:
        store.check_target()
    assert "\n" not in str(refused.value)
    store = open_store(s3.url("reachable/cube.zarr"))
    assert store.check_reachable() is None
    assert s3.objects("reachable") == {}  # the probe is gone


def test_a_local_cube_is_reachable_where_its_folder_is_writable(tmp_path):
    assert open_store(str(tmp_path / "cube.zarr")).check_reachable() is None
    assert list(tmp_path.iterdir()) == []
    assert "missing is not a folder here" in open_store(str(tmp_path / "missing" / "cube.zarr")).check_reachable()


def test_dsmar_run_into_a_missing_bucket_is_one_line_before_any_work(s3, capsys):
    assert main([*RUN, "--out", "s3://no-such-bucket/cube.zarr"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dsmar run: error: cannot write beside s3://no-such-bucket/"), lines
    assert "bucket does not exist" in lines[0]


def test_output_urls_must_name_a_zarr_cube(s3):
    assert check_output(s3.url("out/cube.zarr/")) == s3.url("out/cube.zarr")
    with pytest.raises(InputError, match="ending in .zarr"):
        check_output(s3.url("out/cube"))


def test_without_s3fs_an_s3_output_is_one_line_naming_the_extra(tmp_path):
    """s3fs made unimportable in a fresh interpreter, as where the extra was not installed."""
    argv = [*RUN, "--out", "s3://bucket/cube.zarr"]
    code = f"import sys; sys.modules['s3fs'] = None; from dsmar.cli import main; sys.exit(main({argv!r}))"
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120, env=_pythonpath()
    )
    assert done.returncode != 0
    assert "install dsmar[s3]" in done.stderr and "Traceback" not in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


def _pythonpath() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO)}


def test_a_second_writer_waits_for_the_lock_object_and_a_live_holder_keeps_it(s3):
    url = lock_url(s3.url("locked/cube.zarr"))
    assert url == s3.url("locked/.cube.zarr.lock")
    order: list[str] = []
    first = ObjectLock(url, lease_s=0.8, poll_s=0.1)
    with first.held():

        def second() -> None:
            with ObjectLock(url, lease_s=0.8, poll_s=0.1).held():
                order.append("second")

        waiter = threading.Thread(target=second)
        waiter.start()
        time.sleep(2.5)  # three leases: the holder's refreshes keep the waiter out
        order.append("first done")
    waiter.join(10)
    assert order == ["first done", "second"]
    assert s3.objects("locked/") == {}  # released


def test_a_lock_whose_run_died_is_taken_over_after_the_lease(s3):
    url = lock_url(s3.url("abandoned/cube.zarr"))
    s3.client().put_object(Bucket=s3.bucket, Key="abandoned/.cube.zarr.lock", Body=b'{"owner": "dead:1"}')
    started = time.monotonic()
    with ObjectLock(url, lease_s=1.0, poll_s=0.1).held():
        waited = time.monotonic() - started
    assert 1.0 <= waited < 5.0


def test_the_store_lock_on_s3_is_the_lock_object(s3):
    store = ZarrCubeStore.at(s3.url("held/cube.zarr"))
    with store.lock():
        assert list(s3.objects("held/")) == ["held/.cube.zarr.lock"]
        with pytest.raises(FileExistsError):
            ObjectLock(lock_url(store.url))._put(IfNoneMatch="*")
    assert s3.objects("held/") == {}


def test_assets_on_s3_are_read_through_the_environments_endpoint(s3, tmp_path):
    local = tmp_path / "a.tif"
    profile = dict(driver="GTiff", width=64, height=48, count=1, dtype="float32", crs="EPSG:32632", nodata=-1.0)
    with rasterio.open(local, "w", transform=from_origin(500000, 5000000, 10, 10), **profile) as dst:
        dst.write(np.ones((1, 48, 64), np.float32))
    s3.client().upload_file(str(local), s3.bucket, "assets/a.tif")
    header = read_header(s3.url("assets/a.tif"))
    assert (header.shape, header.epsg, header.nodata) == ((48, 64), 32632, -1.0)
    host = s3.endpoint.removeprefix("http://")
    assert gdal_s3_env() == {"AWS_S3_ENDPOINT": host, "AWS_HTTPS": "NO", "AWS_VIRTUAL_HOSTING": "FALSE"}


def test_storage_options_carry_the_endpoint_and_region_never_credentials(s3, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "https://minio.example:9000")
    options = storage_options(s3.url("x.zarr"))
    assert options["endpoint_url"] == "https://minio.example:9000"  # the S3-specific variable wins
    assert options["client_kwargs"] == {"region_name": "us-east-1"}
    assert SECRET not in json.dumps(options) and "dsmar-test-key" not in json.dumps(options)
    assert storage_options("/tmp/cube.zarr") == {}
    assert gdal_s3_env()["AWS_HTTPS"] == "YES"

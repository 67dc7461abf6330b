"""`dsmar run` with object storage, against a real S3 server on loopback (tests/s3_server.py): a run whose
assets are read from `s3://` hrefs and whose cube is written to `s3://` gives a cube equal, variable by
variable, to the same run on local files; a rerun writes no chunk; the secret key appears in no output and
in no object the runs wrote.

Real parts: the demo archive's local STAC API, `dsmar run` in its own process with a Dask worker, Prefect.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pystac
import pytest

from pipeline.cube import open_cube
from tests.conftest import REPO
from tests.s3_server import SECRET, s3_server

TILE, HALO = 128, 16
METHOD = "phase"  # a real, fast, deterministic method: cubes compare bit for bit
IGNORED_ATTRS = {"config", "catalog", "created", "runs"}  # the run's own: --out and the catalog URL differ


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    from datagen.demo_archive import generate_archive

    return generate_archive(tmp_path_factory.mktemp("archive"), size=256, dates=2, seed=3)


@pytest.fixture(scope="module")
def s3():
    with s3_server() as server:
        yield server


def _start(catalog_url: str, info, out: str, prefect_api: str) -> subprocess.Popen[str]:
    """`dsmar run` in its own process (its Dask worker inherits the AWS_* environment)."""
    argv = [sys.executable, "-m", "dsmar.cli", "run", "--profile", "local", "--catalog", catalog_url]
    argv += ["--bbox", *map(str, info.bbox), "--start", str(info.start), "--end", str(info.end), "--out", out]
    argv += ["--method", METHOD, "--tile-size", str(TILE), "--halo", str(HALO), "--workers", "1"]
    env = {**os.environ, "PYTHONPATH": str(REPO), "PREFECT_API_URL": prefect_api}
    return subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _output(run: subprocess.Popen[str]) -> str:
    """The run's whole output, once it has succeeded."""
    output, _ = run.communicate(timeout=300)
    assert run.returncode == 0, output
    return output


def _written(output: str) -> int:
    return int(re.search(r"tiles written: (\d+)", output).group(1))


def _assert_same_cube(a: str, b: str) -> None:
    ours, theirs = open_cube(a), open_cube(b)
    assert set(ours.variables) == set(theirs.variables)
    for name in ours.variables:
        if name != "flow_run_id":  # the run that wrote each date: differs between any two runs
            np.testing.assert_array_equal(ours[name].values, theirs[name].values, err_msg=name)
        assert ours[name].attrs == theirs[name].attrs, name
    drop = IGNORED_ATTRS.intersection
    assert {k: v for k, v in ours.attrs.items() if k not in drop(ours.attrs)} == {
        k: v for k, v in theirs.attrs.items() if k not in drop(theirs.attrs)
    }


def _s3_items(info, s3) -> tuple[list[pystac.Collection], list[pystac.Item]]:
    """The archive's collections and items, every asset uploaded to the bucket and its href rewritten to s3://."""
    catalog = pystac.Catalog.from_file(str(info.catalog))
    items = [item.clone() for item in catalog.get_items(recursive=True)]
    client = s3.client()
    for item in items:
        for asset in item.assets.values():
            local = Path(urlsplit(asset.get_absolute_href() or asset.href).path)
            key = f"archive/{local.relative_to(info.root)}"
            client.upload_file(str(local), s3.bucket, key)
            asset.href = s3.url(key)
    return list(catalog.get_all_collections()), items


@pytest.fixture(scope="module")
def runs(archive, s3, prefect_api, tmp_path_factory):
    """A run on local files, the same run with the assets and the cube in the bucket, and its rerun."""
    from catalogs.server import serve_items, serve_static_catalog

    local = str(tmp_path_factory.mktemp("local") / "cube.zarr")
    remote = s3.url("runs/cube.zarr")
    outputs = {}
    with serve_static_catalog(archive.catalog) as files, serve_items(*_s3_items(archive, s3)) as objects:
        on_files = _start(files.url, archive, local, prefect_api)  # the two first runs side by side
        outputs["s3"] = _output(_start(objects.url, archive, remote, prefect_api))
        outputs["local"] = _output(on_files)
        chunks = s3.objects("runs/cube.zarr/")
        outputs["rerun"] = _output(_start(objects.url, archive, remote, prefect_api))
    return local, remote, chunks, outputs


def test_a_run_from_and_into_s3_equals_the_same_run_on_local_files(runs):
    local, remote, _, outputs = runs
    assert _written(outputs["s3"]) == _written(outputs["local"]) > 0
    _assert_same_cube(local, remote)


def test_a_rerun_on_s3_writes_no_chunk(runs, s3):
    _, remote, before, outputs = runs
    assert _written(outputs["rerun"]) == 0
    after = s3.objects("runs/cube.zarr/")
    data = [k for k in before if not k.endswith("zarr.json") and not _provenance(k)]
    assert data and {k: after[k] for k in data} == {k: before[k] for k in data}
    assert set(after) == set(before)


def _provenance(key: str) -> bool:
    """The per-time provenance columns, which each run refreshes (docs/pipeline.md)."""
    return any(
        f"/{name}/" in key for name in ("optical_item", "sar_item", "sar_time", "dem_item", "settings", "flow_run_id")
    )


def test_the_secret_key_is_in_no_output_and_no_cube(runs, s3):
    _, _, _, outputs = runs
    for name, output in outputs.items():
        assert SECRET not in output, name
    client = s3.client()
    for key in s3.objects(""):
        if not key.startswith("archive/"):
            assert SECRET.encode() not in client.get_object(Bucket=s3.bucket, Key=key)["Body"].read(), key

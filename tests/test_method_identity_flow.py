"""`dsmar run` records the method that ran: DSMAR_WEIGHTS' own checksum, and `--method` options, which reach
`register_pair` on the Dask workers; a cube refuses an append with other weights in one line, before any work.

One real run (local STAC API, Prefect, a local Dask cluster) of dsmar on a one-tile demo archive.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import zarr

from dsmar.cli import build_parser, main
from kernel.contracts import MethodSpec
from models.api import method_spec, register_pair
from models.dsmar.weights import WEIGHTS_ENV, sha256_file
from pipeline.cube import method_attrs, open_cube
from tests.test_method_spec import SHIPPED, TUNED, resaved_weights

METHOD = "dsmar:augment=1:polish=0"  # polish=0: the network alone, visibly not the default


def _argv(url: str, info, out: str) -> list[str]:
    area = ["--bbox", *map(str, info.bbox), "--start", str(info.start), "--end", str(info.end)]
    tiles = ["--tile-size", "256", "--halo", "32", "--workers", "1"]  # one tile covers the 246 px cube
    return ["run", "--profile", "local", "--catalog", url, *area, "--out", out, "--method", METHOD, *tiles]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    """The run with DSMAR_WEIGHTS = the shipped network re-saved under another checksum; returns what the
    assertions need, with the catalog still served."""
    from catalogs.server import serve_static_catalog
    from datagen.demo_archive import generate_archive

    root = tmp_path_factory.mktemp("identity")
    info = generate_archive(root / "archive", size=256, dates=1, seed=3)
    other = resaved_weights(root)
    with serve_static_catalog(info.catalog) as server:
        argv = _argv(server.url, info, str(root / "cube.zarr"))
        with pytest.MonkeyPatch.context() as env:
            env.setenv(WEIGHTS_ENV, str(other))  # before the cluster starts: its workers inherit it
            assert main(argv) == 0
        yield argv, other, root


def _tile_inputs(argv: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """The optical and SAR images of the run's one tile, loaded as the flow loads them."""
    from catalogs.profiles import profile_for
    from dsmar.commands.run import config_from_args
    from flows.register_region import plan_cube, search_scenes
    from pipeline.load import load_stack

    config = config_from_args(build_parser().parse_args(argv))
    cube = plan_cube(search_scenes.fn(config).scene_sets, config)
    assert len(cube.plan.tiles) == 1
    scene, profile = cube.scene_sets[0], profile_for(config.search)
    keys = scene.asset_keys
    fixed = load_stack([profile.resign(scene.optical)], keys.optical, cube.grid, chunks=256).values
    moving = load_stack([profile.resign(i) for i in scene.sar], keys.sar, cube.grid, chunks=256).values
    return fixed, moving


def test_the_cube_records_the_weights_that_ran_and_the_options(run):
    argv, other, root = run
    attrs = open_cube(str(root / "cube.zarr")).attrs
    assert attrs["weights_sha256"] == sha256_file(other) != SHIPPED["sha256"]
    assert json.loads(attrs["inference"]) == {**TUNED, "augment": 1, "polish": 0}
    spec = MethodSpec.from_json(attrs["method_spec"])
    assert (spec.name, spec.kwargs, spec.weights_sha256) == ("dsmar", {"augment": 1, "polish": 0}, sha256_file(other))
    assert json.loads(attrs["config"])["method"] == METHOD


def test_the_options_reach_register_pair_on_the_workers(run, monkeypatch):
    argv, other, root = run
    monkeypatch.setenv(WEIGHTS_ENV, str(other))
    fixed, moving = _tile_inputs(argv)
    recorded = open_cube(str(root / "cube.zarr")).displacement_sar.values[0]
    with_option = register_pair(fixed, moving, "optical", "sar", method=method_spec(METHOD)).displacement
    polished = register_pair(fixed, moving, "optical", "sar", method="dsmar", augment=1).displacement
    assert np.abs(recorded - with_option).max() < 1e-3
    assert np.abs(recorded - polished).max() > 1e-2


def test_appending_with_other_weights_is_one_line_before_any_work(run, capsys, monkeypatch):
    argv, other, root = run
    shipped = root / "shipped.zarr"
    shutil.copytree(root / "cube.zarr", shipped)
    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    zarr.open_group(str(shipped), mode="r+").attrs.update(method_attrs(method_spec(METHOD)))
    before = sorted(p.relative_to(shipped) for p in shipped.rglob("*"))
    monkeypatch.setenv(WEIGHTS_ENV, str(other))
    out = argv.index("--out") + 1
    assert main([*argv[:out], str(shipped), *argv[out + 1 :]]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("dsmar run: error: "), lines
    assert f"with weights {SHIPPED['sha256']} and settings" in lines[0]
    assert f"this run has weights {sha256_file(other)}" in lines[0] and "write to a new --out" in lines[0]
    assert sorted(p.relative_to(shipped) for p in shipped.rglob("*")) == before

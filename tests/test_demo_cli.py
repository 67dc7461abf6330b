"""`dsmar demo` in a folder that already holds things: it replaces only what a demo wrote there, says
so in one line, and refuses (one line, nothing touched) when anything else is in the way; the README's cube
snippet runs on the cube it leaves."""

from __future__ import annotations

import contextlib
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import zarr

from dsmar.cli import main
from dsmar.commands.demo import STAMP, prepare_workdir, run_demo
from kernel.contracts import MethodSpec
from kernel.errors import InputError
from pipeline.cube import STATE_ATTR, cube_attrs, open_cube

PARAMS = {"size": 256, "dates": 1, "seed": 0, "tile_size": 256, "halo": 64, "method": "cfog"}


def _demo_outputs(workdir, stamp: dict) -> None:
    """What an earlier demo leaves: its stamp, a cube with dsmar's attrs, report.md and quicklooks."""
    (workdir / STAMP).write_text(json.dumps(stamp))
    attrs = {**cube_attrs("{}", {}, MethodSpec(stamp.get("method", "cfog"))), STATE_ATTR: "complete"}
    zarr.open_group(str(workdir / "cube.zarr"), mode="w").attrs.update(attrs)
    (workdir / "report").mkdir()
    for name in ("report.md", "t00_sar_checkerboard.png", "t00_dem_field.png", "t01_sar_error.png"):
        (workdir / "report" / name).write_text("x")


def _error(capsys, argv) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_a_users_report_folder_stops_the_demo_untouched(tmp_path, capsys):
    (tmp_path / "report").mkdir()
    (tmp_path / "report" / "notes.txt").write_text("notes")
    err = _error(capsys, ["demo", "--workdir", str(tmp_path), "--size", "256", "--tile-size", "256"])
    assert f"{tmp_path / 'report'} is in the way" in err and "--workdir" in err
    assert (tmp_path / "report" / "notes.txt").read_text() == "notes"
    assert not (tmp_path / "archive").exists()  # refused before any work


@pytest.mark.parametrize("dsmar_cube", [False, True])
def test_a_cube_without_the_demos_stamp_is_not_deleted(tmp_path, dsmar_cube):
    group = zarr.open_group(str(tmp_path / "cube.zarr"), mode="w")  # a `dsmar run` cube is the user's too
    if dsmar_cube:
        group.attrs.update(cube_attrs("{}", {}, MethodSpec("cfog")))
    with pytest.raises(InputError, match=f"no {STAMP} says an earlier demo wrote it"):
        prepare_workdir(tmp_path, PARAMS)
    assert (tmp_path / "cube.zarr" / "zarr.json").is_file() and not (tmp_path / STAMP).exists()


def test_other_files_in_the_demos_folders_stop_a_reset(tmp_path):
    _demo_outputs(tmp_path, {**PARAMS, "size": 512})
    (tmp_path / "report" / "notes.txt").write_text("notes")
    with pytest.raises(InputError, match=r"holds files the demo did not write \(notes.txt\)"):
        prepare_workdir(tmp_path, PARAMS)
    assert (tmp_path / "report" / "report.md").exists() and (tmp_path / "cube.zarr").exists()
    assert json.loads((tmp_path / STAMP).read_text())["size"] == 512


def test_a_cube_that_is_not_dsmars_stops_a_reset(tmp_path):
    _demo_outputs(tmp_path, {**PARAMS, "size": 512})
    zarr.open_group(str(tmp_path / "cube.zarr"), mode="w")  # replaced by something without dsmar's attrs
    with pytest.raises(InputError, match="cube.zarr is in the way: it is not a dsmar cube"):
        prepare_workdir(tmp_path, PARAMS)
    assert (tmp_path / "cube.zarr").exists()


def test_an_archive_folder_the_demo_did_not_generate_is_refused(tmp_path):
    (tmp_path / "archive").mkdir()
    (tmp_path / "archive" / "catalog.json").write_text("{}")  # generate_archive would replace it
    with pytest.raises(InputError, match="not an archive the demo generated"):
        prepare_workdir(tmp_path, PARAMS)


def test_changed_options_reset_the_demos_own_outputs_and_say_so(tmp_path):
    _demo_outputs(tmp_path, PARAMS)
    assert prepare_workdir(tmp_path, PARAMS) is None  # same options: everything kept for the re-run
    assert (tmp_path / "cube.zarr").exists() and (tmp_path / "report" / "report.md").exists()
    notice = prepare_workdir(tmp_path, {**PARAMS, "method": "mind"})
    assert notice == (
        f"demo: options changed since the last demo in {tmp_path} (--method cfog -> mind); "
        "starting cube.zarr and report afresh"
    )
    assert not (tmp_path / "cube.zarr").exists() and not (tmp_path / "report").exists()
    assert json.loads((tmp_path / STAMP).read_text())["method"] == "mind"


def test_a_stamp_from_before_the_method_counts_as_the_demos(tmp_path):
    old = {key: value for key, value in PARAMS.items() if key != "method"}
    _demo_outputs(tmp_path, old)
    assert "--method unset -> cfog" in prepare_workdir(tmp_path, PARAMS)
    assert not (tmp_path / "cube.zarr").exists()


def test_new_weights_or_settings_of_the_method_reset_the_demos_cube(tmp_path):
    from models.api import method_spec

    shipped = {**PARAMS, "method": "dsmar", "method_build": method_spec("dsmar").fingerprint[:12]}
    _demo_outputs(tmp_path, {**shipped, "method_build": "0123456789ab"})  # a demo of an older release
    notice = prepare_workdir(tmp_path, shipped)
    assert f"the method's weights/settings 0123456789ab -> {shipped['method_build']}" in notice
    assert not (tmp_path / "cube.zarr").exists()


def test_an_empty_workdir_gets_a_stamp_and_no_notice(tmp_path):
    (tmp_path / "report").mkdir()  # an empty folder is in nobody's way
    assert prepare_workdir(tmp_path, PARAMS) is None
    assert json.loads((tmp_path / STAMP).read_text()) == PARAMS


@pytest.fixture(scope="module")
def method_change(tmp_path_factory):
    """The real flow twice in one DIR: cfog, then identity; returns DIR, both summaries and the second's stderr."""
    workdir = tmp_path_factory.mktemp("demo")
    options = dict(size=256, dates=1, tile_size=256, halo=32, workers=1)
    first = run_demo(workdir, method="cfog", **options)
    with contextlib.redirect_stderr(io.StringIO()) as err:
        second = run_demo(workdir, method="identity", **options)
    return workdir, first, second, err.getvalue()


def test_changing_the_method_recomputes_the_demo(method_change):
    """A cube of one method is replaced by the other's, with the notice, not refused."""
    workdir, first, second, err = method_change
    assert "(--method cfog -> identity); starting cube.zarr and report afresh" in err
    assert second.tiles_written == first.tiles_written > 0 and second.tiles_skipped == 0
    cube = open_cube(str(workdir / "cube.zarr"))
    assert cube.attrs["method"] == "identity"
    assert cube.sizes["y"] == cube.sizes["x"] == 246  # the inner part of 256 px scenes, as --help says


def test_readme_cube_snippet_runs_as_written(method_change):
    readme = (Path(__file__).parents[1] / "README.md").read_text()
    snippet = re.search(r"## Output: the Zarr cube.*?```python\n(.*?)```", readme, re.S).group(1)
    assert '"demo-output/cube.zarr"' in snippet
    code = snippet.replace("demo-output/cube.zarr", str(method_change[0] / "cube.zarr")) + "print(ds.rio.crs.to_epsg())"
    # A fresh interpreter, as a reader's: here dsmar's own imports have registered `ds.rio` already.
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.split() == ["32633"], done.stderr[-500:]


def test_size_help_says_the_cube_is_smaller(capsys):
    with pytest.raises(SystemExit):
        main(["demo", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "the cube covers their inner part, 4% smaller per side (512 -> 492 px)" in text

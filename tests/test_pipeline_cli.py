"""Bad input to `dsmar run` / `dsmar demo` is one line on stderr and exit code 2, before any work starts."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

from dsmar.cli import main

RUN = [
    "run",
    "--profile",
    "local",
    "--catalog",
    "http://127.0.0.1:9",
    "--bbox",
    "14.4",
    "46.0",
    "14.6",
    "46.2",
    "--start",
    "2024-06-01",
    "--end",
    "2024-06-30",
]


def _error(capsys, argv) -> str:
    code = main(argv)
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1, lines
    assert lines[0].startswith(f"dsmar {argv[0]}: error: ")
    return lines[0]


@pytest.fixture
def out(tmp_path):
    return str(tmp_path / "cube.zarr")


def test_unwritable_workdir(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    assert "workdir" in _error(capsys, ["demo", "--workdir", str(blocker / "sub")])
    assert "not writable" in _error(capsys, ["demo", "--workdir", "/proc/dsmar-demo"])


def test_unknown_method(capsys, tmp_path, out):
    assert "unknown method 'nope'" in _error(capsys, ["demo", "--workdir", str(tmp_path), "--method", "nope"])
    assert "unknown method" in _error(capsys, [*RUN, "--out", out, "--method", "nope"])


@pytest.mark.parametrize(
    "change,expected",
    [
        ({"--bbox": ["14.6", "46.0", "14.4", "46.2"]}, "bbox"),
        ({"--bbox": ["14.4", "95", "14.6", "96"]}, "bbox"),
        ({"--start": ["2024-13-01"]}, "--start must be a date"),
        ({"--start": ["2024-07-01"]}, "after end"),
        ({"--tile-size": ["10"]}, "size"),
        ({"--halo": ["900"]}, "halo"),
        ({"--workers": ["0"]}, "workers"),
        ({"--catalog": ["not a url"]}, "URL"),
    ],
)
def test_bad_run_options(capsys, out, change, expected):
    argv = [*RUN, "--out", out]
    for flag, values in change.items():
        if flag in argv:
            i = argv.index(flag)
            argv[i + 1 : i + 1 + len(values)] = values
        else:
            argv += [flag, *values]
    assert expected in _error(capsys, argv)


def test_unknown_profile_is_refused_with_the_choices(capsys, out):
    with pytest.raises(SystemExit) as exit_:
        main([*RUN, "--out", out, "--profile", "nope"])
    assert exit_.value.code == 2
    assert "invalid choice: 'nope'" in capsys.readouterr().err


def test_local_profile_needs_a_catalog(capsys, out):
    argv = [a for a in RUN if a not in ("--catalog", "http://127.0.0.1:9")]
    assert "--catalog" in _error(capsys, [*argv, "--out", out])


def test_bad_out(capsys, tmp_path):
    assert ".zarr" in _error(capsys, [*RUN, "--out", str(tmp_path / "cube.nc")])
    assert "not writable" in _error(capsys, [*RUN, "--out", "/proc/dsmar/cube.zarr"])
    (tmp_path / "file.zarr").write_text("")
    assert "not a Zarr directory" in _error(capsys, [*RUN, "--out", str(tmp_path / "file.zarr")])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run_before_prefect(argv: list[str], code: int) -> str:
    """`dsmar run` as a process whose Prefect API is dead: only a check made before Prefect is used
    can give the one-line error (otherwise Prefect's connection errors come first). `code`: 1 for what
    failed (a scheduler, a catalog), 2 for bad input."""
    env = {**os.environ, "PREFECT_API_URL": f"http://127.0.0.1:{_free_port()}/api"}
    done = subprocess.run(
        [sys.executable, "-m", "dsmar.cli", *argv], env=env, capture_output=True, text=True, timeout=120
    )
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == code and len(lines) == 1, done.stderr[-3000:]
    return lines[0]


def test_unreachable_scheduler_fails_before_prefect_and_leaves_no_cube(out):
    for address, reason in ((f"tcp://127.0.0.1:{_free_port()}", "refused"), ("foo:::bar", "foo:::bar")):
        line = _run_before_prefect([*RUN, "--out", out, "--dask-address", address], 1)
        assert line.startswith(f"dsmar run: error: cannot reach the Dask scheduler at {address}") and reason in line
    assert not os.path.exists(out)


def test_unreachable_catalog_fails_before_prefect(out):
    line = _run_before_prefect([*RUN, "--out", out], 1)
    assert line.startswith("dsmar run: error: could not reach STAC API at http://127.0.0.1:9")


def test_existing_cube_of_another_method_or_tile_size_fails_before_prefect(out):
    import zarr

    group = zarr.open_group(out, mode="w")
    group.attrs.update({"method": "cfog", "dsmar_cube": "complete"})  # what check_cube reads, and a whole cube's mark
    group.create_array("optical", shape=(1, 4, 256, 256), chunks=(1, 4, 128, 128), dtype="float32")
    line = _run_before_prefect([*RUN, "--out", out, "--method", "identity", "--tile-size", "128"], 2)
    assert "written with method 'cfog'; rerun with --method cfog" in line
    line = _run_before_prefect([*RUN, "--out", out, "--method", "cfog", "--tile-size", "256"], 2)
    assert "written with 128 px tiles; rerun with --tile-size 128" in line


def test_run_help_names_profiles_and_default(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = capsys.readouterr().out
    assert "{earth-search,planetary-computer,local}" in text and "(default earth-search)" in text
    assert "--max-cloud PCT" in text


def test_options_run_shares_with_search_are_the_same_options():
    """A search can be repeated by a run with the same flags, and both --help pages say the same."""
    from dsmar.cli import build_parser

    commands = next(a for a in build_parser()._actions if a.dest == "command").choices

    def options(name):
        return {
            a.option_strings[0]: (a.help, a.metavar, a.default, a.choices, a.type, a.nargs, a.required)
            for a in commands[name]._actions
            if a.option_strings and a.dest != "help"
        }

    run, search = options("run"), options("search")
    shared = set(run) & set(search)
    assert {
        "--profile",
        "--catalog",
        "--bbox",
        "--start",
        "--end",
        "--max-cloud",
        "--min-overlap",
        "--orbit-state",
    } <= shared
    assert {flag: run[flag] for flag in shared} == {flag: search[flag] for flag in shared}


def test_run_carries_the_orbit_state_into_its_search(tmp_path):
    from dsmar.cli import build_parser
    from dsmar.commands.run import config_from_args

    args = build_parser().parse_args([*RUN, "--orbit-state", "descending", "--out", str(tmp_path / "c.zarr")])
    assert config_from_args(args).search.orbit_state == "descending"

"""Bad input to `dsmar run` / `dsmar demo` is one line on stderr and exit code 2, before any work starts."""

from __future__ import annotations

import pytest

from dsmar.cli import main

RUN = ["run", "--profile", "local", "--catalog", "http://127.0.0.1:9", "--bbox", "14.4", "46.0", "14.6", "46.2",
       "--start", "2024-06-01", "--end", "2024-06-30"]


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


def test_run_help_names_profiles_and_default(capsys):
    with pytest.raises(SystemExit):
        main(["run", "--help"])
    text = capsys.readouterr().out
    assert "{earth-search,planetary-computer,local}" in text and "(default earth-search)" in text
    assert "--max-cloud PCT" in text

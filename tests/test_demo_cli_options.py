"""Bad tile and cluster options of `dsmar demo` and `dsmar run` end in one line naming the option the
user typed (`--tile-size`), not the config field behind it (`size`, which reads like the demo's --size)."""

from __future__ import annotations

import pytest

from dsmar.cli import main

RUN = ["run", "--bbox", "14.4", "46.0", "14.6", "46.2", "--start", "2024-06-01", "--end", "2024-06-30"]


@pytest.mark.parametrize(
    ("option", "expected"),
    [
        (["--tile-size", "32"], "--tile-size 32: Input should be greater than or equal to 64"),
        (["--halo", "-1"], "--halo -1: Input should be greater than or equal to 0"),
        (["--halo", "900"], "--halo 900 must not exceed --tile-size 512"),
        (["--workers", "0"], "--workers 0: Input should be greater than or equal to 1"),
    ],
)
def test_option_errors_name_the_option(tmp_path, capsys, option, expected):
    for argv in (["demo", "--workdir", str(tmp_path)], [*RUN, "--out", str(tmp_path / "cube.zarr")]):
        assert main([*argv, *option]) == 2
        err = capsys.readouterr().err.strip()
        assert err.endswith(f"error: {expected}") and len(err.splitlines()) == 1, err

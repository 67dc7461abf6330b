"""Proving a folder writable: safe when several runs start at once in one folder."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from kernel.errors import InputError
from kernel.paths import check_writable_dir


def test_probes_started_at_once_in_one_folder_never_fail_each_other(tmp_path: Path) -> None:
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: check_writable_dir(tmp_path, "output directory"), range(400)))
    assert results == [tmp_path] * 400
    assert list(tmp_path.iterdir()) == []  # no probe left behind


def test_a_file_in_the_way_is_one_line_naming_it(tmp_path: Path) -> None:
    (tmp_path / "taken").write_text("")
    with pytest.raises(InputError, match="is a file, not a folder"):
        check_writable_dir(tmp_path / "taken" / "out", "output directory")

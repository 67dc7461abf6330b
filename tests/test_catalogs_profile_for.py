"""One resolution of a search config into a catalog profile, shared by `dsmar search`, `dsmar run` and the flow."""

from __future__ import annotations

import pytest

from catalogs.profiles import profile_for
from dsmar.cli import main
from kernel.config import SearchConfig
from kernel.errors import InputError


def test_profile_for_applies_the_config_overrides():
    search = SearchConfig(profile="planetary-computer", catalog_url="http://127.0.0.1:8080 ", sar_collection="my-sar")
    profile = profile_for(search)
    assert (profile.url, profile.optical_collection, profile.sar_collection) == (
        "http://127.0.0.1:8080",
        "sentinel-2-l2a",
        "my-sar",
    )
    assert profile.asset_keys.optical["red"] == "B04"


def test_profile_for_refuses_local_without_url():
    with pytest.raises(InputError, match="needs a STAC API URL"):
        profile_for(SearchConfig(profile="local"))


@pytest.mark.parametrize("command", ["search", "run"])
def test_search_and_run_name_the_flag_of_a_bad_pairing_value(command, tmp_path, capsys):
    args = [
        command,
        "--bbox",
        "15",
        "45",
        "15.4",
        "45.3",
        "--start",
        "2024-06-01",
        "--end",
        "2024-06-30",
        "--max-cloud",
        "150",
    ]
    if command == "run":
        args += ["--out", str(tmp_path / "c.zarr")]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--max-cloud 150.0: Input should be less than or equal to 100" in err

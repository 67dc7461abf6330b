"""Region files: the TOML keys of docs/operations.md, read into the run config's own models, and every mistake
one line naming the file and the key."""

from __future__ import annotations

from datetime import date

import pytest

from dsmar.commands.region_file import load_region
from kernel.config import ClusterConfig, RunConfig, SearchConfig, TileConfig, default
from kernel.errors import InputError
from kernel.region import parse_region

FULL = """
name = "ljubljana"
bbox = [14.40, 46.00, 14.60, 46.15]
out = "cubes/ljubljana.zarr"
[catalog]
profile = "local"
url = "http://127.0.0.1:9999"
optical_collection = "opt"
sar_collection = "s1"
dem_collection = "dem"
[pairing]
max_cloud = 20
sar_window_days = 2.5
min_overlap = 0.7
orbit_state = "descending"
[processing]
method = "identity"
tile_size = 256
halo = 32
workers = 3
dask_address = "tcp://127.0.0.1:8786"
[schedule]
cron = "0 6 * * *"
timezone = "Europe/Ljubljana"
"""

MINIMAL = """
name = "ljubljana"
bbox = [14.40, 46.00, 14.60, 46.15]
out = "s3://bucket/ljubljana.zarr"
[catalog]
profile = "earth-search"
"""


def test_every_key_reaches_the_run_config():
    region = parse_region(FULL, "r.toml")
    config = region.run_config(date(2024, 6, 1), date(2024, 6, 30))
    assert config == RunConfig(
        bbox=(14.40, 46.00, 14.60, 46.15),
        start=date(2024, 6, 1),
        end=date(2024, 6, 30),
        out="cubes/ljubljana.zarr",
        search=SearchConfig(
            profile="local",
            catalog_url="http://127.0.0.1:9999",
            optical_collection="opt",
            sar_collection="s1",
            dem_collection="dem",
            max_cloud=20,
            sar_window_days=2.5,
            min_overlap=0.7,
            orbit_state="descending",
        ),
        method="identity",
        tiles=TileConfig(size=256, halo=32),
        cluster=ClusterConfig(address="tcp://127.0.0.1:8786", workers=3),
    )
    assert (region.name, region.cron, region.timezone) == ("ljubljana", "0 6 * * *", "Europe/Ljubljana")


def test_optional_tables_take_the_run_configs_defaults():
    region = parse_region(MINIMAL, "r.toml")
    assert region.search == SearchConfig(profile="earth-search")
    assert region.tiles == TileConfig() and region.cluster == ClusterConfig()
    assert region.method == default(RunConfig, "method")
    assert (region.cron, region.timezone) == (None, "UTC")


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (lambda t: t + "colour = 1\n", "r.toml: unknown key catalog.colour"),
        (lambda t: t + '[schedules]\ncron = "0 6 * * *"\n', "r.toml: unknown key schedules"),
        (lambda t: t.replace("[catalog]", "[katalog]"), "r.toml: missing key catalog"),
        (lambda t: t.replace('name = "ljubljana"\n', ""), "r.toml: missing key name"),
        (lambda t: t + '[processing]\ntile_size = "256"\n', "r.toml: processing.tile_size = '256'"),
        (lambda t: t + "[processing]\ntile_size = 32\n", "r.toml: processing.tile_size = 32"),
        (lambda t: t + "[pairing]\nmax_cloud = 150\n", "r.toml: pairing.max_cloud = 150"),
        (lambda t: t + '[pairing]\norbit_state = "up"\n', "r.toml: pairing.orbit_state = 'up'"),
        (lambda t: t + "[processing]\ntile_size = 128\nhalo = 200\n", "r.toml: [processing] --halo 200"),
        (lambda t: t.replace("46.15", "40"), "r.toml: bbox south 46 must be below north 40"),
        (lambda t: t + '[schedule]\ntimezone = "Mars/Olympus"\n', "r.toml: schedule.timezone 'Mars/Olympus'"),
        (lambda t: t.replace('"ljubljana"', '"two words"', 1), "r.toml: name 'two words'"),
        (lambda t: t + "[[catalog]]\n", "r.toml: not valid TOML"),
    ],
)
def test_a_mistake_is_one_line_naming_file_and_key(edit, expected):
    with pytest.raises(InputError) as caught:
        parse_region(edit(MINIMAL), "r.toml")
    message = str(caught.value)
    assert message.startswith(expected) and "\n" not in message, message


def test_a_relative_out_is_the_region_files_neighbour(tmp_path, monkeypatch):
    folder = tmp_path / "regions"
    folder.mkdir()
    (folder / "lj.toml").write_text(FULL)
    monkeypatch.chdir(tmp_path)
    region = load_region("regions/lj.toml")
    assert region.out == str(folder / "cubes" / "ljubljana.zarr")


def test_an_unreadable_region_file_is_one_line(tmp_path):
    with pytest.raises(InputError, match=r"^cannot read region file .*nope.toml: No such file"):
        load_region(str(tmp_path / "nope.toml"))


def test_the_run_checks_of_out_method_and_profile_name_the_file(tmp_path):
    path = tmp_path / "lj.toml"
    path.write_text(FULL.replace('method = "identity"', 'method = "nosuch"'))
    with pytest.raises(InputError, match=rf"^{path}: unknown method"):
        load_region(str(path))

"""The run and search config: one normaliser per parameter, one default per field, one modality registry."""

from __future__ import annotations

import argparse
import json
from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from catalogs.profiles import PROFILES, get_profile
from dsmar.commands.run import add_run_arguments, config_from_args
from dsmar.commands.search import area_period, search_config
from kernel.config import (
    AreaPeriod,
    RunConfig,
    SearchConfig,
    TileConfig,
    build,
    check_period,
    from_json,
    normalise_bbox,
    normalise_date,
    normalise_modalities,
)
from kernel.contracts import MODALITIES, MODALITY, REFERENCE, REGISTERED
from kernel.errors import InputError

lon = st.floats(-180, 180, allow_nan=False)
lat = st.floats(-90, 90, allow_nan=False)
days = st.dates(date(1970, 1, 1), date(2100, 12, 31))


@st.composite
def bboxes(draw) -> tuple[float, float, float, float]:
    west, east = sorted(draw(st.lists(lon, min_size=2, max_size=2, unique=True)))
    south, north = sorted(draw(st.lists(lat, min_size=2, max_size=2, unique=True)))
    return west, south, east, north


@given(bboxes())
def test_a_valid_bbox_comes_back_unchanged_as_floats(bbox):
    assert normalise_bbox(list(bbox)) == bbox and all(type(v) is float for v in normalise_bbox(bbox))


@given(bboxes())
def test_a_bbox_with_a_swapped_axis_is_refused_naming_it(bbox):
    west, south, east, north = bbox
    with pytest.raises(InputError, match=f"west {east:g} must be below east {west:g}"):
        normalise_bbox((east, south, west, north))
    with pytest.raises(InputError, match=f"south {north:g} must be below north {south:g}"):
        normalise_bbox((west, north, east, south))


@pytest.mark.parametrize(
    ("bbox", "message"),
    [
        ((1, 2, 3), "four finite numbers"),
        ((1, 2, 3, float("nan")), "four finite numbers"),
        ((1, "x", 3, 4), "four numbers"),
        ((170, 0, 190, 1), "antimeridian"),
    ],
)
def test_a_malformed_bbox_is_one_line(bbox, message):
    with pytest.raises(InputError, match=message):
        normalise_bbox(bbox)


@given(days)
def test_dates_round_trip_through_their_iso_text(day):
    assert normalise_date(day.isoformat(), "--start") == day and normalise_date(day, "--start") is day


@pytest.mark.parametrize("text", ["2024-13-01", "yesterday", "2024/06/01", ""])
def test_a_bad_date_names_the_option(text):
    with pytest.raises(InputError, match=f"^--end must be a date YYYY-MM-DD, got {text!r}$"):
        normalise_date(text, "--end")


@given(days, days)
def test_a_period_is_refused_exactly_when_it_runs_backwards(start, end):
    if start > end:
        with pytest.raises(InputError, match=f"start {start} is after end {end}"):
            check_period(start, end)
    else:
        check_period(start, end)


@given(bboxes(), days, days)
def test_run_config_survives_its_json_unchanged(bbox, a, b):
    config = RunConfig(bbox=bbox, start=min(a, b), end=max(a, b), out="/tmp/c.zarr")
    assert from_json(RunConfig, config.to_json()) == config
    assert json.loads(config.to_json())["bbox"] == list(bbox)


def test_area_period_errors_name_the_option_once():
    with pytest.raises(InputError, match=r"^--bbox: bbox west 3 must be below east 1"):
        build(AreaPeriod, bbox=(3, 0, 1, 1), start="2024-06-01", end="2024-06-02")
    with pytest.raises(InputError, match=r"^--start must be a date YYYY-MM-DD, got '2024-6-1'$"):
        build(AreaPeriod, bbox=(0, 0, 1, 1), start="2024-6-1", end="2024-06-02")
    with pytest.raises(InputError, match=r"^start 2024-06-03 is after end 2024-06-02$"):
        build(AreaPeriod, bbox=(0, 0, 1, 1), start="2024-06-03", end="2024-06-02")


def test_a_bad_region_file_is_one_line():
    good = RunConfig(bbox=(0, 0, 1, 1), start=date(2024, 6, 1), end=date(2024, 6, 2), out="c.zarr")
    values = json.loads(good.to_json())
    with pytest.raises(InputError, match=r"^tiles\.size 32: Input should be greater than or equal to 64$"):
        from_json(RunConfig, json.dumps({**values, "tiles": {"size": 32, "halo": 0}}))
    with pytest.raises(InputError, match=r"^--bbox: bbox west 1 must be below east 0"):
        from_json(RunConfig, json.dumps({**values, "bbox": [1, 0, 0, 1]}))


def test_modalities_are_a_subset_of_what_the_pipeline_registers():
    assert normalise_modalities(["dem"]) == ("dem",)
    assert RunConfig(bbox=(0, 0, 1, 1), start=date(2024, 6, 1), end=date(2024, 6, 1), out="c").modalities == REGISTERED
    for bad in ([], [REFERENCE], ["infrared"], ["radar"]):
        with pytest.raises(InputError, match=f"non-empty subset of {', '.join(REGISTERED)}"):
            normalise_modalities(bad)


def test_the_registry_is_the_one_list_of_modalities():
    import models

    assert models.MODALITIES is MODALITIES and MODALITIES == tuple(MODALITY)
    assert [m for m in MODALITIES if MODALITY[m].reference] == [REFERENCE] == ["optical"]
    assert REGISTERED == ("sar", "dem")
    for name in (REFERENCE, *REGISTERED):  # what the cube writes: CF units and names
        assert MODALITY[name].units and MODALITY[name].long_name and MODALITY[name].band_dim == f"band_{name}"
    assert (MODALITY["sar"].displacement_var, MODALITY["sar"].confidence_var) == ("displacement_sar", "confidence_sar")


def _run_args(*extra: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_run_arguments(parser)
    area = ["--bbox", "14.4", "46.0", "14.6", "46.2", "--start", "2024-06-01", "--end", "2024-06-30"]
    return parser.parse_args([*area, "--out", "c.zarr", *extra])


def test_the_command_line_adds_no_defaults_of_its_own(tmp_path, monkeypatch):
    """Options left out take the config fields' defaults, the only place they are written."""
    monkeypatch.chdir(tmp_path)
    args = _run_args()
    assert search_config(args) == SearchConfig()
    config = config_from_args(args)
    assert config.tiles == TileConfig() and config.search == SearchConfig()
    assert area_period(args) == AreaPeriod(bbox=config.bbox, start=config.start, end=config.end)
    given = config_from_args(_run_args("--max-cloud", "12.5", "--tile-size", "256", "--orbit-state", "ascending"))
    assert (given.search.max_cloud, given.tiles.size, given.search.orbit_state) == (12.5, 256, "ascending")


@pytest.mark.parametrize("name", sorted(PROFILES))
def test_every_profile_is_its_table_entry(name):
    """get_profile reads the table: a profile is its entry with the endpoint given, and a signer when it signs."""
    template = PROFILES[name]
    profile = get_profile(name, template.url or "http://127.0.0.1:8080")
    assert profile == template.__class__(**{**template.__dict__, "url": profile.url})
    assert (profile.signer is not None) == (template.signing is not None)
    keys = profile.asset_keys
    for modality in (REFERENCE, *REGISTERED):
        assert profile.collection(modality) and keys.of(modality)

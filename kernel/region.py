"""A region file: the TOML an operator writes once per region, for `dsmar deploy` and `dsmar backfill`.

```toml
name = "ljubljana"
bbox = [14.40, 46.00, 14.60, 46.15]      # W S E N, lon/lat
out = "cubes/ljubljana.zarr"             # or an object-store URL
[catalog]                                # profile, url, optical_collection, sar_collection, dem_collection
profile = "earth-search"
[pairing]                                # optional: max_cloud, sar_window_days, min_overlap, orbit_state
[processing]                             # optional: method, tile_size, halo, workers, dask_address
[schedule]                               # optional: cron, timezone
cron = "0 6 * * *"
timezone = "Europe/Ljubljana"
```

The tables mirror the file's keys only; values go through the run config's own models (`SearchConfig`,
`TileConfig`, `ClusterConfig`, `normalise_bbox`), so a region file and `dsmar run` accept, default and refuse
the same values. Any problem is one `InputError` line naming the file and the key.
"""

from __future__ import annotations

import re
import tomllib
import zoneinfo
from dataclasses import dataclass
from datetime import date
from typing import Any

from pydantic import BaseModel, ConfigDict, ValidationError

from kernel.config import BBox, ClusterConfig, RunConfig, SearchConfig, TileConfig, default, normalise_bbox
from kernel.errors import InputError

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")  # also a Prefect deployment name and a file-name part
DEFAULT_TIMEZONE = "UTC"


class _Table(BaseModel):
    """One TOML table: exactly its keys, each of its TOML type (strict: "5" is not a number)."""

    model_config = ConfigDict(frozen=True, extra="forbid", strict=True)


class _Catalog(_Table):
    profile: str | None = None
    url: str | None = None
    optical_collection: str | None = None
    sar_collection: str | None = None
    dem_collection: str | None = None


class _Pairing(_Table):
    max_cloud: float | None = None
    sar_window_days: float | None = None
    min_overlap: float | None = None
    orbit_state: str | None = None


class _Processing(_Table):
    method: str | None = None
    tile_size: int | None = None
    halo: int | None = None
    workers: int | None = None
    dask_address: str | None = None


class _Schedule(_Table):
    cron: str | None = None
    timezone: str | None = None


class _RegionFile(_Table):
    name: str
    bbox: list[float]
    out: str
    catalog: _Catalog
    pairing: _Pairing = _Pairing()
    processing: _Processing = _Processing()
    schedule: _Schedule = _Schedule()


# The file's key behind each field of the run config's models, so their errors name what the operator wrote.
_KEYS = {
    SearchConfig: {
        "profile": "catalog.profile",
        "catalog_url": "catalog.url",
        "optical_collection": "catalog.optical_collection",
        "sar_collection": "catalog.sar_collection",
        "dem_collection": "catalog.dem_collection",
        **{key: f"pairing.{key}" for key in ("max_cloud", "sar_window_days", "min_overlap", "orbit_state")},
    },
    TileConfig: {"size": "processing.tile_size", "halo": "processing.halo"},
    ClusterConfig: {"address": "processing.dask_address", "workers": "processing.workers"},
}


@dataclass(frozen=True)
class Region:
    """A validated region file: where, which catalog, how to process, and when to run."""

    name: str
    bbox: BBox
    out: str
    search: SearchConfig
    method: str
    tiles: TileConfig
    cluster: ClusterConfig
    cron: str | None = None  # None: the deployment's default schedule
    timezone: str = DEFAULT_TIMEZONE

    def run_config(self, start: date, end: date) -> RunConfig:
        """The run config of this region over start..end (inclusive)."""
        return RunConfig(
            bbox=self.bbox,
            start=start,
            end=end,
            out=self.out,
            search=self.search,
            method=self.method,
            tiles=self.tiles,
            cluster=self.cluster,
        )


def parse_region(text: str, source: str) -> Region:
    """The region file's TOML `text` (`source` names it in errors) validated into a `Region`."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as err:
        raise InputError(f"{source}: not valid TOML: {err}") from None
    try:
        table = _RegionFile.model_validate(data)
    except ValidationError as err:
        raise InputError(f"{source}: {_file_error(err)}") from None
    if not NAME.fullmatch(table.name):
        raise InputError(f"{source}: name {table.name!r} must be letters, digits, '.', '_' or '-' (no spaces)")
    try:
        bbox = normalise_bbox(table.bbox)
    except InputError as err:
        raise InputError(f"{source}: {err}") from None
    catalog, pairing, processing, schedule = table.catalog, table.pairing, table.processing, table.schedule
    search = _model(
        SearchConfig,
        source,
        profile=catalog.profile,
        catalog_url=catalog.url,
        optical_collection=catalog.optical_collection,
        sar_collection=catalog.sar_collection,
        dem_collection=catalog.dem_collection,
        **pairing.model_dump(),
    )
    tiles = _model(TileConfig, source, size=processing.tile_size, halo=processing.halo)
    cluster = _model(ClusterConfig, source, address=processing.dask_address, workers=processing.workers)
    timezone = schedule.timezone or DEFAULT_TIMEZONE
    try:
        zoneinfo.ZoneInfo(timezone)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise InputError(
            f"{source}: schedule.timezone {timezone!r} is not an IANA time zone (e.g. Europe/Ljubljana)"
        ) from None
    return Region(
        name=table.name,
        bbox=bbox,
        out=table.out,
        search=search,
        method=processing.method or default(RunConfig, "method"),
        tiles=tiles,
        cluster=cluster,
        cron=schedule.cron,
        timezone=timezone,
    )


def _file_error(err: ValidationError) -> str:
    """The first problem of the file's shape: an unknown or missing key, or a value of the wrong type."""
    first = err.errors()[0]
    key = ".".join(str(part) for part in first["loc"] if not isinstance(part, int))
    if first["type"] == "extra_forbidden":
        return f"unknown key {key}"
    if first["type"] == "missing":
        return f"missing key {key}"
    return f"{key} = {first['input']!r}: {first['msg'].lower()}"


def _model(model: type[BaseModel], source: str, **values: Any) -> Any:
    """One of the run config's models from the file's values; those left out take the model's defaults."""
    try:
        return model(**{key: value for key, value in values.items() if value is not None})
    except ValidationError as err:
        first = err.errors()[0]
        message = first["msg"].removeprefix("Value error, ")
        if not first["loc"]:  # a rule across fields (halo within tile size): name the table that holds them
            table = next(iter(_KEYS[model].values())).split(".")[0]
            raise InputError(f"{source}: [{table}] {message}") from None
        key = _KEYS[model].get(str(first["loc"][0]), str(first["loc"][0]))
        raise InputError(f"{source}: {key} = {first['input']!r}: {message}") from None

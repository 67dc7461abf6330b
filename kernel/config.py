"""Run and search configuration: frozen, validated objects that cross every boundary (CLI, Prefect, cube attrs).

Each user-facing parameter has one normaliser here (as pystac-client's `ItemSearch` has `_format_bbox`,
`_format_datetime`, ...) and one default (its field's); `build` turns the first problem into one
`InputError` line naming the option the user typed. Everything below the entry point receives clean,
typed values and checks nothing again.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import date
from typing import Any, ClassVar, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from kernel.contracts import DEFAULT_METHOD, MODALITY, REGISTERED
from kernel.errors import InputError

BBox = tuple[float, float, float, float]
OrbitState = Literal["ascending", "descending"]
ORBIT_STATES: tuple[str, ...] = get_args(OrbitState)


def normalise_bbox(value: Sequence[Any]) -> BBox:
    """A lon/lat (W, S, E, N) box of four finite numbers, or an InputError saying what is wrong."""
    try:
        values = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise InputError(f"bbox must be four numbers W S E N, got {value!r}") from None
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise InputError(f"bbox must be four finite numbers W S E N, got {list(values)}")
    west, south, east, north = values
    if not -180 <= west < east <= 180:
        raise InputError(
            f"bbox west {west:g} must be below east {east:g}, both within -180..180 "
            "(antimeridian boxes are not supported)"
        )
    if not -90 <= south < north <= 90:
        raise InputError(f"bbox south {south:g} must be below north {north:g}, both within -90..90")
    return west, south, east, north


def normalise_date(value: Any, flag: str) -> date:
    """A calendar day from a `date` or a `YYYY-MM-DD` string; `flag` names the option in the error."""
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value))
    except ValueError:
        raise InputError(f"{flag} must be a date YYYY-MM-DD, got {value!r}") from None


def check_period(start: date, end: date) -> None:
    """An inclusive period runs forwards."""
    if start > end:
        raise InputError(f"start {start} is after end {end}")


def normalise_modalities(value: Sequence[str]) -> tuple[str, ...]:
    """A non-empty subset of the modalities the pipeline registers (`kernel.contracts.REGISTERED`)."""
    given = tuple(value)
    unknown = [name for name in given if name not in MODALITY or not MODALITY[name].registered]
    if unknown or not given:
        raise InputError(f"modalities must be a non-empty subset of {', '.join(REGISTERED)}, got {list(given)}")
    return given


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    # The command-line option behind each field, so an error names what the user typed.
    flags: ClassVar[dict[str, str]] = {}


def default(model: type[_Frozen], field: str) -> Any:
    """A field's default: the one place it is written (CLI defaults and help texts read it from here)."""
    return model.model_fields[field].default


class TileConfig(_Frozen):
    """Tiles of `size` pixels (also the Zarr chunk size) registered with `halo` extra pixels per side.

    The halo must exceed the largest expected displacement plus the method's matching window, so a
    tile's core sees everything it is matched against; 64 covers the few-pixel shifts plus local
    deformation of real scenes and the demo with room for a 32 px window.
    """

    flags = {"size": "--tile-size", "halo": "--halo"}
    size: int = Field(default=512, ge=64, le=8192)
    halo: int = Field(default=64, ge=0)

    @model_validator(mode="after")
    def _halo_fits(self) -> TileConfig:
        if self.halo > self.size:
            raise ValueError(f"--halo {self.halo} must not exceed --tile-size {self.size}")
        return self


class ClusterConfig(_Frozen):
    """Where tiles run: an existing scheduler (`address`), else a local cluster of `workers` processes
    (one per GPU on a GPU host), each with `threads_per_worker` threads and at most `memory_limit` of memory.

    `threads_per_worker` None: one per CPU worker (the methods are CPU-bound), the cores shared out among
    GPU workers. `memory_limit` None: Dask's own share of the machine's memory per worker.
    """

    flags = {
        "address": "--dask-address",
        "workers": "--workers",
        "threads_per_worker": "--threads-per-worker",
        "memory_limit": "--memory-limit",
    }
    address: str | None = None
    workers: int | None = Field(default=None, ge=1, le=512)
    threads_per_worker: int | None = Field(default=None, ge=1, le=64)
    memory_limit: str | None = None  # per worker, as Dask writes sizes: "4GiB", "1500MB"
    connect_timeout_s: float = Field(default=20.0, gt=0)

    @field_validator("memory_limit")
    @classmethod
    def _memory_limit(cls, value: str | None) -> str | None:
        if value is not None:
            normalise_memory(value)
        return value

    @property
    def local_options(self) -> list[str]:
        """The options given that shape a local cluster (with an existing scheduler its workers' own apply)."""
        local = {
            "workers": self.workers,
            "threads_per_worker": self.threads_per_worker,
            "memory_limit": self.memory_limit,
        }
        return [self.flags[name] for name, value in local.items() if value is not None]


def normalise_memory(value: str) -> int:
    """Bytes of a memory size as Dask writes them ("4GiB", "1500MB", "2e9"), at least 64 MiB."""
    from dask.utils import parse_bytes

    try:
        size = parse_bytes(value)
    except (ValueError, TypeError):
        raise InputError(f"--memory-limit must be a size such as 4GiB or 1500MB, got {value!r}") from None
    if size < 64 * 2**20:
        raise InputError(f"--memory-limit {value} is below 64MiB: a worker cannot hold one tile's inputs")
    return size


class SearchConfig(_Frozen):
    """Which catalog to search, and the pairing rules: how strictly scenes must co-locate.

    The pairing rules (`max_cloud` .. `orbit_state`) are what `catalogs.colocate.pair_scenes` applies.
    """

    flags = {
        "profile": "--profile",
        "catalog_url": "--catalog",
        "optical_collection": "--optical-collection",
        "sar_collection": "--sar-collection",
        "dem_collection": "--dem-collection",
        "max_cloud": "--max-cloud",
        "sar_window_days": "--sar-window-days",
        "min_overlap": "--min-overlap",
        "orbit_state": "--orbit-state",
    }
    profile: str = "earth-search"
    catalog_url: str | None = None
    optical_collection: str | None = None
    sar_collection: str | None = None
    dem_collection: str | None = None
    max_cloud: float = Field(default=30.0, ge=0, le=100)  # highest eo:cloud_cover of an optical scene, percent
    sar_window_days: float = Field(default=3.0, gt=0)  # SAR within this many days of the optical scene
    min_overlap: float = Field(default=0.5, gt=0, le=1)  # least share of the AOI a scene (and its SAR) must cover
    orbit_state: OrbitState | None = None  # preferred SAR orbit direction; None: the one most passes share


class AreaPeriod(_Frozen):
    """Where and when: a lon/lat bbox and an inclusive period of days."""

    flags = {"bbox": "--bbox", "start": "--start", "end": "--end"}
    bbox: BBox
    start: date
    end: date

    @field_validator("bbox", mode="before")
    @classmethod
    def _bbox(cls, value: Any) -> BBox:
        return normalise_bbox(value)

    @field_validator("start", "end", mode="before")
    @classmethod
    def _date(cls, value: Any, info: ValidationInfo) -> date:
        return normalise_date(value, cls.flags.get(str(info.field_name), str(info.field_name)))

    @model_validator(mode="after")
    def _period(self) -> AreaPeriod:
        check_period(self.start, self.end)
        return self


class RunConfig(AreaPeriod):
    """Everything `register_region` needs; serialised to JSON into the cube's attrs."""

    flags = {**AreaPeriod.flags, "out": "--out", "method": "--method", "report_dir": "--report"}
    out: str
    search: SearchConfig = SearchConfig()
    method: str = DEFAULT_METHOD  # a method spec, `name[:key=value...]`: models.api.method_spec resolves it
    tiles: TileConfig = TileConfig()
    cluster: ClusterConfig = ClusterConfig()
    report_dir: str | None = None
    modalities: tuple[str, ...] = REGISTERED

    @field_validator("modalities")
    @classmethod
    def _modalities(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return normalise_modalities(value)

    def to_json(self) -> str:
        return self.model_dump_json()


def build(model: type[_Frozen], **values) -> Any:
    """Construct a config model from command-line values; values left None take the field's default."""
    try:
        return model(**{key: value for key, value in values.items() if value is not None})
    except ValidationError as err:
        raise _one_line(model, err) from None


def from_json(model: type[_Frozen], text: str) -> Any:
    """A config model from its JSON (a deployment's region file), validated like `build`."""
    try:
        return model.model_validate_json(text)
    except ValidationError as err:
        raise _one_line(model, err) from None


def _one_line(model: type[_Frozen], err: ValidationError) -> InputError:
    """A pydantic report as one line that names the option (`--tile-size 32: ...`), not the internal field."""
    first = err.errors()[0]
    message = first["msg"].removeprefix("Value error, ")
    if not first["loc"]:
        return InputError(message)
    field = str(first["loc"][0])
    flag = model.flags.get(field, ".".join(str(part) for part in first["loc"]))
    if message.startswith(flag):  # a normaliser's message that names the option already
        return InputError(message)
    given = first.get("input")
    if isinstance(given, (int, float, str)) and not isinstance(given, bool):
        flag = f"{flag} {given}"
    return InputError(f"{flag}: {message}")

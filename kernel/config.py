"""Run configuration: one frozen, validated object that crosses every boundary (CLI, Prefect, cube attrs).

Validation happens here, at the edge, so the pipeline below can trust its inputs; every problem
becomes one `InputError` line instead of a pydantic report.
"""

from __future__ import annotations

from datetime import date
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from kernel.contracts import DEFAULT_METHOD
from kernel.errors import InputError

BBox = tuple[float, float, float, float]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")
    # The command-line option behind each field, so an error names what the user typed.
    flags: ClassVar[dict[str, str]] = {}


class TileConfig(_Frozen):
    """Tiles of `size` pixels (also the Zarr chunk size) registered with `halo` extra pixels per side.

    The halo must exceed the largest expected displacement plus the method's matching window, so a
    tile's core sees everything it is matched against; 64 covers the few-pixel shifts plus local
    deformation of real scenes and the demo with room for a 32 px window.
    """

    flags = {"size": "--tile-size", "halo": "--halo"}
    size: int = Field(512, ge=64, le=8192)
    halo: int = Field(64, ge=0)

    @model_validator(mode="after")
    def _halo_fits(self) -> TileConfig:
        if self.halo > self.size:
            raise ValueError(f"--halo {self.halo} must not exceed --tile-size {self.size}")
        return self


class ClusterConfig(_Frozen):
    """Where tiles run: an existing scheduler (`address`), else a local cluster of `workers` processes."""

    flags = {"address": "--dask-address", "workers": "--workers"}
    address: str | None = None
    workers: int | None = Field(None, ge=1, le=512)
    threads_per_worker: int = Field(1, ge=1, le=64)
    connect_timeout_s: float = Field(20.0, gt=0)


class SearchConfig(_Frozen):
    """Which catalog to search and how strictly scenes must co-locate."""

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
    max_cloud: float = Field(30.0, ge=0, le=100)
    sar_window_days: float = Field(3.0, gt=0)
    min_overlap: float = Field(0.5, gt=0, le=1)
    orbit_state: Literal["ascending", "descending"] | None = None  # None: the direction most passes share


class RunConfig(_Frozen):
    """Everything `register_region` needs; serialised to JSON into the cube's attrs."""

    flags = {
        "bbox": "--bbox",
        "start": "--start",
        "end": "--end",
        "out": "--out",
        "method": "--method",
        "report_dir": "--report",
    }
    bbox: BBox
    start: date
    end: date
    out: str
    search: SearchConfig = SearchConfig()
    method: str = DEFAULT_METHOD  # a method spec, `name[:key=value...]`: models.api.method_spec resolves it
    tiles: TileConfig = TileConfig()
    cluster: ClusterConfig = ClusterConfig()
    report_dir: str | None = None
    modalities: tuple[str, ...] = ("sar", "dem")

    @field_validator("bbox")
    @classmethod
    def _check_bbox(cls, bbox: BBox) -> BBox:
        w, s, e, n = bbox
        if not (-180 <= w < e <= 180 and -90 <= s < n <= 90):
            raise ValueError(f"bbox must be W S E N in degrees with W < E and S < N, got {list(bbox)}")
        return bbox

    @field_validator("modalities")
    @classmethod
    def _check_modalities(cls, modalities: tuple[str, ...]) -> tuple[str, ...]:
        unknown = set(modalities) - {"sar", "dem"}
        if unknown or not modalities:
            raise ValueError(f"modalities must be a non-empty subset of sar, dem, got {list(modalities)}")
        return modalities

    @model_validator(mode="after")
    def _check_dates(self) -> RunConfig:
        if self.start > self.end:
            raise ValueError(f"start {self.start} is after end {self.end}")
        return self

    def to_json(self) -> str:
        return self.model_dump_json()


def build(model: type[_Frozen], **values) -> BaseModel:
    """Construct a config model from command-line values, turning a pydantic report into one InputError
    line that names the option (`--tile-size 32: ...`), not the internal field."""
    try:
        return model(**values)
    except ValidationError as err:
        first = err.errors()[0]
        message = first["msg"].removeprefix("Value error, ")
        if not first["loc"]:
            raise InputError(message) from None
        field = str(first["loc"][0])
        where = model.flags.get(field, ".".join(str(part) for part in first["loc"]))
        given = first.get("input")
        if isinstance(given, (int, float, str)) and not isinstance(given, bool):
            where = f"{where} {given}"
        raise InputError(f"{where}: {message}") from None


def parse_date(text: str, label: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise InputError(f"{label} must be a date YYYY-MM-DD, got {text!r}") from None

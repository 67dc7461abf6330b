"""The cube store: everything a run asks of the place a cube lives (Contract 3), as one Protocol.

The flow and the tile writers speak only this interface, so a new kind of output plugs in without
touching them: `pipeline/outputs.py` picks the store for a location, `pipeline.cube.ZarrCubeStore` is
the Zarr v3 store (a local path or an s3:// URL), and tests use an in-memory store
(`tests/memory_store.py`). A store is picklable and cheap to copy: its chunk writes run on Dask
workers, each of which reopens the cube from the URL.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

import numpy as np

from kernel.contracts import DISPLACEMENT_CONVENTION, REFERENCE, MethodSpec
from kernel.version import __version__
from pipeline.grid import Grid
from pipeline.tiles import Tile, TilePlan, Window


@dataclass(frozen=True)
class CubeLayout:
    """Shape of a cube: its grid, tiling, acquisition times and the band names of each modality."""

    grid: Grid
    plan: TilePlan
    times: tuple[np.datetime64, ...]
    bands: Mapping[str, tuple[str, ...]]  # "optical", "sar", "dem" -> band names

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(m for m in self.bands if m != REFERENCE)


@dataclass(frozen=True)
class Provenance:
    """Which items one time step was made from."""

    optical_item: str
    sar_item: str
    sar_time: np.datetime64
    dem_item: str
    settings: str = ""  # JSON of the settings that shaped this time (`time_settings`)
    flow_run_id: str = ""  # the Prefect flow run that last wrote this time ("" outside a flow run)


def inputs_hash(*parts: object) -> int:
    """A positive int64 fingerprint of everything a chunk's content depends on (0 means 'not written')."""
    digest = hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1 or 1


def method_attrs(method: MethodSpec) -> dict[str, str]:
    """The attrs that say which method made every chunk: its name, weights checksum, effective settings
    (`inference`, only where it has any) and the whole spec; an append must bring the same."""
    attrs = {
        "method": method.name,
        "method_spec": method.to_json(),
        "weights_sha256": method.weights_sha256 or f"none: method {method.name} has no weights",
    }
    if method.settings:
        attrs["inference"] = json.dumps(dict(method.settings), sort_keys=True)
    return attrs


def time_settings(method: MethodSpec, tile_size: int, halo: int) -> str:
    """What shapes one time's fields beyond its inputs (the spec holds the weights' sha256), recorded per time
    so that mixed settings are visible."""
    return json.dumps(
        {"method_spec": json.loads(method.to_json()), "tile_size": tile_size, "halo": halo}, sort_keys=True
    )


def cube_attrs(config_json: str, catalog: Mapping[str, object], method: MethodSpec) -> dict:
    """A run's cube attrs (Contract 3): software, catalog, config, time, conventions and the method's identity."""
    return {
        "title": "dsmar aligned optical / SAR / DEM cube",
        "software": f"dsmar {__version__}",
        "dsmar_version": __version__,
        "catalog": json.dumps(dict(catalog), sort_keys=True),
        "config": config_json,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "displacement_convention": DISPLACEMENT_CONVENTION,
        "Conventions": "CF-1.8",
        **method_attrs(method),
    }


class CubeStore(Protocol):
    """Where one cube lives. Every method may raise `kernel.errors.InputError` with a one-line reason."""

    @property
    def url(self) -> str:
        """The cube's location as the user gave it, made absolute where it is a local path."""
        ...

    @property
    def scratch_url(self) -> str:
        """Where a run's tile tasks hand each other input windows and fields (`pipeline.tile_scratch`): beside the
        cube, so every worker that reaches the cube reaches it."""
        ...

    def check_target(self, method: MethodSpec | None = None, tile_size: int | None = None) -> None:
        """Refuse, before anything is written, a target that holds something else, or a cube of another
        method (name, weights, settings) or tile size; nothing there passes."""
        ...

    def check_reachable(self) -> str | None:
        """Why this process (the client, or a Dask worker asked before any tile is submitted) cannot write the cube, in a few words; None when it can."""
        ...

    def init(
        self, layout: CubeLayout, provenance: Sequence[Provenance], attrs: Mapping[str, str]
    ) -> dict[np.datetime64, int]:
        """Create the cube, or add this run's times to it; return each time's index."""
        ...

    def written(self, time_index: int) -> np.ndarray:
        """(tile_row, tile_col) inputs hashes of the chunks written for one time (0: not written)."""
        ...

    def write(self, time_index: int, tile: Tile, arrays: Mapping[str, np.ndarray], inputs_hash: int) -> None:
        """Write one tile's core of every variable, then its inputs hash (last: an interrupted chunk is redone)."""
        ...

    def read(self, name: str, time_index: int, window: Window | None = None) -> np.ndarray:
        """One variable at one time, (band, y, x) or (y, x), the whole grid or `window` of it."""
        ...

    def lock(self) -> AbstractContextManager[None]:
        """Hold the cube for one writing run: a second run on the same cube waits until the first ends."""
        ...

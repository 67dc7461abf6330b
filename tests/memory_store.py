"""An in-memory cube store (`pipeline.store.CubeStore`) for tests: the seam's fake, as stackstac fakes its reader.

Its content lives in this process, keyed by the store's URL: Dask pickles the store into its task graph even
for in-process workers (`LocalCluster(processes=False)`), and the copy it unpickles finds the same content.
"""

from __future__ import annotations

import hashlib
import tempfile
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from kernel.contracts import MODALITY, MethodSpec
from kernel.errors import InputError
from pipeline.quality import QUALITY_FILL
from pipeline.store import CubeLayout, Provenance, method_attrs
from pipeline.tiles import Tile, Window


@dataclass
class Content:
    arrays: dict[str, np.ndarray] = field(default_factory=dict)
    hashes: np.ndarray = field(default_factory=lambda: np.zeros((0, 0, 0), np.int64))
    attrs: dict[str, str] = field(default_factory=dict)
    times: list[np.datetime64] = field(default_factory=list)
    provenance: list[Provenance] = field(default_factory=list)
    writes: list[tuple[int, int, int]] = field(default_factory=list)  # (time, tile row, tile col), in order
    lock: threading.Lock = field(default_factory=threading.Lock)


_CONTENT: dict[str, Content] = {}


@dataclass(frozen=True)
class MemoryCubeStore:
    url: str

    def __post_init__(self) -> None:
        _CONTENT.setdefault(self.url, Content())

    @property
    def content(self) -> Content:
        return _CONTENT[self.url]

    @property
    def scratch_url(self) -> str:
        """A folder of this machine's temporary directory: the tile tasks' scratch is a Zarr group on disk."""
        return str(
            Path(tempfile.gettempdir()) / f"dsmar-memory-scratch-{hashlib.sha256(self.url.encode()).hexdigest()[:12]}"
        )

    def check_reachable(self) -> str | None:
        return None  # every worker of this process's clusters shares the content

    def check_target(self, method: MethodSpec | None = None, tile_size: int | None = None) -> None:
        recorded = self.content.attrs.get("method_spec")
        if method is not None and recorded is not None and recorded != method_attrs(method)["method_spec"]:
            raise InputError(f"{self.url} was written with another method")

    def init(
        self, layout: CubeLayout, provenance: Sequence[Provenance], attrs: Mapping[str, str]
    ) -> dict[np.datetime64, int]:
        content = self.content
        if content.times:
            raise InputError(f"{self.url}: the memory store holds one run's cube")
        n, shape = len(layout.times), layout.grid.shape
        for name, bands in layout.bands.items():
            content.arrays[name] = np.full((n, len(bands), *shape), np.nan, np.float32)
        for modality in layout.modalities:
            spec = MODALITY[modality]
            content.arrays[spec.displacement_var] = np.full((n, 2, *shape), np.nan, np.float32)
            content.arrays[spec.confidence_var] = np.full((n, *shape), np.nan, np.float32)
            content.arrays[spec.quality_var] = np.full((n, *shape), QUALITY_FILL, np.uint8)
        content.hashes = np.zeros((n, layout.plan.n_rows, layout.plan.n_cols), np.int64)
        content.attrs, content.times, content.provenance = dict(attrs), list(layout.times), list(provenance)
        return {t: i for i, t in enumerate(content.times)}

    def written(self, time_index: int) -> np.ndarray:
        return self.content.hashes[time_index].copy()

    def write(self, time_index: int, tile: Tile, arrays: Mapping[str, np.ndarray], inputs_hash: int) -> None:
        content = self.content
        ys, xs = tile.core.slices
        for name, value in arrays.items():
            content.arrays[name][(time_index, ..., ys, xs)] = value
        content.hashes[time_index, tile.i, tile.j] = inputs_hash
        content.writes.append((time_index, tile.i, tile.j))

    def read(self, name: str, time_index: int, window: Window | None = None) -> np.ndarray:
        ys, xs = window.slices if window is not None else (slice(None), slice(None))
        return self.content.arrays[name][(time_index, ..., ys, xs)].copy()

    @contextmanager
    def lock(self) -> Iterator[None]:
        with self.content.lock:
            yield

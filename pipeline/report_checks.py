"""The report's full-resolution evidence, read for a few small windows only: zoomed crops where the reference
has strong structure, and the independent residual check's tie-point windows. The aligned data come from the
cube, the data before registration from the source (the lazy loads on the cube grid)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import dask
import numpy as np
import xarray as xr
from scipy import ndimage

from kernel.contracts import MODALITY, REFERENCE
from pipeline.report import Crop, ResidualCheck
from pipeline.report_figures import display, normalise
from pipeline.residual_check import PATCH, Residuals, independent_kind, tie_points, windows
from pipeline.store import CubeStore
from pipeline.tiles import Window

CROP = 144  # side of a zoomed crop, in full-resolution pixels
CROPS = 3  # crops per date and modality


def structured_windows(reference: np.ndarray, step: int, shape: tuple[int, int], size: int = CROP, count: int = CROPS):
    """Up to `count` non-overlapping windows of `size` px (full resolution) where the reference quicklook
    (every `step`-th pixel) has the most gradient energy and no no-data: where an offset of a few pixels shows."""
    gray = normalise(reference)
    valid = np.isfinite(gray)
    energy = ndimage.gaussian_gradient_magnitude(np.where(valid, gray, 0.0), 1.0) ** 2
    side = max(1, min(size // step, *gray.shape))
    summed = ndimage.uniform_filter(np.where(valid, energy, 0.0), side, mode="constant")
    summed[ndimage.uniform_filter(valid.astype(np.float32), side, mode="constant") < 0.999] = 0.0
    size = min(size, *shape)
    picks: list[Window] = []
    while len(picks) < count and summed.max() > 0:
        cy, cx = np.unravel_index(np.argmax(summed), summed.shape)
        row = int(np.clip(cy * step - size // 2, 0, shape[0] - size))
        col = int(np.clip(cx * step - size // 2, 0, shape[1] - size))
        picks.append(Window(row, col, size, size))
        summed[max(0, cy - side) : cy + side + 1, max(0, cx - side) : cx + side + 1] = 0.0
    return picks


def _source(image: xr.DataArray, regions: Sequence[Window]) -> tuple[np.ndarray, ...]:
    """The windows of a lazy load, computed together."""
    return dask.compute(*(image.isel(y=w.slices[0], x=w.slices[1]).data for w in regions))


def full_resolution_evidence(
    store: CubeStore,
    time_index: int,
    moving: Mapping[str, xr.DataArray],
    shape: tuple[int, int],
    reference_quicklook: np.ndarray,
    step: int,
    pixel_size: float,
    method: str,
) -> tuple[dict[str, list[Crop]], dict[str, ResidualCheck]]:
    """Per modality: the zoomed crops and the residual check before and after registration (tie-point windows on
    a lattice over the grid of `shape`, by the matcher of the other family than `method`'s)."""
    crops_at = structured_windows(reference_quicklook, step, shape)
    ties_at = [Window(r, c, PATCH, PATCH) for r, c in windows(shape)]
    regions = [*crops_at, *ties_at]
    reference = [normalise(store.read(REFERENCE, time_index, w)) for w in regions]
    kind = independent_kind(method)
    n = len(crops_at)

    def check(moved: Sequence[np.ndarray]) -> Residuals | None:
        pairs = (((w.row, w.col), r, m) for w, r, m in zip(ties_at, reference[n:], moved[n:]))
        return Residuals.of(*tie_points(pairs, kind=kind), pixel_size=pixel_size)

    crops, residuals = {}, {}
    for modality, image in moving.items():
        elevation = MODALITY[modality].elevation
        before = [display(a, elevation) for a in _source(image, regions)]
        after = [display(store.read(modality, time_index, w), elevation) for w in regions]
        crops[modality] = [Crop(w, *images) for w, *images in zip(crops_at, reference, before, after)]
        residuals[modality] = ResidualCheck(kind, check(before), check(after))
    return crops, residuals

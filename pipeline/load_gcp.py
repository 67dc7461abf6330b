"""Assets in radar geometry (Sentinel-1 GRD: ground control points, no geotransform) geocoded onto the
target grid through their GCPs, lazily, one Dask chunk per warp.

GDAL's GCP transformer maps pixels to lon/lat by a thin-plate spline through the GCPs (exact at every
GCP, smooth between); rasterio warps each chunk straight from the file, reading only the source window
it needs. The GCPs of a GRD lie on a smooth Earth model, so terrain displaces pixels from where this
puts them (foreshortening, layover: tens of metres in relief); that residual is what the registration
then measures and removes. Conventions: docs/loading.md, "SAR in radar geometry".
"""

from __future__ import annotations

import dask.array as da
import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.warp import reproject

from pipeline.grid import Grid
from pipeline.load_assets import NO_SIDECARS, read_env

GCP_METHOD = "GCP_TPS"  # thin-plate spline; GDAL's polynomial (GCP_POLYNOMIAL) bends away from GCPs


def geocode_block(
    path: str, grid: Grid, resampling: Resampling, src_nodata: float | None, dtype: np.dtype
) -> np.ndarray:
    """The file's first band warped through its GCPs onto `grid`: (height, width), NaN outside the swath
    and where the source is nodata."""
    out = np.full(grid.shape, np.nan, dtype=dtype)
    with rasterio.Env(**read_env(), **NO_SIDECARS), rasterio.open(path) as src:
        gcps, gcp_crs = src.gcps
        reproject(
            rasterio.band(src, 1),
            out,
            gcps=gcps,
            src_crs=gcp_crs,
            src_nodata=src_nodata,
            dst_crs=grid.crs_wkt,
            dst_transform=grid.affine,
            dst_nodata=np.nan,
            resampling=resampling,
            SRC_METHOD=GCP_METHOD,
        )
    return out


def geocode_lazy(
    path: str, grid: Grid, resampling: Resampling, src_nodata: float | None, dtype: np.dtype, chunks: int
) -> da.Array:
    """`geocode_block` over `grid` in `chunks` x `chunks` blocks: a lazy (height, width) array."""
    rows = da.core.normalize_chunks(chunks, (grid.height,))[0]
    cols = da.core.normalize_chunks(chunks, (grid.width,))[0]
    row_starts, col_starts = np.cumsum((0, *rows)), np.cumsum((0, *cols))

    def block(block_id=None) -> np.ndarray:
        i, j = block_id
        window = grid.window(int(row_starts[i]), int(col_starts[j]), rows[i], cols[j])
        return geocode_block(path, window, resampling, src_nodata, dtype)

    return da.map_blocks(block, chunks=(rows, cols), dtype=dtype, meta=np.empty((0, 0), dtype))

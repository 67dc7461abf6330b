"""Lazy loading of STAC items onto the optical grid (the pipeline's one way to read pixels).

`optical_grid` derives the target grid from the optical item; `load_stack` puts any items (optical,
SAR, DEM tiles) onto exactly that grid with stackstac, in physical units with NaN for nodata (tiles
on one pixel lattice are first joined into one VRT: pipeline/load_mosaic.py; files in radar geometry
are geocoded through their GCPs instead: pipeline/load_gcp.py); `load_truth` reads the demo archive's
injected displacement. Conventions: docs/loading.md.
"""

from __future__ import annotations

from collections.abc import Sequence

import dask.array as da
import numpy as np
import pystac
import rasterio
import rioxarray  # noqa: F401  (registers the .rio accessor used on the result)
import stackstac
import xarray as xr
from affine import Affine
from pyproj import CRS
from pyproj.exceptions import CRSError
from rasterio.enums import Resampling
from stackstac.rio_reader import DEFAULT_GDAL_ENV, LayeredEnv

from catalogs.profiles import NO_QUIRKS, Quirks
from catalogs.scenes import AssetKeys
from kernel.config import TileConfig, default
from kernel.errors import CatalogError, InputError
from pipeline.grid import Grid
from pipeline.load_assets import NO_SIDECARS, AssetHeader, gdal_href, read_env, read_headers
from pipeline.load_gcp import geocode_lazy
from pipeline.load_meta import (
    Radiometry,
    absolute_href,
    asset_dict,
    crs_of,
    radiometry,
)
from pipeline.load_mosaic import Layer, asset_layers

# GDAL's block cache (by default 5% of the machine's memory in every worker process) is capped: each chunk is read
# once, so the cache saved nothing while a worker's memory grew with the scene read through it, up to that 5%.
GDAL_CACHE_MB = 64
RESAMPLING = {"bilinear": Resampling.bilinear, "nearest": Resampling.nearest, "cubic": Resampling.cubic}
TRUTH_ASSET = "truth_displacement"


def gdal_env() -> LayeredEnv:
    """stackstac's GDAL settings with dsmar's remote-read settings (`read_env`). A mosaic VRT opens its tiles
    during reads, not at open time: keep GDAL from probing each remote tile for sidecar files there too
    (stackstac sets this for opens only)."""
    return DEFAULT_GDAL_ENV.updated(always={**read_env(), "GDAL_CACHEMAX": GDAL_CACHE_MB}, read=NO_SIDECARS)


def optical_grid(item: pystac.Item, asset_keys: AssetKeys) -> Grid:
    """The optical item's native grid, from the proj metadata of its first optical band asset
    (asset-level fields win over item-level ones, as in the projection extension)."""
    if not asset_keys.optical:
        raise CatalogError("the catalog profile names no optical band assets")
    key = next(iter(asset_keys.optical.values()))
    fields, props = asset_dict(item, key), item.properties
    crs = crs_of(fields, props)
    transform = fields.get("proj:transform", props.get("proj:transform"))
    shape = fields.get("proj:shape", props.get("proj:shape"))
    missing = [
        n for n, v in (("proj:code/proj:epsg", crs), ("proj:transform", transform), ("proj:shape", shape)) if v is None
    ]
    if missing:
        raise CatalogError(f"optical item {item.id!r} asset {key!r} lacks {', '.join(missing)}: cannot build its grid")
    try:
        return Grid.from_affine(crs, Affine(*transform[:6]), int(shape[0]), int(shape[1]))
    except (ValueError, TypeError, CRSError) as e:
        raise CatalogError(f"optical item {item.id!r} asset {key!r} has an unusable grid: {e}") from None


def load_stack(
    items: Sequence[pystac.Item],
    bands: dict[str, str],
    grid: Grid,
    resampling: str = "bilinear",
    dtype: np.dtype | type = np.float32,
    *,
    chunks: int = default(TileConfig, "size"),
    sar_db: bool = True,
    quirks: Quirks = NO_QUIRKS,
) -> xr.DataArray:
    """Items' assets resampled onto exactly `grid`: lazy (band, y, x), physical units, NaN = nodata.

    `bands` maps output band names to asset keys. Several items are mosaicked with the first
    valid pixel winning in the order given (put the preferred item first); consecutive items on one
    pixel lattice are mosaicked before resampling, so their seams interpolate like one file. SAR assets come out in
    dB when `sar_db` (linear power is converted); `quirks` are the items' catalog's (`CatalogProfile.quirks`).
    Chunks are `chunks` x `chunks` pixels.
    """
    items = list(items)
    if not items:
        raise CatalogError("no items to load")
    if not bands:
        raise InputError("no bands requested")
    if resampling not in RESAMPLING:
        raise InputError(f"resampling must be one of {sorted(RESAMPLING)}, got {resampling!r}")
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise InputError(f"load_stack returns floats (NaN marks nodata), got dtype {dtype}")
    epsg = grid.crs.to_epsg()
    if epsg is None:
        raise CatalogError("the target grid's CRS has no EPSG code, which stackstac needs")
    keys = list(dict.fromkeys(bands.values()))
    for key in keys:
        if not any(key in item.assets for item in items):
            raise CatalogError(f"no item has asset {key!r} (items: {[i.id for i in items]})")
    table, hrefs, headers = _inspect_assets(items, keys, sar_db, quirks)
    layers = [asset_layers(items, key, table, hrefs, headers) for key in keys]
    mosaic = xr.concat(
        [_load_asset(ls, key, grid, resampling, dtype, chunks) for ls, key in zip(layers, keys)], dim="band"
    )
    out = mosaic.assign_coords(band=keys).sel(band=list(bands.values()))
    out = out.reset_coords(drop=True).assign_coords(band=list(bands), x=grid.x_coords(), y=grid.y_coords())
    out.attrs = {}
    return out.rio.write_crs(grid.crs_wkt).rio.write_transform(grid.affine)


def _load_asset(
    layers: list[Layer], key: str, grid: Grid, resampling: str, dtype: np.dtype, chunks: int
) -> xr.DataArray:
    """One asset's layers resampled onto `grid` and mosaicked, the first valid pixel winning: (y, x).
    Layers on a map grid go through stackstac; layers in radar geometry are geocoded through their GCPs."""
    parts = [_stack([layer for layer in layers if layer.radar is None], key, grid, resampling, dtype, chunks)]
    for layer in layers:
        if layer.radar is not None:
            values = geocode_lazy(layer.radar.path, grid, RESAMPLING[resampling], layer.radar.nodata, dtype, chunks)
            parts.append(_raw(values[None, None], [layer.item["id"]], key))
    raw = xr.concat(parts, dim="time")
    if raw.sizes["time"] == 0:  # no item overlaps the grid
        nan = da.full(grid.shape, np.nan, dtype=dtype, chunks=chunks)
        return xr.DataArray(nan, dims=("y", "x"))
    rank = {layer.item["id"]: i for i, layer in enumerate(layers)}
    raw = raw.isel(time=np.argsort([rank[i] for i in raw["id"].values], kind="stable"))  # the caller's order
    table = {(str(layer.item["id"]), key): layer.radiometry for layer in layers}
    phys = _to_physical(raw, table, dtype)
    return stackstac.mosaic(phys, dim="time", reverse=True).squeeze(
        "band", drop=True
    )  # reverse: the first item is on top


def _raw(values: da.Array, ids: Sequence[str], key: str) -> xr.DataArray:
    """Raw values (time, band, y, x) with the item `id` of each time, as `_to_physical` reads them."""
    return xr.DataArray(values, dims=("time", "band", "y", "x"), coords={"id": ("time", list(ids)), "band": [key]})


def _stack(layers: list[Layer], key: str, grid: Grid, resampling: str, dtype: np.dtype, chunks: int) -> xr.DataArray:
    """Layers on a map grid resampled onto `grid` by stackstac, unmosaicked (time, band, y, x); no time
    where no layer overlaps the grid (stackstac drops those)."""
    none = _raw(da.empty((0, 1, *grid.shape), dtype=dtype, chunks=chunks), [], key)
    if not layers:
        return none
    raw = stackstac.stack(
        [layer.item for layer in layers],
        assets=[key],
        epsg=grid.crs.to_epsg(),
        resolution=grid.resolution,
        bounds=grid.bounds,
        snap_bounds=False,  # snapping moves the origin off the grid by up to a pixel
        xy_coords="center",
        rescale=False,  # scale/offset/nodata are applied below, from our own metadata rules
        dtype=dtype,
        fill_value=dtype.type(np.nan),
        chunksize=(1, 1, chunks, chunks),
        resampling=RESAMPLING[resampling],
        sortby_date=False,  # keep the caller's order: it decides which item wins the mosaic
        properties=False,
        band_coords=False,
        gdal_env=gdal_env(),
    )
    _check_on_grid(raw, grid)
    if raw.sizes["time"] == 0:
        return none
    return _raw(raw.data, [str(i) for i in raw["id"].values], key)


def _inspect_assets(
    items: list[pystac.Item], keys: list[str], sar_db: bool, quirks: Quirks
) -> tuple[dict[tuple[str, str], Radiometry], dict[str, dict[str, str]], dict[str, AssetHeader]]:
    """Each present asset's radiometry, the href GDAL should open on its own, and its header (by absolute href)."""
    present = [(item, key) for item in items for key in keys if key in item.assets]
    table = {(item.id, key): radiometry(item, key, sar_db, quirks) for item, key in present}
    headers = read_headers(absolute_href(item, key) for item, key in present)
    hrefs: dict[str, dict[str, str]] = {item.id: {} for item in items}
    for item, key in present:
        header = headers[absolute_href(item, key)]
        if header.count != 1:
            raise CatalogError(
                f"asset {key!r} of item {item.id!r} has {header.count} bands; load_stack reads single-band assets"
            )
        hrefs[item.id][key] = gdal_href(absolute_href(item, key), header, table[item.id, key].nodata)
    return table, hrefs, headers


def _check_on_grid(raw: xr.DataArray, grid: Grid) -> None:
    """stackstac must have produced exactly `grid` (shape and origin); anything else is a bug here."""
    transform = raw.attrs.get("transform")
    if (raw.sizes["y"], raw.sizes["x"]) != grid.shape or not np.allclose(
        tuple(transform)[:6], grid.transform, rtol=0, atol=1e-6 * grid.resolution[0]
    ):
        raise RuntimeError(f"stackstac grid {raw.sizes} {transform} differs from the target {grid}")


def _to_physical(raw: xr.DataArray, table: dict[tuple[str, str], Radiometry], dtype: np.dtype) -> xr.DataArray:
    """Mask each asset's declared nodata, apply its scale/offset, convert linear SAR power to dB."""
    keys = [str(k) for k in raw["band"].values]
    rows = [[table.get((str(i), k), Radiometry()) for k in keys] for i in raw["id"].values]

    def field(get) -> xr.DataArray:
        return xr.DataArray(np.array([[get(r) for r in row] for row in rows]), dims=("time", "band"))

    nodata = field(lambda r: np.nan if r.nodata is None else r.nodata).astype(dtype)
    scale, offset = field(lambda r: r.scale).astype(dtype), field(lambda r: r.offset).astype(dtype)
    phys = raw.where((raw != nodata) | nodata.isnull()) * scale + offset
    to_db = field(lambda r: r.to_db)
    if bool(to_db.any()):
        power = phys.where(~field(lambda r: r.amplitude), phys**2)
        phys = phys.where(~to_db, 10 * np.log10(power.where(power > 0)))
    return phys.astype(dtype)


def load_truth(item: pystac.Item, grid: Grid) -> np.ndarray | None:
    """The item's `truth_displacement` (2, H, W) float32 (dy, dx in optical pixels, Contract 1),
    None when the item has none; CatalogError if it is not on `grid`."""
    if TRUTH_ASSET not in item.assets:
        return None
    href = absolute_href(item, TRUTH_ASSET)
    with rasterio.Env(**read_env()), rasterio.open(href) as src:
        if src.count != 2:
            raise CatalogError(f"{href}: truth_displacement must have 2 bands (dy, dx), has {src.count}")
        same_crs = src.crs is not None and grid.crs.equals(CRS.from_wkt(src.crs.to_wkt()), ignore_axis_order=True)
        same_transform = np.allclose(tuple(src.transform)[:6], grid.transform, rtol=0, atol=1e-6 * grid.resolution[0])
        if not (same_crs and same_transform and src.shape == grid.shape):
            raise CatalogError(f"{href}: truth_displacement is not on the optical grid ({src.shape} {src.transform})")
        return src.read(out_dtype=np.float32, masked=True).filled(np.nan)

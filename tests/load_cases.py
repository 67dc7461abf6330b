"""Real GeoTIFFs and pystac items for the loading tests, written into a tmp dir.

The optical grid sits just west of the UTM 32/33 border (about 11.99 E, 45 N), so sources in
EPSG:32633 are rotated by about 4 degrees against it: a real reprojection, not a shift.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pystac
import rasterio
import xarray as xr
from affine import Affine
from pyproj import Transformer
from rasterio.enums import Resampling
from rasterio.warp import transform_bounds

from pipeline.grid import Grid

PROJ_V1 = "https://stac-extensions.github.io/projection/v1.1.0/schema.json"
RASTER = "https://stac-extensions.github.io/raster/v1.1.0/schema.json"
SAR_EXT = "https://stac-extensions.github.io/sar/v1.0.0/schema.json"
OPTICAL_GRID = Grid.from_affine(32632, Affine(10, 0, 735000, 0, -10, 4988000), 96, 112)


def source_transform(
    epsg: int, res: float, margin: float = 100.0, shift: float = 3.7
) -> tuple[Affine, tuple[int, int]]:
    """A north-up grid in `epsg` covering the optical grid plus a margin, origin off any round value."""
    left, bottom, right, top = transform_bounds(OPTICAL_GRID.crs, f"EPSG:{epsg}", *OPTICAL_GRID.bounds, densify_pts=21)
    left, top = left - margin + shift, top + margin - shift
    width, height = int(np.ceil((right + margin - left) / res)), int(np.ceil((top - (bottom - margin)) / res))
    return Affine(res, 0, left, 0, -res, top), (height, width)


def optical_pixel_ramps(epsg: int, transform: Affine, shape: tuple[int, int]) -> np.ndarray:
    """(2, H, W): each source pixel centre's (column, row) position on the optical grid, in optical pixels.

    Loaded back onto the optical grid, these must read j and i at pixel (i, j): the error is the
    geolocation error in pixels, directly.
    """
    rows, cols = np.mgrid[0 : shape[0], 0 : shape[1]] + 0.5
    xs, ys = transform @ (cols, rows)
    e, n = Transformer.from_crs(epsg, OPTICAL_GRID.crs, always_xy=True).transform(xs, ys)
    inverse = ~OPTICAL_GRID.affine
    col, row = inverse @ (e, n)
    return np.stack([col - 0.5, row - 0.5]).astype(np.float32)


def write_tif(
    path: Path, data: np.ndarray, epsg: int | None, transform: Affine | None, nodata=None, gcps=None, gcp_epsg=4326
) -> Path:
    data = data if data.ndim == 3 else data[None]
    profile = dict(
        driver="GTiff", count=data.shape[0], height=data.shape[1], width=data.shape[2], dtype=data.dtype, nodata=nodata
    )
    if gcps is None:
        profile.update(crs=f"EPSG:{epsg}", transform=transform)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(data)
        if gcps is not None:
            dst.gcps = (gcps, rasterio.crs.CRS.from_epsg(gcp_epsg))
    return path


def make_item(
    item_id: str,
    assets: dict[str, dict],
    epsg: int,
    properties: dict | None = None,
    extensions: tuple[str, ...] = (),
) -> pystac.Item:
    """An item with `assets` (key -> dict(href=Path, plus asset fields such as proj:transform),
    projection v1 `proj:epsg` at item level, as older catalogs (and stackstac) spell it."""
    bbox = list(transform_bounds(OPTICAL_GRID.crs, "EPSG:4326", *OPTICAL_GRID.bounds))
    w, s, e, n = bbox
    geometry = {"type": "Polygon", "coordinates": [[[w, s], [e, s], [e, n], [w, n], [w, s]]]}
    props = {"proj:epsg": epsg, **(properties or {})}
    item = pystac.Item(
        item_id,
        geometry,
        bbox,
        datetime(2024, 6, 1, tzinfo=UTC),
        props,
        stac_extensions=[PROJ_V1, RASTER, *extensions],
    )
    for key, fields in assets.items():
        fields = dict(fields)
        href = Path(fields.pop("href")).as_uri()
        item.add_asset(
            key, pystac.Asset(href, media_type=pystac.MediaType.GEOTIFF, roles=["data"], extra_fields=fields)
        )
    return item


def proj_fields(transform: Affine, shape: tuple[int, int], **band) -> dict:
    fields = {"proj:transform": list(transform)[:6], "proj:shape": list(shape)}
    if band:
        fields["raster:bands"] = [band]
    return fields


def roundtrip(item: pystac.Item) -> pystac.Item:
    """What a STAC API client hands over: pystac 1.15 migrates proj:epsg to proj:code here."""
    return pystac.Item.from_dict(item.to_dict())


def rioxarray_reference(path: Path, resampling: Resampling = Resampling.bilinear) -> np.ndarray:
    """The independent reference: rioxarray's reproject_match of the file onto the optical grid."""
    import rioxarray

    src = rioxarray.open_rasterio(path, masked=True)
    template = (
        xr.DataArray(
            np.zeros(OPTICAL_GRID.shape, np.float32),
            dims=("y", "x"),
            coords={"y": OPTICAL_GRID.y_coords(), "x": OPTICAL_GRID.x_coords()},
        )
        .rio.write_crs(OPTICAL_GRID.crs_wkt)
        .rio.write_transform(OPTICAL_GRID.affine)
    )
    out = src.rio.reproject_match(template, resampling=resampling)
    assert np.allclose(out.x, OPTICAL_GRID.x_coords()) and np.allclose(out.y, OPTICAL_GRID.y_coords())
    return out.values.astype(np.float32)

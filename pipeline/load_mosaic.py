"""Items of one asset that share a pixel lattice, mosaicked in their own CRS before resampling.

Resampled one by one, abutting tiles (Copernicus DEM, 1 arcsecond, EPSG:4326) meet at a seam where
each side's interpolation sees only its own pixels: up to half a source pixel off. A GDAL VRT of the
tiles in their own CRS is one raster with real pixels on both sides of every seam, so it is resampled
once, like a single file. In the VRT the preferred item is painted last and each item's nodata lets
the one below show through: the first valid pixel wins, decided per source pixel.
Items that cannot share a lattice (another CRS, pixel size or alignment, other scale/offset) stay
separate layers, mosaicked after resampling as before. Conventions: docs/loading.md, "Mosaics".
"""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pystac
import rasterio.dtypes
from affine import Affine

from pipeline.load_assets import AssetHeader, effective_nodata, vsi_path
from pipeline.load_meta import Radiometry, absolute_href, plain_item

# Tiles whose origins sit within this fraction of a pixel of the first tile's lattice are placed on it.
LATTICE_TOLERANCE_PX = 1e-3


@dataclass(frozen=True)
class SourceGrid:
    """Where a file's pixels are, read from the file itself (what GDAL warps from)."""

    crs_wkt: str
    epsg: int | None
    transform: Affine
    shape: tuple[int, int]
    dtype: str


@dataclass(frozen=True)
class Tile:
    """One item's asset as a VRT source: GDAL path, grid, and the nodata value that makes it transparent."""

    path: str
    grid: SourceGrid
    nodata: float | None


@dataclass(frozen=True)
class Mosaic:
    """A VRT (XML text, which GDAL opens as a connection string) and its grid in the tiles' CRS."""

    xml: str
    transform: Affine
    shape: tuple[int, int]


@dataclass(frozen=True)
class Layer:
    """One entry for stackstac: an item dict (a single item, or a mosaic posing as one) and its radiometry;
    or, where `radar` is set, a file in radar geometry that is geocoded through its GCPs instead."""

    item: dict[str, Any]
    radiometry: Radiometry
    radar: Tile | None = None


def source_grid(header: AssetHeader) -> SourceGrid:
    """The file's own grid, as `read_header` found it."""
    return SourceGrid(header.crs_wkt, header.epsg, header.transform, header.shape, header.dtype)


def source_nodata(header: AssetHeader, declared: float | None) -> float | None:
    """The value GDAL must treat as nodata in this file (`effective_nodata`, as `gdal_href` wraps it);
    NaN for floats that declare none, since a NaN pixel is never data and must not hide a valid item below it."""
    value = effective_nodata(header, declared)
    if value is None and np.dtype(header.dtype).kind == "f":
        return math.nan
    return value


def lattice_offset(ref: SourceGrid, other: SourceGrid) -> tuple[int, int] | None:
    """`other`'s origin in whole pixels (col, row) of `ref`'s lattice, or None if they share no lattice."""
    if ref.epsg is None or ref.crs_wkt != other.crs_wkt:
        return None
    a, b = ref.transform, other.transform
    res = max(abs(a.a), abs(a.e))
    if not np.allclose((a.a, a.b, a.d, a.e), (b.a, b.b, b.d, b.e), rtol=0, atol=1e-9 * res):
        return None
    col, row = ~a * (b.c, b.f)
    whole = round(col), round(row)
    if abs(col - whole[0]) > LATTICE_TOLERANCE_PX or abs(row - whole[1]) > LATTICE_TOLERANCE_PX:
        return None
    return whole


def lattice_runs(grids: Sequence[SourceGrid], radiometries: Sequence[Radiometry]) -> list[list[int]]:
    """Indices grouped into runs of consecutive items that can be one VRT: same lattice as the run's
    first item and the same scale/offset/dB rule. Only consecutive items merge, so the preference
    order between runs stays the caller's."""
    runs: list[list[int]] = []
    for i, (grid, rad) in enumerate(zip(grids, radiometries)):
        if runs:
            first = runs[-1][0]
            same_rule = replace(rad, nodata=None) == replace(radiometries[first], nodata=None)
            if same_rule and lattice_offset(grids[first], grid) is not None:
                runs[-1].append(i)
                continue
        runs.append([i])
    return runs


def _gdal_type(dtype: str | np.dtype) -> str:
    return rasterio.dtypes.typename_fwd[rasterio.dtypes.dtype_rev[np.dtype(dtype).name]]


def _vrt_xml(grid: SourceGrid, placed: Sequence[tuple[Tile, int, int]]) -> str:
    """A one-band VRT on `grid` (its dtype a float, NaN = nodata) painting each (tile, col, row) in
    turn, later ones over earlier ones, each tile's nodata transparent."""
    root = ET.Element("VRTDataset", rasterXSize=str(grid.shape[1]), rasterYSize=str(grid.shape[0]))
    ET.SubElement(root, "SRS").text = grid.crs_wkt
    ET.SubElement(root, "GeoTransform").text = ",".join(repr(float(v)) for v in grid.transform.to_gdal())
    band = ET.SubElement(root, "VRTRasterBand", dataType=_gdal_type(grid.dtype), band="1")
    ET.SubElement(band, "NoDataValue").text = "nan"
    for tile, col, row in placed:
        height, width = tile.grid.shape
        src = ET.SubElement(band, "ComplexSource")
        ET.SubElement(src, "SourceFilename", relativeToVRT="0").text = tile.path
        ET.SubElement(src, "SourceBand").text = "1"
        # with these properties GDAL opens a tile only when a read touches it
        ET.SubElement(
            src,
            "SourceProperties",
            RasterXSize=str(width),
            RasterYSize=str(height),
            DataType=_gdal_type(tile.grid.dtype),
        )
        ET.SubElement(src, "SrcRect", xOff="0", yOff="0", xSize=str(width), ySize=str(height))
        ET.SubElement(src, "DstRect", xOff=str(col), yOff=str(row), xSize=str(width), ySize=str(height))
        if tile.nodata is not None:
            ET.SubElement(src, "NODATA").text = repr(float(tile.nodata))
    return ET.tostring(root, encoding="unicode")


def _nan_for_nodata(tile: Tile) -> Tile:
    """A float tile whose nodata is a number, read through a VRT of its own that turns it into NaN:
    a VRT source skips one value only, and the tile's NaN pixels must not hide the tile below either."""
    if tile.nodata is None or math.isnan(tile.nodata) or np.dtype(tile.grid.dtype).kind != "f":
        return tile
    return Tile(_vrt_xml(tile.grid, [(tile, 0, 0)]), tile.grid, math.nan)


def mosaic_vrt(tiles: Sequence[Tile]) -> Mosaic:
    """One VRT of `tiles` (preferred first, all on the first tile's lattice) on their union extent,
    float (NaN = nodata) wide enough for every tile's values."""
    ref = tiles[0].grid
    offsets = [lattice_offset(ref, t.grid) for t in tiles]
    if any(o is None for o in offsets):
        raise ValueError("mosaic_vrt needs tiles on one lattice (use lattice_runs first)")
    left, top = min(o[0] for o in offsets), min(o[1] for o in offsets)
    right = max(o[0] + t.grid.shape[1] for o, t in zip(offsets, tiles))
    bottom = max(o[1] + t.grid.shape[0] for o, t in zip(offsets, tiles))
    dtype = np.result_type(np.float32, *[np.dtype(t.grid.dtype) for t in tiles]).name
    grid = replace(
        ref, transform=ref.transform * Affine.translation(left, top), shape=(bottom - top, right - left), dtype=dtype
    )
    placed = [(_nan_for_nodata(t), col - left, row - top) for t, (col, row) in zip(tiles, offsets)]
    return Mosaic(_vrt_xml(grid, placed[::-1]), grid.transform, grid.shape)  # the preferred tile painted last


def _bounds(transform: Affine, shape: tuple[int, int]) -> list[float]:
    corners = [transform * (col, row) for col, row in ((0, 0), (shape[1], 0), (shape[1], shape[0]), (0, shape[0]))]
    xs, ys = zip(*corners)
    return [min(xs), min(ys), max(xs), max(ys)]


def mosaic_item(template: dict[str, Any], item_id: str, key: str, mosaic: Mosaic, epsg: int) -> dict[str, Any]:
    """`template` (the run's first item, as stackstac reads it) with `key` replaced by the mosaic;
    every proj field is set on the asset so none of the first item's own extent leaks in."""
    asset = {
        "href": mosaic.xml,
        "type": "application/x-vrt",
        "roles": ["data"],
        "proj:epsg": epsg,
        "proj:transform": list(mosaic.transform)[:6],
        "proj:shape": list(mosaic.shape),
        "proj:bbox": _bounds(mosaic.transform, mosaic.shape),
    }
    return {**template, "id": item_id, "assets": {key: asset}}


def asset_layers(
    items: Sequence[pystac.Item],
    key: str,
    table: dict[tuple[str, str], Radiometry],
    hrefs: dict[str, dict[str, str]],
    headers: dict[str, AssetHeader],
) -> list[Layer]:
    """The layers for asset `key`, preferred first: runs of items on one lattice as one VRT each, other
    items on their own (opened through `hrefs`), files in radar geometry marked for GCP geocoding."""
    present = [item for item in items if key in item.assets]
    rads = [table[item.id, key] for item in present]
    sources = [absolute_href(item, key) for item in present]

    def single(i: int) -> Layer:
        header = headers[sources[i]]
        radar = None
        if header.radar_geometry:
            radar = Tile(vsi_path(sources[i]), source_grid(header), source_nodata(header, rads[i].nodata))
        return Layer(plain_item(present[i], hrefs[present[i].id]), rads[i], radar)

    if len(present) < 2:
        return [single(i) for i in range(len(present))]
    grids = {href: source_grid(headers[href]) for href in sources}
    layers = []
    for run in lattice_runs([grids[s] for s in sources], rads):
        first = present[run[0]]
        if len(run) == 1:
            layers.append(single(run[0]))
            continue
        tiles = [
            Tile(vsi_path(sources[i]), grids[sources[i]], source_nodata(headers[sources[i]], rads[i].nodata))
            for i in run
        ]
        item_id = "+".join(present[i].id for i in run)
        mosaic = mosaic_vrt(tiles)
        layers.append(
            Layer(
                mosaic_item(plain_item(first, {}), item_id, key, mosaic, tiles[0].grid.epsg),
                replace(rads[run[0]], nodata=None),
            )
        )
    return layers

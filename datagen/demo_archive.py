"""The demo archive (Contract 4): a small static STAC catalog of co-located optical, SAR and DEM COGs.

One synthetic landscape (`datagen.synthetic`) is rendered on a master grid: the optical grid of the
archive extended by a margin, in optical pixel coordinates. Each SAR and DEM product is written on its
own grid (other origin, sub-pixel offset, larger footprint, 30 m for the DEM) and is misregistered by
a known smooth field `u` (optical pixels): seen on the optical grid, the product is
`moving(q) = aligned(q + u(q))`. The Contract 1 truth `d` with `moving(p + d(p)) = aligned(p)` solves
`d(p) = -u(p + d(p))`; it is stored with each SAR and DEM item as the `truth_displacement` asset.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

import numpy as np
import pystac
import rasterio
from pyproj import Transformer
from pystac.extensions.eo import Band, EOExtension
from pystac.extensions.projection import ProjectionExtension
from pystac.extensions.raster import DataType, NoDataStrings, RasterBand, RasterExtension
from pystac.extensions.sar import FrequencyBand, ObservationDirection, Polarization, SarExtension
from pystac.extensions.sat import OrbitState, SatExtension
from pystac.extensions.view import ViewExtension
from rasterio.windows import Window as RasterWindow
from scipy import ndimage

from catalogs.profiles import LOCAL
from datagen import synthetic
from kernel.contracts import REFERENCE, REGISTERED
from kernel.errors import InputError
from kernel.fields import elastic_field
from kernel.paths import check_writable_dir
from kernel.warp import fixed_point_inverse, sample
from pipeline.grid import Grid
from pipeline.tiles import Window

ARCHIVE_VERSION = 1  # bump when the generator changes what it writes, so old archives are rebuilt
EPSG = 32633  # UTM 33N; the optical tile sits near 46.1 N, 14.5 E (the landscape itself is synthetic)
OPTICAL_ORIGIN = (459960.0, 5110020.0)  # upper-left corner, on the Sentinel-2 10 m lattice
OPTICAL_RES, SAR_RES, DEM_RES = 10.0, 10.0, 30.0
SAR_PAD_M, DEM_PAD_M = 400.0, 600.0  # SAR and DEM footprints reach this far past the optical one
MAX_FIELD_PX = 10.0  # bound on |u|: shift <= 4, elastic <= 2, terrain <= 1.5 (with room to spare)
MIN_SIZE = 256
FIRST_DATE = date(2024, 6, 4)
REVISIT_DAYS = 10
COLLECTIONS = {modality: LOCAL.collection(modality) for modality in (REFERENCE, *REGISTERED)}  # the local profile's
TRUTH_KEY = "truth_displacement"
# (asset key, Sentinel-2 band name, centre wavelength um, FWHM um) of the optical assets.
OPTICAL_ASSETS = (
    ("blue", "B02", 0.490, 0.098),
    ("green", "B03", 0.560, 0.045),
    ("red", "B04", 0.665, 0.038),
    ("nir", "B08", 0.842, 0.145),
)
REFLECTANCE_SCALE = 1e-4
DEM_END = "2015-01-07T00:00:00Z"


@dataclass(frozen=True)
class ArchiveInfo:
    """What `dsmar run` needs to find the archive again: where, which AOI, which dates, which items."""

    root: Path
    catalog: Path
    bbox: tuple[float, float, float, float]  # AOI (W, S, E, N lon/lat) just inside the optical footprint
    optical_bbox: tuple[float, float, float, float]  # lon/lat bbox of the optical footprint
    start: date
    end: date
    optical_item_ids: tuple[str, ...]
    sar_item_ids: tuple[str, ...]
    dem_item_ids: tuple[str, ...]
    size: int
    dates: int
    seed: int
    epsg: int = EPSG
    collections: dict[str, str] = field(default_factory=lambda: dict(COLLECTIONS))

    def to_json(self) -> dict:
        data = asdict(self)
        data.update(
            root=str(self.root), catalog=str(self.catalog), start=self.start.isoformat(), end=self.end.isoformat()
        )
        return data

    @classmethod
    def from_json(cls, data: dict) -> ArchiveInfo:
        return cls(
            root=Path(data["root"]),
            catalog=Path(data["catalog"]),
            bbox=tuple(data["bbox"]),
            optical_bbox=tuple(data["optical_bbox"]),
            start=date.fromisoformat(data["start"]),
            end=date.fromisoformat(data["end"]),
            optical_item_ids=tuple(data["optical_item_ids"]),
            sar_item_ids=tuple(data["sar_item_ids"]),
            dem_item_ids=tuple(data["dem_item_ids"]),
            size=data["size"],
            dates=data["dates"],
            seed=data["seed"],
            epsg=data["epsg"],
            collections=dict(data["collections"]),
        )


# A band's physical values on its product's grid: the whole (H, W) array, or a function that renders any window
# of it, so that a large archive is written window by window without ever holding a whole band.
BandSource = np.ndarray | Callable[[Window], np.ndarray]
WRITE_WINDOW = 512  # side of the windows a rendered band is written in (the GeoTIFF block size)


@dataclass(frozen=True)
class Product:
    """One item's rasters: bands on its own grid, and (SAR, DEM) the truth on the optical grid, if known."""

    kind: str  # "optical", "sar" or "dem"
    item_id: str
    grid: Grid
    acquired: datetime
    bands: dict[str, BandSource]  # asset key -> (H, W) float32 physical values on `grid`
    properties: dict
    truth: np.ndarray | None = None  # (2, H, W) Contract 1 field on the optical grid
    aligned: np.ndarray | None = None  # (C, H, W) what the product would be on the optical grid, unmoved


@dataclass(frozen=True)
class RenderedArchive:
    optical_grid: Grid
    products: tuple[Product, ...]


# --- geometry: grids and displacement fields ---------------------------------------------------------


def optical_grid(size: int) -> Grid:
    x0, y0 = OPTICAL_ORIGIN
    return Grid.from_affine(EPSG, rasterio.Affine(OPTICAL_RES, 0, x0, 0, -OPTICAL_RES, y0), size, size)


def margin_px() -> int:
    """Master-grid margin around the optical grid: the widest product footprint plus the largest field."""
    return int(np.ceil((DEM_PAD_M + 2 * DEM_RES) / OPTICAL_RES + MAX_FIELD_PX)) + 4


def product_grid(optical: Grid, pad_m: float, res: float, rng: np.random.Generator) -> Grid:
    """A grid covering the optical footprint plus `pad_m`, origin offset by a random sub-pixel amount."""
    left, bottom, right, top = optical.bounds
    fx, fy = rng.uniform(0.15, 0.85, size=2) * res
    x0, y0 = round(left - pad_m - fx, 3), round(top + pad_m + fy, 3)
    width = int(np.ceil((right + pad_m - x0) / res))
    height = int(np.ceil((y0 - (bottom - pad_m)) / res))
    return Grid.from_affine(EPSG, rasterio.Affine(res, 0, x0, 0, -res, y0), height, width)


def optical_pixel_coords(optical: Grid, grid: Grid) -> np.ndarray:
    """(2, h, w) optical-grid pixel coordinates (row, col) of the centres of `grid`'s pixels."""
    rows = (optical.transform[5] - grid.y_coords()) / OPTICAL_RES - 0.5
    cols = (grid.x_coords() - optical.transform[2]) / OPTICAL_RES - 0.5
    return np.stack(np.meshgrid(rows, cols, indexing="ij")).astype(np.float32)


def sample_displaced(master: np.ndarray, u: np.ndarray, margin: int, coords: np.ndarray) -> np.ndarray:
    """The misregistered product at optical-pixel coords q: aligned(q + u(q)), read from the master."""
    shifted = coords + margin
    return sample(master, shifted + sample(u, shifted))


def invert_field(u: np.ndarray, margin: int, shape: tuple[int, int], iterations: int = 15) -> np.ndarray:
    """The Contract 1 truth d on the optical grid: the fixed point of d(p) = -u(p + d(p)).

    `u` lives on the master grid (optical pixels, offset by `margin`). The iteration contracts by
    max|grad u| (a few hundredths here), so it is run on a 4x coarser grid first and finished with one
    full-resolution step.
    """

    def solve(points: np.ndarray, d: np.ndarray, steps: int) -> np.ndarray:
        return fixed_point_inverse(lambda q: sample(u, q + margin), points, d, steps)

    step = 4
    coarse = np.mgrid[0 : shape[0] + step : step, 0 : shape[1] + step : step].astype(np.float32)
    d_coarse = solve(coarse, np.zeros_like(coarse), iterations)
    fine = np.mgrid[0 : shape[0], 0 : shape[1]].astype(np.float32)
    d = sample(d_coarse, fine / step)
    return solve(fine, d, 1).astype(np.float32)


def misregistration(
    dem: np.ndarray,
    rng: np.random.Generator,
    shift_px: tuple[float, float],
    elastic_px: float,
    terrain_px: float = 0.0,
    look_azimuth: float = 0.0,
) -> np.ndarray:
    """A smooth field u (2, H, W) on the master grid, optical pixels: a global shift, a smooth elastic
    part, and (SAR) a displacement along the range direction proportional to elevation, as residual
    foreshortening after geocoding with an imperfect DEM gives.
    """
    magnitude = rng.uniform(*shift_px)
    angle = rng.uniform(0, 2 * np.pi)
    u = np.empty((2, *dem.shape), dtype=np.float32)
    u[0], u[1] = magnitude * np.sin(angle), magnitude * np.cos(angle)
    # The elastic part varies over a third of the scene: draw it 8x coarser and interpolate (cheap).
    coarse = elastic_field((dem.shape[0] // 8 + 2, dem.shape[1] // 8 + 2), rng, elastic_px, max(dem.shape) / 24.0)
    u += sample(coarse, np.mgrid[0 : dem.shape[0], 0 : dem.shape[1]].astype(np.float32) / 8.0)
    if terrain_px > 0:
        smooth = ndimage.uniform_filter(ndimage.uniform_filter(dem, 25), 25)  # keeps |grad u| small
        height = smooth - np.median(smooth)
        height /= max(float(np.abs(height).max()), 1e-6)
        # Elevated ground is imaged towards the sensor, so its content is found further along the look.
        az = np.deg2rad(look_azimuth)
        u[0] += terrain_px * height * -np.cos(az)
        u[1] += terrain_px * height * np.sin(az)
    return u


# --- rendering: every product in memory ---------------------------------------------------------------


def _acquisitions(dates: int) -> list[tuple[datetime, datetime, str, float, float]]:
    """(optical time, SAR time, orbit state, look azimuth, incidence) per date; SAR 1-2 days apart."""
    out = []
    for i in range(dates):
        day = FIRST_DATE + timedelta(days=REVISIT_DAYS * i)
        optical = datetime.combine(day, time(10, 6, 31), tzinfo=UTC)
        if i % 2 == 0:  # ascending, right-looking: heading ~348 deg, the radar looks ~east
            sar = datetime.combine(day + timedelta(days=1), time(16, 58, 12), tzinfo=UTC)
            out.append((optical, sar, "ascending", 78.0, 39.2))
        else:  # descending: heading ~192 deg, the radar looks ~west
            sar = datetime.combine(day - timedelta(days=2), time(5, 11, 40), tzinfo=UTC)
            out.append((optical, sar, "descending", 282.0, 34.6))
    return out


def render_archive(size: int, dates: int, seed: int, speckle: bool = True) -> RenderedArchive:
    """Render every product of the archive in memory (pure: no I/O), deterministic from `seed`."""
    grid = optical_grid(size)
    m = margin_px()
    terrain = synthetic.make_terrain((size + 2 * m, size + 2 * m), np.random.default_rng([seed, 0]))
    inner = (slice(m, m + size), slice(m, m + size))
    acquisitions = _acquisitions(dates)
    optical = [
        _optical_product(terrain, inner, grid, acq[0], i, np.random.default_rng([seed, 1, i]))
        for i, acq in enumerate(acquisitions)
    ]
    sar = [
        _sar_product(terrain, grid, acq, i, ref.item_id, speckle, np.random.default_rng([seed, 2, i]))
        for i, (acq, ref) in enumerate(zip(acquisitions, optical))
    ]
    rng = np.random.default_rng([seed, 3])
    dem30 = ndimage.uniform_filter(terrain.dem, 3)  # a 30 m posting averages 3 x 3 of the 10 m master
    pgrid = product_grid(grid, DEM_PAD_M, DEM_RES, rng)
    u = misregistration(terrain.dem, rng, (1.5, 3.0), 1.0)
    dem = Product(
        "dem",
        "synthetic-dem-30m",
        pgrid,
        datetime(2011, 1, 1, tzinfo=UTC),
        {"data": sample_displaced(dem30, u, m, optical_pixel_coords(grid, pgrid))},
        {"reference": optical[0].item_id},
        truth=invert_field(u, m, grid.shape),
        aligned=dem30[None, *inner],
    )
    return RenderedArchive(grid, (*optical, *sar, dem))


def _sar_product(
    terrain: synthetic.Terrain,
    grid: Grid,
    acquisition: tuple,
    index: int,
    reference: str,
    speckle: bool,
    rng: np.random.Generator,
) -> Product:
    _, when, orbit, look, incidence = acquisition
    m = margin_px()
    geometry = synthetic.SarGeometry(
        look, incidence, looks=4.4 if speckle else 0.0, season=_season(index), moisture=float(rng.uniform(-1, 1))
    )
    sigma0 = synthetic.sar_sigma0(terrain, geometry)
    pgrid = product_grid(grid, SAR_PAD_M, SAR_RES, rng)
    u = misregistration(terrain.dem, rng, (2.0, 4.0), rng.uniform(1.0, 2.0), rng.uniform(1.0, 1.5), look)
    moved = sample_displaced(sigma0, u, m, optical_pixel_coords(grid, pgrid))
    db = synthetic.speckle_db(moved, geometry.looks, rng)
    inner = (slice(m, m + grid.height), slice(m, m + grid.width))
    return Product(
        "sar",
        f"synthetic-sar-{when:%Y%m%dT%H%M%S}",
        pgrid,
        when,
        dict(zip(synthetic.SAR_BANDS, db)),
        {"orbit_state": orbit, "look_azimuth": look, "incidence": incidence, "reference": reference},
        truth=invert_field(u, m, grid.shape),
        aligned=10.0 * np.log10(sigma0[:, *inner]),
    )


def _season(index: int) -> float:
    """Growing-season phase of the `index`-th date (10 days apart): fields change between dates."""
    return 0.3 + 0.07 * index


def _optical_product(
    terrain: synthetic.Terrain,
    inner: tuple[slice, slice],
    grid: Grid,
    when: datetime,
    index: int,
    rng: np.random.Generator,
) -> Product:
    cloud = 0.02 if index % 2 else 0.0  # every other date has a few small clouds
    light = synthetic.Illumination(
        sun_azimuth=float(rng.uniform(145, 160)),
        sun_elevation=float(rng.uniform(55, 65)),
        season=_season(index),
        haze=float(rng.uniform(0.3, 0.8)),
        cloud_cover=cloud,
    )
    refl = synthetic.render_optical(synthetic.crop(terrain, inner), light, rng)
    props = {"cloud_cover": 100.0 * cloud, "sun_azimuth": light.sun_azimuth, "sun_elevation": light.sun_elevation}
    return Product(
        "optical",
        f"synthetic-optical-{when:%Y%m%dT%H%M%S}",
        grid,
        when,
        dict(zip(synthetic.OPTICAL_BANDS, refl)),
        props,
    )


# --- writing: COGs and the static STAC catalog --------------------------------------------------------


def write_cog(
    path: Path,
    bands: np.ndarray,
    grid: Grid,
    nodata: float | None,
    descriptions: tuple[str, ...],
    overviews: bool = True,
) -> None:
    """A Cloud-Optimized GeoTIFF: 512 px tiles, deflate with a predictor, average overviews.

    Deflate level 1: the archive is rebuilt on demand, and level 6 took twice as long for files only
    about 1% smaller (speckled SAR hardly compresses at all).
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    profile = dict(
        driver="COG",
        width=grid.width,
        height=grid.height,
        count=bands.shape[0],
        dtype=bands.dtype.name,
        crs=grid.crs_wkt,
        transform=grid.affine,
        nodata=nodata,
        compress="DEFLATE",
        level=1,
        predictor="YES",
        blocksize=512,
        overviews="AUTO" if overviews else "NONE",
        resampling="AVERAGE",
    )
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(bands)
        for i, text in enumerate(descriptions, start=1):
            dst.set_band_description(i, text)


@dataclass(frozen=True)
class BandFile:
    """One band of a product and the one-band GeoTIFF it goes to."""

    path: Path
    source: BandSource
    dtype: str
    nodata: float | None
    description: str


def write_bands(files: Sequence[BandFile], grid: Grid) -> pystac.MediaType:
    """Write a product's bands, one file each; the assets' media type.

    Whole arrays become COGs. Renderers are written as tiled GeoTIFFs (512 px blocks, deflate level 1 with a
    predictor, no overviews) one `WRITE_WINDOW` block at a time, every band of a window before the next window,
    so memory stays flat in the band's size and a renderer that draws all its product's bands at once (cached per
    window) draws each window once."""
    if all(isinstance(f.source, np.ndarray) for f in files):
        for f in files:
            write_cog(f.path, f.source[None].astype(f.dtype), grid, f.nodata, (f.description,))
        return pystac.MediaType.COG
    with ExitStack() as stack:
        targets = [(f, stack.enter_context(rasterio.open(f.path, "w", **_tiled_profile(f, grid)))) for f in files]
        for row in range(0, grid.height, WRITE_WINDOW):
            for col in range(0, grid.width, WRITE_WINDOW):
                window = Window(row, col, min(WRITE_WINDOW, grid.height - row), min(WRITE_WINDOW, grid.width - col))
                where = RasterWindow(col, row, window.width, window.height)
                for f, dst in targets:
                    values = f.source(window) if callable(f.source) else f.source[window.slices]
                    dst.write(values.astype(f.dtype), 1, window=where)
        for f, dst in targets:
            dst.set_band_description(1, f.description)
    return pystac.MediaType.GEOTIFF


def _tiled_profile(band: BandFile, grid: Grid) -> dict:
    band.path.parent.mkdir(parents=True, exist_ok=True)
    return dict(
        driver="GTiff",
        width=grid.width,
        height=grid.height,
        count=1,
        dtype=band.dtype,
        crs=grid.crs_wkt,
        transform=grid.affine,
        nodata=band.nodata,
        tiled=True,
        blockxsize=WRITE_WINDOW,
        blockysize=WRITE_WINDOW,
        compress="DEFLATE",
        zlevel=1,
        predictor=3 if np.dtype(band.dtype).kind == "f" else 2,
        bigtiff="IF_SAFER",
    )


def _to_dn(reflectance: BandSource) -> BandSource:
    """Reflectance as the archive's uint16 digital numbers (whole, or per window for a renderer)."""
    if not isinstance(reflectance, np.ndarray):
        return lambda window: _to_dn(reflectance(window))
    return np.clip(np.rint(reflectance / REFLECTANCE_SCALE), 1, 65535).astype(np.uint16)


def _to_lonlat(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    return Transformer.from_crs(EPSG, 4326, always_xy=True).transform(x, y)


def footprint(grid: Grid) -> dict:
    """The grid's outline as a lon/lat GeoJSON polygon (counter-clockwise, edges densified)."""
    left, bottom, right, top = grid.bounds
    t = np.linspace(0.0, 1.0, 5)[:-1]
    xs = np.concatenate([left + (right - left) * t, np.full(4, right), right - (right - left) * t, np.full(4, left)])
    ys = np.concatenate([np.full(4, bottom), bottom + (top - bottom) * t, np.full(4, top), top - (top - bottom) * t])
    lon, lat = _to_lonlat(xs, ys)
    ring = [[round(float(a), 7), round(float(b), 7)] for a, b in zip(lon, lat)]
    return {"type": "Polygon", "coordinates": [ring + ring[:1]]}


def footprint_bbox(grid: Grid) -> tuple[float, float, float, float]:
    """The lon/lat bbox (W, S, E, N) of a grid's footprint."""
    return tuple(_bbox(footprint(grid)))


def _bbox(geometry: dict) -> list[float]:
    ring = np.asarray(geometry["coordinates"][0])
    return [float(ring[:, 0].min()), float(ring[:, 1].min()), float(ring[:, 0].max()), float(ring[:, 1].max())]


def inner_bbox(grid: Grid, inset: float = 0.02) -> tuple[float, float, float, float]:
    """A lon/lat box wholly inside the grid's footprint (inset by a share of its size): the demo AOI."""
    left, bottom, right, top = grid.bounds
    dx, dy = (right - left) * inset, (top - bottom) * inset
    lon, lat = _to_lonlat(
        np.array([left + dx, right - dx, right - dx, left + dx]),
        np.array([bottom + dy, bottom + dy, top - dy, top - dy]),
    )
    return (
        round(float(max(lon[0], lon[3])), 6),
        round(float(max(lat[0], lat[1])), 6),
        round(float(min(lon[1], lon[2])), 6),
        round(float(min(lat[2], lat[3])), 6),
    )


def _proj(asset: pystac.Asset, grid: Grid) -> None:
    """Projection fields on an asset as real catalogs carry them (`proj:epsg` kept for stackstac)."""
    ProjectionExtension.ext(asset).apply(
        epsg=EPSG,
        shape=[grid.height, grid.width],
        transform=list(grid.transform),
        bbox=list(grid.bounds),
    )
    asset.extra_fields["proj:epsg"] = EPSG


def _asset(
    path: Path,
    grid: Grid,
    title: str,
    roles: list[str],
    band: RasterBand | None,
    media_type: str = pystac.MediaType.COG,
) -> pystac.Asset:
    asset = pystac.Asset(href=path.resolve().as_uri(), media_type=media_type, title=title, roles=roles)
    _proj(asset, grid)
    if band is not None:
        RasterExtension.ext(asset).apply([band])
    return asset


def _item(product: Product, properties: dict) -> pystac.Item:
    """An item with footprint, time and item-level projection; a DEM gets a production period instead."""
    geometry = footprint(product.grid)
    when = None if product.kind == "dem" else product.acquired
    if when is None:  # like the Copernicus DEM: acquired over years, searched by footprint only
        properties = {**properties, "start_datetime": _iso(product.acquired), "end_datetime": DEM_END}
    item = pystac.Item(
        product.item_id, geometry, _bbox(geometry), when, properties, collection=COLLECTIONS[product.kind]
    )
    ProjectionExtension.add_to(item)
    RasterExtension.add_to(item)
    item.properties["proj:code"] = f"EPSG:{EPSG}"
    item.properties["proj:epsg"] = EPSG
    return item


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _write_product(product: Product, folder: Path, reference: Grid) -> pystac.Item:
    """Write one product's rasters under `folder` and describe them as a STAC item."""
    if product.kind == "optical":
        return _optical_item(product, folder)
    if product.kind == "sar":
        item = _sar_item(product, folder)
    else:
        item = _item(product, {"platform": "dsmar-dem-sim", "constellation": "dsmar-synthetic", "gsd": DEM_RES})
        path = folder / "data.tif"
        media = write_bands([BandFile(path, product.bands["data"], "float32", float("nan"), "elevation")], product.grid)
        item.add_asset(
            "data",
            _asset(
                path,
                product.grid,
                "Elevation (m)",
                ["data"],
                RasterBand.create(
                    nodata=NoDataStrings.NAN, data_type=DataType.FLOAT32, unit="m", spatial_resolution=DEM_RES
                ),
                media,
            ),
        )
    if product.truth is None:
        return item
    path = folder / f"{TRUTH_KEY}.tif"
    write_cog(path, product.truth.astype(np.float32), reference, None, ("dy", "dx"), overviews=False)
    truth = _asset(
        path,
        reference,
        "Injected misregistration (Contract 1: dy, dx in optical pixels)",
        ["truth"],
        None,
        media_type=pystac.MediaType.GEOTIFF,
    )
    RasterExtension.ext(truth).apply([RasterBand.create(data_type=DataType.FLOAT32, unit="pixel") for _ in "yx"])
    truth.description = "Band 1 dy, band 2 dx: optical pixel (y, x) shows this item at (y + dy, x + dx)."
    truth.extra_fields["dsmar:reference_item"] = product.properties["reference"]
    item.add_asset(TRUTH_KEY, truth)
    return item


def _optical_item(product: Product, folder: Path) -> pystac.Item:
    p = product.properties
    item = _item(
        product,
        {
            "platform": "dsmar-optical-sim",
            "constellation": "dsmar-synthetic",
            "instruments": ["msi"],
            "gsd": OPTICAL_RES,
        },
    )
    ViewExtension.ext(item, add_if_missing=True).apply(
        sun_azimuth=round(p["sun_azimuth"], 2), sun_elevation=round(p["sun_elevation"], 2)
    )
    EOExtension.ext(item, add_if_missing=True).cloud_cover = round(p["cloud_cover"], 2)
    files = [
        BandFile(folder / f"{key}.tif", _to_dn(product.bands[key]), "uint16", 0, key) for key, *_ in OPTICAL_ASSETS
    ]
    media = write_bands(files, product.grid)
    for (key, name, centre, fwhm), f in zip(OPTICAL_ASSETS, files):
        asset = _asset(
            f.path,
            product.grid,
            f"{key.capitalize()} reflectance",
            ["data", "reflectance"],
            RasterBand.create(
                nodata=0, data_type=DataType.UINT16, scale=REFLECTANCE_SCALE, offset=0.0, spatial_resolution=OPTICAL_RES
            ),
            media,
        )
        EOExtension.ext(asset).apply(
            bands=[Band.create(name=name, common_name=key, center_wavelength=centre, full_width_half_max=fwhm)]
        )
        item.add_asset(key, asset)
    return item


def _sar_item(product: Product, folder: Path) -> pystac.Item:
    p = product.properties
    item = _item(
        product,
        {"platform": "dsmar-sar-sim", "constellation": "dsmar-synthetic", "instruments": ["c-sar"], "gsd": SAR_RES},
    )
    ViewExtension.ext(item, add_if_missing=True).apply(incidence_angle=p["incidence"])
    SarExtension.ext(item, add_if_missing=True).apply(
        instrument_mode="IW",
        frequency_band=FrequencyBand.C,
        polarizations=[Polarization.VV, Polarization.VH],
        product_type="GRD",
        center_frequency=5.405,
        resolution_range=20.0,
        resolution_azimuth=22.0,
        pixel_spacing_range=SAR_RES,
        pixel_spacing_azimuth=SAR_RES,
        looks_range=5,
        looks_azimuth=1,
        looks_equivalent_number=4.4,
        observation_direction=ObservationDirection.RIGHT,
    )
    sat = SatExtension.ext(item, add_if_missing=True)
    sat.orbit_state = OrbitState(p["orbit_state"])
    sat.relative_orbit = 146 if p["orbit_state"] == "ascending" else 95
    keys = ("vv", "vh")
    files = [BandFile(folder / f"{key}.tif", product.bands[key], "float32", float("nan"), key) for key in keys]
    media = write_bands(files, product.grid)
    for key, f in zip(keys, files):
        asset = _asset(
            f.path,
            product.grid,
            f"{key.upper()} backscatter (dB)",
            ["data", "backscatter"],
            RasterBand.create(
                nodata=NoDataStrings.NAN, data_type=DataType.FLOAT32, unit="dB", spatial_resolution=SAR_RES
            ),
            media,
        )
        asset.extra_fields["sar:polarizations"] = [key.upper()]
        item.add_asset(key, asset)
    return item


def _collection(kind: str, items: list[pystac.Item], description: str) -> pystac.Collection:
    boxes = np.array([item.bbox for item in items])
    times = [
        t
        for item in items
        for t in (item.datetime, item.common_metadata.start_datetime, item.common_metadata.end_datetime)
        if t is not None
    ]
    extent = pystac.Extent(
        pystac.SpatialExtent([[*boxes[:, :2].min(axis=0).tolist(), *boxes[:, 2:].max(axis=0).tolist()]]),
        pystac.TemporalExtent([[min(times), max(times)]]),
    )
    collection = pystac.Collection(
        COLLECTIONS[kind], description, extent, license="CC0-1.0", title=f"dsmar demo: synthetic {kind}"
    )
    collection.add_items(items)
    return collection


def write_catalog(rendered: RenderedArchive, root: Path) -> pystac.Catalog:
    """Write every product as COGs next to its item JSON and save a self-contained static catalog.

    Items live at root/<collection>/<item>/<item>.json (pystac's layout), their rasters beside them;
    asset hrefs are absolute file:// URLs so a STAC API serving the items still points at the files.
    """
    items = [
        _write_product(p, root / COLLECTIONS[p.kind] / p.item_id, rendered.optical_grid) for p in rendered.products
    ]
    catalog = pystac.Catalog(
        "dsmar-demo",
        "dsmar demo archive: synthetic co-located optical, SAR and DEM "
        "scenes with known injected misregistration (truth_displacement assets).",
        title="dsmar demo archive",
    )
    descriptions = {
        "optical": "Synthetic 4-band surface reflectance (uint16, scale 1e-4), 10 m, the registration reference.",
        "sar": "Synthetic C-band VV/VH backscatter (dB) with speckle, 10 m, misregistered by a known field.",
        "dem": "Synthetic elevation (m), 30 m, misregistered by a known field.",
    }
    for kind, description in descriptions.items():
        catalog.add_child(
            _collection(kind, [i for i, p in zip(items, rendered.products) if p.kind == kind], description)
        )
    catalog.normalize_hrefs(str(root))
    catalog.save(pystac.CatalogType.SELF_CONTAINED)
    return catalog


# --- the entry point ----------------------------------------------------------------------------------


# The archive's identity in its manifest: data written by earlier versions carries it, so it stays the
# same whichever module writes the archive.
GENERATOR = "dsmar.demo_archive"


def _manifest(size: int, dates: int, seed: int) -> dict:
    return {"generator": GENERATOR, "version": ARCHIVE_VERSION, "size": size, "dates": dates, "seed": seed}


def existing_archive(root: Path, wanted: dict) -> ArchiveInfo | None:
    """The archive already under `root` when it was made with the parameters `wanted` and is complete."""
    try:
        manifest = json.loads((root / "manifest.json").read_text())
        info = ArchiveInfo.from_json(manifest["info"])
    except (OSError, ValueError, KeyError, TypeError):
        return None
    if manifest.get("parameters") != wanted or info.root != root or not info.catalog.exists():
        return None
    return info


def generate_archive(root: Path, size: int = 1536, dates: int = 2, seed: int = 0) -> ArchiveInfo:
    """Generate (or reuse) the demo archive under `root`; `size` optical pixels a side, `dates` dates.

    Idempotent: an archive made with the same parameters (root/manifest.json) is returned as is.
    """
    if not isinstance(size, int) or size < MIN_SIZE:
        raise InputError(f"the demo archive needs size >= {MIN_SIZE} optical pixels, got {size!r}")
    if not isinstance(dates, int) or dates < 1:
        raise InputError(f"the demo archive needs at least one date, got {dates!r}")
    root = check_writable_dir(Path(root).expanduser().resolve(), "demo archive root")
    wanted = _manifest(size, dates, seed)
    existing = existing_archive(root, wanted)
    if existing is not None:
        return existing
    clear_archive(root)
    rendered = render_archive(size, dates, seed)
    write_catalog(rendered, root)
    products = rendered.products
    times = [p.acquired.date() for p in products if p.kind != "dem"]
    info = ArchiveInfo(
        root=root,
        catalog=root / "catalog.json",
        bbox=inner_bbox(rendered.optical_grid),
        optical_bbox=footprint_bbox(rendered.optical_grid),
        start=min(times),
        end=max(times),
        optical_item_ids=tuple(p.item_id for p in products if p.kind == "optical"),
        sar_item_ids=tuple(p.item_id for p in products if p.kind == "sar"),
        dem_item_ids=tuple(p.item_id for p in products if p.kind == "dem"),
        size=size,
        dates=dates,
        seed=seed,
    )
    write_manifest(root, wanted, info)
    return info


def clear_archive(root: Path) -> None:
    """Delete what an archive writes under `root` (its manifest first: a half-cleared archive is never reused)."""
    for stale in ("manifest.json", "catalog.json", *COLLECTIONS.values()):
        path = root / stale
        if path.is_dir():
            shutil.rmtree(path)
        elif path.exists():
            path.unlink()


def write_manifest(root: Path, parameters: dict, info: ArchiveInfo) -> None:
    """Written last: an archive with a manifest is complete (`existing_archive`)."""
    (root / "manifest.json").write_text(json.dumps({"parameters": parameters, "info": info.to_json()}, indent=2))

"""Archives for the speed benchmark (`dsmar bench speed`): co-located optical, SAR and DEM scenes of any size up
to a full Sentinel-2 tile (10980 px a side), rendered and written window by window, so the generator's memory
stays flat in scene size (a whole 10980 px float32 band is 480 MB).

The landscape is a function of position in optical pixels, so any window of any product renders on its own:
elevation and woodland interpolated from random fields drawn `COARSE` times coarser than the optical grid,
cadastral parcels from a rotated grid of strips (sharp edges), fine texture drawn per window. The radiometry is
`datagen.synthetic`'s (land-cover spectra with hillshade; SAR backscatter from the local incidence angle, with
speckle). The SAR and the 30 m DEM are the landscape seen at the optical position moved by a known smooth field,
on grids of their own (the demo archive's geometry, `datagen.demo_archive`).

One date: the benchmark measures cost, which grows with the dates linearly. The archive carries no truth assets:
accuracy is the demo's and the accuracy benchmark's job, and without truth the flow reads no whole-scene array.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from pathlib import Path

import numpy as np

from datagen import synthetic
from datagen.demo_archive import (
    DEM_PAD_M,
    DEM_RES,
    OPTICAL_RES,
    SAR_PAD_M,
    ArchiveInfo,
    Product,
    RenderedArchive,
    clear_archive,
    existing_archive,
    footprint_bbox,
    inner_bbox,
    margin_px,
    optical_grid,
    product_grid,
    write_catalog,
    write_manifest,
)
from kernel.errors import InputError
from kernel.paths import check_writable_dir
from kernel.warp import sample
from pipeline.grid import Grid
from pipeline.tiles import Window

GENERATOR = "dsmar.speed_archive"
VERSION = 1  # bump when the generator changes what it writes: cached archives of another version are rebuilt
SIZES = {"1k": 1024, "4k": 4096, "full": 10980}  # named sizes (optical pixels a side); full: a Sentinel-2 tile
MIN_SIZE = 256
COARSE = 8  # optical pixels per sample of the smooth random fields
AOI_INSET = 0.005  # the AOI lies this share of the scene inside the optical footprint (a UTM square is no lon/lat box)
ACQUIRED = datetime(2024, 6, 4, 10, 6, 31, tzinfo=UTC)
SAR_ACQUIRED = datetime(2024, 6, 5, 16, 58, 12, tzinfo=UTC)
LIGHT = synthetic.Illumination(sun_azimuth=152.0, sun_elevation=60.0, season=0.4, haze=0.5)
RADAR = synthetic.SarGeometry(look_azimuth=78.0, incidence=39.2, season=0.41, moisture=0.2)
# The known misregistration (optical pixels): a shift plus a smooth wave, per moving product.
SAR_SHIFT, DEM_SHIFT, WAVE_PX, WAVELENGTH_PX = (2.3, -1.6), (-1.8, 2.1), 0.8, 900.0


def size_of(name: str) -> int:
    """Optical pixels a side of a named size (`SIZES`) or of a number of at least `MIN_SIZE`."""
    size = SIZES.get(name, None)
    if size is None:
        try:
            size = int(name)
        except ValueError:
            raise InputError(f"unknown size {name!r}: give one of {', '.join(SIZES)} or a number of pixels") from None
    if size < MIN_SIZE:
        raise InputError(f"the speed archive needs at least {MIN_SIZE} pixels a side, got {size}")
    return size


def _hash(a: np.ndarray, b: np.ndarray, salt: int) -> np.ndarray:
    """A deterministic uniform number in [0, 1) per integer pair (a, b): per-parcel properties without a table."""
    x = (a.astype(np.uint64) * np.uint64(73856093)) ^ (b.astype(np.uint64) * np.uint64(19349663)) ^ np.uint64(salt)
    x = (x ^ (x >> np.uint64(13))) * np.uint64(0x5BD1E995)
    x ^= x >> np.uint64(15)
    return ((x & np.uint64(0xFFFFFF)).astype(np.float64) / float(1 << 24)).astype(np.float32)


@dataclass(frozen=True)
class Landscape:
    """The landscape at any optical-pixel position: the coarse random fields and the parcel strips."""

    origin: float  # optical pixel coordinate (row and column) of the coarse fields' first sample
    elevation: np.ndarray  # (n, n) metres, every `COARSE` optical pixels
    woods: np.ndarray  # (n, n) woodland score; above `woods_level` is forest
    woods_level: float
    water_level: float
    angle: float  # of the parcel strips
    edges_u: np.ndarray  # strip edges along the two strip directions, optical pixels
    edges_v: np.ndarray
    seed: int

    @classmethod
    def generate(cls, size: int, seed: int) -> Landscape:
        margin = margin_px() + COARSE
        n = (size + 2 * margin) // COARSE + 2
        rng = np.random.default_rng([seed, 7])
        spacing = COARSE * OPTICAL_RES
        base = synthetic.spectral_noise((n, n), rng, beta=3.8, pixel_size=spacing, cutoff_m=12000.0)
        hills = synthetic.spectral_noise((n, n), rng, beta=3.2, pixel_size=spacing, cutoff_m=2500.0)
        relief = base + 0.35 * hills
        elevation = (150.0 + 700.0 * (relief - relief.min()) / max(float(np.ptp(relief)), 1e-6)).astype(np.float32)
        woods = (0.8 * (elevation - elevation.mean()) / max(float(elevation.std()), 1e-6)) + synthetic.spectral_noise(
            (n, n), rng, beta=3.0, pixel_size=spacing, cutoff_m=1500.0
        )
        span = 2.0 * (size + 2 * margin)

        def edges(low_m: float, high_m: float) -> np.ndarray:
            widths = rng.uniform(low_m, high_m, size=int(span * OPTICAL_RES / low_m) + 2) / OPTICAL_RES
            return (np.cumsum(widths) - span).astype(np.float32)

        return cls(
            origin=-float(margin),
            elevation=elevation,
            woods=woods.astype(np.float32),
            woods_level=float(np.quantile(woods, 0.65)),
            water_level=float(np.quantile(elevation, 0.03)),
            angle=float(rng.uniform(0, np.pi / 2)),
            edges_u=edges(120.0, 450.0),
            edges_v=edges(80.0, 300.0),
            seed=seed,
        )

    def terrain(self, coords: np.ndarray, pixel_size: float, rng: np.random.Generator) -> synthetic.Terrain:
        """The landscape at optical-pixel positions `coords` (2, h, w), as a terrain of `pixel_size` metres."""
        coarse = (coords - self.origin) / COARSE
        dem = sample(self.elevation, coarse)
        woods = sample(self.woods, coarse)
        rows, cols = coords
        u = cols * np.cos(self.angle) + rows * np.sin(self.angle)
        v = -cols * np.sin(self.angle) + rows * np.cos(self.angle)
        iu, iv = np.searchsorted(self.edges_u, u), np.searchsorted(self.edges_v, v)
        # Parcels numbered within the window; their class and phenology hash from the global (iu, iv).
        u0, v0 = int(iu.min()), int(iv.min())
        n_v = int(iv.max()) - v0 + 1
        grid_u, grid_v = np.divmod(np.arange((int(iu.max()) - u0 + 1) * n_v), n_v)
        classes = np.array([synthetic.CROP, synthetic.GRASS, synthetic.BARE], np.uint8)
        parcel_class = classes[np.searchsorted([0.6, 0.9], _hash(grid_u + u0, grid_v + v0, self.seed))]
        parcel = ((iu - u0) * n_v + (iv - v0)).astype(np.int32)
        landcover = parcel_class[parcel]
        landcover[woods > self.woods_level] = synthetic.FOREST
        landcover[dem <= self.water_level] = synthetic.WATER
        return synthetic.Terrain(
            dem=dem,
            landcover=landcover,
            parcel=parcel,
            parcel_phase=_hash(grid_u + u0, grid_v + v0, self.seed + 1),
            texture=synthetic.fine_noise(dem.shape, rng),
            pixel_size=pixel_size,
        )


def misregistration(coords: np.ndarray, shift: tuple[float, float]) -> np.ndarray:
    """The known field u (optical pixels) at `coords`: a moving product shows at q the landscape at q + u(q)."""
    rows, cols = coords
    phase = 2 * np.pi / WAVELENGTH_PX
    return np.stack([shift[0] + WAVE_PX * np.sin(phase * cols), shift[1] + WAVE_PX * np.cos(phase * rows)]).astype(
        np.float32
    )


def _coords(optical: Grid, grid: Grid, window: Window) -> np.ndarray:
    """(2, h, w) optical-pixel (row, col) positions of the centres of `window`'s pixels on `grid`."""
    rows = (optical.transform[5] - grid.y_coords()[window.slices[0]]) / OPTICAL_RES - 0.5
    cols = (grid.x_coords()[window.slices[1]] - optical.transform[2]) / OPTICAL_RES - 0.5
    return np.stack(np.meshgrid(rows, cols, indexing="ij")).astype(np.float32)


def _window_rng(seed: int, product: int, window: Window) -> np.random.Generator:
    return np.random.default_rng([seed, product, window.row, window.col])


def _bands(render, keys: tuple[str, ...]) -> dict:
    """Per-band renderers of a product whose `render(window)` draws all its bands at once (cached per window,
    so writing its bands window by window draws each window once)."""
    cached = lru_cache(maxsize=1)(render)
    return {key: (lambda window, k=k: cached(window)[k]) for k, key in enumerate(keys)}


def render_speed_archive(size: int, seed: int) -> RenderedArchive:
    """The archive's products with windowed renderers (nothing is drawn until a window is asked for)."""
    grid = optical_grid(size)
    land = Landscape.generate(size, seed)
    rng = np.random.default_rng([seed, 8])
    sar_grid = product_grid(grid, SAR_PAD_M, OPTICAL_RES, rng)
    dem_grid = product_grid(grid, DEM_PAD_M, DEM_RES, rng)

    def optical(window: Window) -> np.ndarray:
        coords = _coords(grid, grid, window)
        return synthetic.render_optical(land.terrain(coords, OPTICAL_RES, _window_rng(seed, 0, window)), LIGHT, None)

    def sar(window: Window) -> np.ndarray:
        coords = _coords(grid, sar_grid, window)
        rng = _window_rng(seed, 1, window)
        terrain = land.terrain(coords + misregistration(coords, SAR_SHIFT), OPTICAL_RES, rng)
        return synthetic.speckle_db(synthetic.sar_sigma0(terrain, RADAR), RADAR.looks, rng)

    def dem(window: Window) -> np.ndarray:
        coords = _coords(grid, dem_grid, window)
        terrain = land.terrain(coords + misregistration(coords, DEM_SHIFT), DEM_RES, _window_rng(seed, 2, window))
        return terrain.dem[None]

    optical_id = f"speed-optical-{size}-{ACQUIRED:%Y%m%dT%H%M%S}"
    products = (
        Product(
            "optical",
            optical_id,
            grid,
            ACQUIRED,
            _bands(optical, synthetic.OPTICAL_BANDS),
            {"cloud_cover": 0.0, "sun_azimuth": LIGHT.sun_azimuth, "sun_elevation": LIGHT.sun_elevation},
        ),
        Product(
            "sar",
            f"speed-sar-{size}-{SAR_ACQUIRED:%Y%m%dT%H%M%S}",
            sar_grid,
            SAR_ACQUIRED,
            _bands(sar, synthetic.SAR_BANDS),
            {"orbit_state": "ascending", "look_azimuth": RADAR.look_azimuth, "incidence": RADAR.incidence},
        ),
        Product("dem", f"speed-dem-{size}", dem_grid, datetime(2011, 1, 1, tzinfo=UTC), _bands(dem, ("data",)), {}),
    )
    return RenderedArchive(grid, products)


def generate_speed_archive(root: Path, size: int, seed: int = 0) -> ArchiveInfo:
    """Generate (or reuse: same size, seed and `VERSION` in root/manifest.json) the speed archive under `root`."""
    root = check_writable_dir(Path(root).expanduser().resolve(), "speed archive root")
    wanted = {"generator": GENERATOR, "version": VERSION, "size": size, "seed": seed}
    existing = existing_archive(root, wanted)
    if existing is not None:
        return existing
    clear_archive(root)
    rendered = render_speed_archive(size, seed)
    write_catalog(rendered, root)
    ids = {kind: tuple(p.item_id for p in rendered.products if p.kind == kind) for kind in ("optical", "sar", "dem")}
    info = ArchiveInfo(
        root=root,
        catalog=root / "catalog.json",
        bbox=inner_bbox(rendered.optical_grid, AOI_INSET),
        optical_bbox=footprint_bbox(rendered.optical_grid),
        start=ACQUIRED.date(),
        end=SAR_ACQUIRED.date(),
        optical_item_ids=ids["optical"],
        sar_item_ids=ids["sar"],
        dem_item_ids=ids["dem"],
        size=size,
        dates=1,
        seed=seed,
    )
    write_manifest(root, wanted, info)
    return info

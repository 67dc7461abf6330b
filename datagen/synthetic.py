"""Synthetic co-located optical, SAR and DEM scenes: one procedural landscape seen by three sensors.

The three modalities share geometry (terrain, land-cover boundaries) but not radiometry: optical
reflectance follows land-cover spectra and sun hillshade, SAR backscatter follows the local incidence
angle of a side-looking radar plus land-cover scattering and speckle, the DEM is the elevation itself.
Registering them is therefore a multimodal problem, not a copy. Pure numpy/scipy, deterministic from
the generator passed in, and fast (about a second per modality for 1536 x 1536 on one core).

Conventions: arrays are (H, W) or (C, H, W) with row 0 at the north edge; directions are azimuths in
degrees clockwise from north; a terrain normal is (east, north, up).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import fft, ndimage

# Land-cover classes (values of `Terrain.landcover`).
WATER, FOREST, GRASS, CROP, BARE, ROAD, URBAN = range(7)
CLASS_NAMES = ("water", "forest", "grass", "crop", "bare", "road", "urban")
OPTICAL_BANDS = ("blue", "green", "red", "nir")
SAR_BANDS = ("vv", "vh")

# Surface reflectance (blue, green, red, nir) per class, typical of Sentinel-2 L2A over Europe.
_SPECTRA = np.array(
    [
        [0.055, 0.050, 0.030, 0.015],  # water
        [0.022, 0.045, 0.025, 0.280],  # forest
        [0.040, 0.080, 0.050, 0.340],  # grass (green end member)
        [0.035, 0.070, 0.040, 0.420],  # crop (green end member)
        [0.095, 0.125, 0.165, 0.240],  # bare soil
        [0.090, 0.100, 0.110, 0.130],  # asphalt
        [0.120, 0.130, 0.150, 0.200],  # built-up
    ],
    dtype=np.float32,
)
_SOIL = _SPECTRA[BARE]
_ROOF_TILE = np.array([0.080, 0.090, 0.190, 0.260], dtype=np.float32)
# C-band backscatter (VV, VH) in dB at a 35 degree local incidence angle.
_SIGMA0_DB = np.array(
    [[-21.0, -28.0], [-7.5, -13.5], [-10.5, -18.0], [-9.5, -16.5], [-11.0, -21.0], [-15.0, -24.0], [2.0, -6.0]],
    dtype=np.float32,
)
# Angular falloff exponent n in sigma0 ~ cos(theta_local)^n: water is specular, forest a volume.
_COS_EXPONENT = np.array([4.0, 1.0, 2.0, 2.0, 2.5, 3.0, 1.0], dtype=np.float32)
_NOISE_FLOOR = 10 ** (-25.0 / 10.0)
_REF_INCIDENCE = np.deg2rad(35.0)


@dataclass(frozen=True)
class Terrain:
    """The static landscape: elevation, land cover and agricultural parcels (per-parcel phenology)."""

    dem: np.ndarray  # (H, W) float32 metres
    landcover: np.ndarray  # (H, W) uint8, classes above
    parcel: np.ndarray  # (H, W) int32 parcel index, for per-field variation between dates
    parcel_phase: np.ndarray  # (n_parcels,) float32 in [0, 1): when in the season each field greens up
    texture: np.ndarray  # (H, W) float32, zero-mean unit-variance fine texture (canopy, soil)
    pixel_size: float


@dataclass(frozen=True)
class Illumination:
    """One optical acquisition: sun position, season (0..1, fraction of the growing cycle), haze, clouds."""

    sun_azimuth: float = 150.0
    sun_elevation: float = 50.0
    season: float = 0.4
    haze: float = 0.5
    cloud_cover: float = 0.0


@dataclass(frozen=True)
class SarGeometry:
    """One SAR acquisition: look azimuth (sensor towards ground), incidence at scene centre, looks,
    and the state of the ground (season as in `Illumination`, soil moisture)."""

    look_azimuth: float = 78.0  # ascending, right-looking: the radar looks roughly east
    incidence: float = 37.0
    looks: float = 4.4  # equivalent number of looks of the speckle; 0 disables speckle
    season: float = 0.4
    moisture: float = 0.0  # -1..1 shifts field and grass backscatter between dates


@dataclass(frozen=True)
class SyntheticScene:
    """One scene on one grid: optical (4, H, W) reflectance, sar (2, H, W) dB, dem (H, W) metres."""

    optical: np.ndarray
    sar: np.ndarray
    dem: np.ndarray
    landcover: np.ndarray


def spectral_noise(
    shape: tuple[int, int], rng: np.random.Generator, beta: float, pixel_size: float, cutoff_m: float
) -> np.ndarray:
    """Gaussian noise with power spectrum (f^2 + f0^2)^(-beta/2), f0 = 1/cutoff_m; zero mean, unit std.

    beta about 3 gives natural-looking terrain (fractional Brownian surface); larger is smoother.
    """
    h, w = shape
    fy = fft.fftfreq(h, d=pixel_size).astype(np.float32)[:, None]
    fx = fft.rfftfreq(w, d=pixel_size).astype(np.float32)[None, :]
    amplitude = (fy**2 + fx**2 + (1.0 / cutoff_m) ** 2) ** (-beta / 4.0)
    spectrum = fft.rfft2(rng.standard_normal(shape, dtype=np.float32), workers=-1) * amplitude
    field = fft.irfft2(spectrum, s=shape, workers=-1).astype(np.float32)
    field -= field.mean()
    std = field.std()
    return field / std if std > 0 else field


def fine_noise(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Pixel-scale texture (slightly smoothed white noise), unit std."""
    field = ndimage.gaussian_filter(rng.standard_normal(shape, dtype=np.float32), 0.7)
    return field / max(float(field.std()), 1e-12)


def _curve_distance(shape: tuple[int, int], rng: np.random.Generator, wiggle_px: float) -> np.ndarray:
    """Approximate distance in pixels to a random meandering line crossing the scene."""
    h, w = shape
    angle = rng.uniform(0, np.pi)
    yy, xx = np.ogrid[: float(h), : float(w)]
    cy, cx = (h - 1) / 2, (w - 1) / 2
    s = ((xx - cx) * np.cos(angle) + (yy - cy) * np.sin(angle)).astype(np.float32)  # along the line
    t = (-(xx - cx) * np.sin(angle) + (yy - cy) * np.cos(angle)).astype(np.float32)  # across it
    # The centre line and its slope, tabulated along the line and looked up per pixel (cheap).
    table = np.arange(-(h + w) / 2 - 2, (h + w) / 2 + 2, 0.5)
    centre = np.full_like(table, rng.uniform(-0.3, 0.3) * min(h, w))
    slope = np.zeros_like(table)
    for _ in range(3):
        wavelength = rng.uniform(0.3, 1.2) * max(h, w)
        k, phase = 2 * np.pi / wavelength, rng.uniform(0, 2 * np.pi)
        amp = wiggle_px * rng.uniform(0.3, 1.0)
        centre += amp * np.sin(k * table + phase)
        slope += amp * k * np.cos(k * table + phase)
    norm = 1.0 / np.sqrt(1.0 + slope**2)
    return (np.abs(t - np.interp(s, table, centre)) * np.interp(s, table, norm)).astype(np.float32)


def _parcels(shape: tuple[int, int], rng: np.random.Generator, pixel_size: float) -> np.ndarray:
    """Parcel index of each pixel: a rotated cadastral grid of strips with random widths (sharp edges)."""
    h, w = shape
    angle = rng.uniform(0, np.pi / 2)
    yy, xx = np.ogrid[:h, :w]
    u = xx * np.cos(angle) + yy * np.sin(angle)
    v = -xx * np.sin(angle) + yy * np.cos(angle)
    span = float(h + w)

    def edges(low_m: float, high_m: float) -> np.ndarray:
        widths = rng.uniform(low_m, high_m, size=int(span * pixel_size / low_m) + 2) / pixel_size
        return np.cumsum(widths) - span

    eu, ev = edges(120.0, 450.0), edges(80.0, 300.0)
    iu = np.searchsorted(eu, np.broadcast_to(u, (h, w)))
    iv = np.searchsorted(ev, np.broadcast_to(v, (h, w)))
    return (iu * (len(ev) + 1) + iv).astype(np.int32)


def make_terrain(
    shape: tuple[int, int], rng: np.random.Generator, pixel_size: float = 10.0, relief_m: float = 800.0
) -> Terrain:
    """A hilly landscape with ridges, a river valley, lakes, forest, fields, roads and villages.

    The relief is `relief_m` for a scene 15 km across and shrinks for smaller scenes, so slopes stay
    realistic at any size.
    """
    h, w = shape
    extent = max(h, w) * pixel_size
    base = spectral_noise(shape, rng, beta=3.8, pixel_size=pixel_size, cutoff_m=12000.0)
    ridge_src = spectral_noise(shape, rng, beta=3.6, pixel_size=pixel_size, cutoff_m=3000.0)
    # Ridged noise (creases where the noise crosses zero), rounded a little so crests are not knife edges.
    ridges = ndimage.gaussian_filter((1.0 - np.abs(np.tanh(ridge_src))) ** 2, 20.0 / pixel_size)
    z = base + 0.7 * ridges * (1.0 / (1.0 + np.exp(-2.0 * base)))
    z = (z - z.min()) / max(float(np.ptp(z)), 1e-6)
    z = z**1.5  # flatter lowlands, steeper uplands
    # A river valley with a flat floor, carved across the scene.
    dist = _curve_distance(shape, rng, wiggle_px=0.08 * max(h, w))
    valley = np.exp(-((dist * pixel_size / rng.uniform(500.0, 900.0)) ** 2))
    floor = float(np.quantile(z, 0.08))
    z = z * (1.0 - valley) + floor * valley
    relief = relief_m * min(1.0, extent / 15000.0) ** 0.8
    dem = (rng.uniform(80.0, 250.0) + relief * (z - z.min()) / max(float(np.ptp(z)), 1e-6)).astype(np.float32)

    gy, gx = np.gradient(ndimage.uniform_filter(dem, 5), pixel_size)
    slope_deg = np.degrees(np.arctan(np.hypot(gx, gy)))
    elev = (dem - dem.min()) / max(float(np.ptp(dem)), 1e-6)
    patches = spectral_noise(shape, rng, beta=3.0, pixel_size=pixel_size, cutoff_m=1500.0)
    texture = fine_noise(shape, rng)

    parcel = _parcels(shape, rng, pixel_size)
    n_parcels = int(parcel.max()) + 1
    parcel_class = rng.choice(np.array([CROP, GRASS, BARE], dtype=np.uint8), size=n_parcels, p=[0.6, 0.3, 0.1])
    landcover = parcel_class[parcel]
    forest_score = 1.2 * elev + 0.04 * slope_deg + 0.35 * patches
    landcover[forest_score > np.quantile(forest_score, 0.62)] = FOREST
    lake_level = float(np.quantile(dem, 0.03))
    water = ((dem <= lake_level + 0.5) & (slope_deg < 2.0)) | (dist < rng.uniform(1.5, 3.0) * 10.0 / pixel_size)
    landcover[water] = WATER

    # Villages on gentle, low, dry ground: blocks of buildings separated by streets.
    candidates = np.flatnonzero(((slope_deg < 5.0) & (elev < 0.4) & ~water).ravel())
    town = np.zeros(shape, dtype=bool)
    yy, xx = np.ogrid[:h, :w]
    for idx in rng.choice(candidates, size=min(len(candidates), int(rng.integers(2, 5))), replace=False):
        ty, tx = divmod(int(idx), w)
        radius = rng.uniform(250.0, 600.0) / pixel_size
        town |= np.hypot(yy - ty, xx - tx) + 0.15 * radius * patches < radius
    block = max(3, int(round(60.0 / pixel_size)))
    street = (yy % block == 0) | (xx % block == 0)
    landcover[town & ~water] = URBAN
    landcover[town & street & ~water] = ROAD
    for _ in range(int(rng.integers(2, 5))):
        landcover[_curve_distance(shape, rng, wiggle_px=0.05 * max(h, w)) < max(0.5, 8.0 / pixel_size)] = ROAD
    return Terrain(
        dem=dem,
        landcover=landcover.astype(np.uint8),
        parcel=parcel,
        parcel_phase=rng.uniform(0, 1, size=n_parcels).astype(np.float32),
        texture=texture,
        pixel_size=float(pixel_size),
    )


def crop(terrain: Terrain, window: tuple[slice, slice]) -> Terrain:
    """The part of a terrain inside a (rows, cols) window; parcels keep their phenology."""
    return Terrain(
        dem=terrain.dem[window],
        landcover=terrain.landcover[window],
        parcel=terrain.parcel[window],
        parcel_phase=terrain.parcel_phase,
        texture=terrain.texture[window],
        pixel_size=terrain.pixel_size,
    )


def surface_normals(dem: np.ndarray, pixel_size: float) -> np.ndarray:
    """Unit normals (3, H, W) as (east, north, up); rows run southwards."""
    d_row, d_col = np.gradient(dem.astype(np.float32), pixel_size)
    normal = np.stack([-d_col, d_row, np.ones_like(d_col)])  # d/dnorth = -d/drow
    return normal / np.linalg.norm(normal, axis=0, keepdims=True)


def _direction(azimuth_deg: float, elevation_deg: float) -> np.ndarray:
    """Unit vector (east, north, up) pointing at azimuth/elevation."""
    az, el = np.deg2rad(azimuth_deg), np.deg2rad(elevation_deg)
    return np.array([np.sin(az) * np.cos(el), np.cos(az) * np.cos(el), np.sin(el)], dtype=np.float32)


def hillshade(dem: np.ndarray, pixel_size: float, sun_azimuth: float, sun_elevation: float) -> np.ndarray:
    """Cosine of the sun incidence angle on the terrain, clipped at 0 (self-shadow)."""
    sun = _direction(sun_azimuth, sun_elevation)
    return np.clip(np.tensordot(sun, surface_normals(dem, pixel_size), axes=1), 0.0, 1.0)


def cos_local_incidence(dem: np.ndarray, pixel_size: float, geometry: SarGeometry) -> np.ndarray:
    """Cosine of the radar local incidence angle (negative where the slope faces away: shadow)."""
    to_sensor = _direction(geometry.look_azimuth + 180.0, 90.0 - geometry.incidence)
    return np.tensordot(to_sensor, surface_normals(dem, pixel_size), axes=1)


def _vegetation_fraction(terrain: Terrain, season: float) -> np.ndarray:
    """Green cover of each pixel's parcel at this point of the season, 0.05..0.95."""
    phase = terrain.parcel_phase[terrain.parcel]
    return np.clip(0.5 + 0.6 * np.sin(2 * np.pi * (season + phase)), 0.05, 0.95)


def render_optical(terrain: Terrain, light: Illumination, rng: np.random.Generator) -> np.ndarray:
    """Surface reflectance (4, H, W) float32 in 0..1: land-cover spectra, hillshade, haze, clouds."""
    lc = terrain.landcover
    refl = _SPECTRA[lc].transpose(2, 0, 1).copy()
    fields = (lc == CROP) | (lc == GRASS)
    veg = _vegetation_fraction(terrain, light.season)[fields]
    refl[:, fields] = veg * refl[:, fields] + (1.0 - veg) * _SOIL[:, None]
    roofs = (lc == URBAN) & (terrain.texture > 0.3)
    refl[:, roofs] = _ROOF_TILE[:, None]
    texture_gain = np.where(lc == FOREST, 0.18, 0.05).astype(np.float32)
    refl *= 1.0 + texture_gain * terrain.texture
    ambient = 0.25
    sun_cos = hillshade(terrain.dem, terrain.pixel_size, light.sun_azimuth, light.sun_elevation)
    shading = ambient + (1.0 - ambient) * sun_cos / np.sin(np.deg2rad(light.sun_elevation))
    out = refl * shading + (light.haze * np.array([0.03, 0.02, 0.012, 0.006], dtype=np.float32))[:, None, None]
    if light.cloud_cover > 0:
        out = _add_clouds(out, terrain.pixel_size, light, rng)
    return np.clip(out, 1e-4, 1.0).astype(np.float32)


def cloud_opacity(shape: tuple[int, int], pixel_size: float, cover: float, rng: np.random.Generator) -> np.ndarray:
    """Opacity 0..1 of small cumulus clouds covering about `cover` of the scene."""
    field = spectral_noise(shape, rng, beta=3.6, pixel_size=pixel_size, cutoff_m=1500.0)
    threshold = float(np.quantile(field, 1.0 - cover))
    return np.clip((field - threshold) / 0.6, 0.0, 1.0).astype(np.float32)


def _add_clouds(image: np.ndarray, pixel_size: float, light: Illumination, rng: np.random.Generator) -> np.ndarray:
    alpha = cloud_opacity(image.shape[1:], pixel_size, light.cloud_cover, rng)
    # Shadows fall away from the sun, displaced by cloud height / tan(sun elevation).
    reach = rng.uniform(800.0, 2000.0) / np.tan(np.deg2rad(light.sun_elevation)) / pixel_size
    az = np.deg2rad(light.sun_azimuth)
    shadow = ndimage.shift(alpha, (reach * np.cos(az), -reach * np.sin(az)), order=1, mode="constant")
    cloud_refl = np.array([0.45, 0.47, 0.48, 0.52], dtype=np.float32)[:, None, None]
    shaded = image * (1.0 - 0.6 * shadow)
    return shaded * (1.0 - alpha) + alpha * cloud_refl


def sar_sigma0(terrain: Terrain, geometry: SarGeometry) -> np.ndarray:
    """Mean backscatter (2, H, W) float32, linear power, without speckle (VV, VH).

    Land-cover scattering at 35 degrees, scaled by cos(local incidence)^n per class, times the
    ground-range area factor sin(theta)/sin(theta_local) that brightens slopes facing the radar
    (a GRD-like product, not terrain-flattened); radar shadow falls to the noise floor.
    """
    lc = terrain.landcover
    db = _SIGMA0_DB[lc].transpose(2, 0, 1).copy()
    fields = (lc == CROP) | (lc == GRASS)
    veg = _vegetation_fraction(terrain, geometry.season)[fields]
    db[:, fields] += (2.5 * (veg - 0.5) + 1.5 * geometry.moisture)[None]
    db += (np.where(lc == FOREST, 1.0, 0.3) * terrain.texture)[None]
    cos_li = cos_local_incidence(terrain.dem, terrain.pixel_size, geometry)
    shadow = cos_li < 0.05
    cos_li = np.clip(cos_li, 0.05, 1.0)
    falloff = (cos_li / np.cos(_REF_INCIDENCE)) ** _COS_EXPONENT[lc]
    sin_li = np.sqrt(1.0 - cos_li**2)
    area = np.clip(np.sin(np.deg2rad(geometry.incidence)) / np.maximum(sin_li, 1e-3), 0.3, 5.0)
    sigma = 10.0 ** (db / 10.0) * (falloff * area)[None]
    sigma[:, shadow] = 0.0
    return (sigma + _NOISE_FLOOR).astype(np.float32)


def speckle_db(sigma0: np.ndarray, looks: float, rng: np.random.Generator) -> np.ndarray:
    """Multiplicative gamma speckle (mean 1, `looks` looks) on linear power, returned in dB."""
    if looks > 0:
        sigma0 = sigma0 * (rng.standard_gamma(looks, size=sigma0.shape, dtype=np.float32) / np.float32(looks))
    return (10.0 * np.log10(np.maximum(sigma0, 1e-6))).astype(np.float32)


def render_scene(
    shape: tuple[int, int],
    rng: np.random.Generator,
    *,
    pixel_size: float = 10.0,
    light: Illumination | None = None,
    geometry: SarGeometry | None = None,
) -> SyntheticScene:
    """One co-registered scene: optical reflectance, SAR dB (with speckle) and DEM on one grid.

    Acquisition conditions not given are drawn from `rng`, so a training loop gets variety for free.
    """
    if len(shape) != 2 or min(shape) < 8:
        raise ValueError(f"shape must be (H, W) with both at least 8, got {shape}")
    terrain = make_terrain(tuple(int(s) for s in shape), rng, pixel_size=pixel_size)
    if light is None:
        light = Illumination(
            sun_azimuth=float(rng.uniform(130, 170)),
            sun_elevation=float(rng.uniform(25, 60)),
            season=float(rng.uniform(0, 1)),
            haze=float(rng.uniform(0.2, 1.0)),
        )
    if geometry is None:
        geometry = SarGeometry(
            look_azimuth=float(rng.choice([78.0, 282.0]) + rng.uniform(-4, 4)),
            incidence=float(rng.uniform(32, 44)),
            season=light.season + float(rng.uniform(-0.02, 0.02)),
            moisture=float(rng.uniform(-1, 1)),
        )
    optical = render_optical(terrain, light, rng)
    sar = speckle_db(sar_sigma0(terrain, geometry), geometry.looks, rng)
    return SyntheticScene(optical=optical, sar=sar, dem=terrain.dem, landcover=terrain.landcover)

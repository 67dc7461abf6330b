"""A Sentinel-1 GRD look-alike: a synthetic landscape seen in radar geometry, tied to the map only by a grid
of ground control points computed from a known mapping, with the terrain displacement the GCPs leave out.

Rows run along track, columns across track (ground range), `spacing` metres apart; a descending pass
flies south and looks west, so the image is mirrored against the map, as real GRD products are. The GCPs
lie on the smooth mapping (`RadarGeometry.to_map`) at one reference height, as a GRD is projected onto an
ellipsoid raised to the scene's average height; a point at height h is imaged `(h - h_ref) / tan(incidence)`
metres towards the sensor (foreshortening): a shift where an AOI's mean height differs from the scene's,
varying with the relief. Geocoding through the GCPs cannot know it; the registration then removes it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from pyproj import Transformer
from rasterio.control import GroundControlPoint
from scipy import ndimage

from pipeline.grid import Grid

DN_PER_AMPLITUDE = 500.0  # uint16 DN = this * sqrt(sigma0): the scale of Sentinel-1 GRD's calibration LUT


@dataclass(frozen=True)
class RadarGeometry:
    """A known mapping from GRD pixel centres (row, col) to map coordinates (x, y) in metres of `epsg`."""

    epsg: int
    origin: tuple[float, float]  # map position of pixel centre (0, 0)
    shape: tuple[int, int]
    heading_deg: float = 192.0  # flight direction, clockwise from north (descending)
    spacing: float = 10.0
    range_stretch: float = 2e-4  # ground range spacing grows by this fraction per column (a smooth non-affinity)
    incidence_deg: float = 37.0
    reference_height: float = 0.0  # metres: the height of the surface the GCPs lie on

    @classmethod
    def centred(cls, epsg: int, centre: tuple[float, float], shape: tuple[int, int], **kwargs) -> RadarGeometry:
        """The geometry of `shape` whose middle pixel lies on map point `centre`."""
        at_origin = cls(epsg, (0.0, 0.0), shape, **kwargs)
        x, y = at_origin.to_map(np.array(shape[0] // 2), np.array(shape[1] // 2))
        return cls(epsg, (centre[0] - float(x), centre[1] - float(y)), shape, **kwargs)

    def _axes(self) -> tuple[np.ndarray, np.ndarray]:
        h = np.deg2rad(self.heading_deg)
        track = np.array([np.sin(h), np.cos(h)])  # (east, north) of one row step
        look = np.array([np.cos(h), -np.sin(h)])  # right-looking: the track turned 90 degrees clockwise
        return track, look

    def to_map(self, rows: np.ndarray, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Map (x, y) of pixel centres (rows, cols), with the terrain at the GCPs' reference height."""
        track, look = self._axes()
        along = np.asarray(rows, dtype=np.float64) * self.spacing
        across = np.asarray(cols, dtype=np.float64) * self.spacing * (1.0 + 0.5 * self.range_stretch * cols)
        return self.origin[0] + along * track[0] + across * look[0], self.origin[1] + along * track[1] + across * look[
            1
        ]

    def terrain_shift(self, height_above_ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Map (dx, dy) metres from where a point is to where it is imaged: towards the sensor, by its height."""
        _, look = self._axes()
        towards_sensor = -np.asarray(height_above_ref) / np.tan(np.deg2rad(self.incidence_deg))
        return towards_sensor * look[0], towards_sensor * look[1]

    def gcps(self, step: int) -> list[GroundControlPoint]:
        """GCPs every `step` pixels (and on the last row and column), in lon/lat as GRD products carry them."""
        rows = np.unique(np.r_[np.arange(0, self.shape[0], step), self.shape[0] - 1])
        cols = np.unique(np.r_[np.arange(0, self.shape[1], step), self.shape[1] - 1])
        r, c = np.meshgrid(rows, cols, indexing="ij")
        x, y = self.to_map(r, c)
        lon, lat = Transformer.from_crs(self.epsg, 4326, always_xy=True).transform(x, y)
        # GDAL's pixel/line coordinates put a pixel's centre at +0.5
        return [
            GroundControlPoint(row=ri + 0.5, col=ci + 0.5, x=float(lo), y=float(la))
            for ri, ci, lo, la in zip(r.ravel(), c.ravel(), lon.ravel(), lat.ravel())
        ]


def ground_seen(
    geometry: RadarGeometry, master: Grid, dem: np.ndarray, x: np.ndarray, y: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The ground point (x, y) in map metres whose echo GCP geocoding puts at map position (x, y): the
    point p with p + terrain_shift(h(p) - reference_height) = (x, y), `dem` on `master`. Unique while
    slopes facing the radar stay below the incidence angle (no layover)."""
    px, py = x, y
    for _ in range(12):
        dx, dy = geometry.terrain_shift(_sample(dem, master, px, py) - geometry.reference_height)
        px, py = x - dx, y - dy
    return px, py


def image_in_radar_geometry(geometry: RadarGeometry, master: Grid, values: np.ndarray, dem: np.ndarray) -> np.ndarray:
    """`values` (C, H, W) on `master` (same CRS as `geometry`, `dem` on it too) seen in radar geometry with
    foreshortening, bilinear: (C, rows, cols)."""
    r, c = np.mgrid[0 : geometry.shape[0], 0 : geometry.shape[1]]
    px, py = ground_seen(geometry, master, dem, *geometry.to_map(r, c))
    return np.stack([_sample(band, master, px, py) for band in values])


def amplitude_dn(sigma0: np.ndarray) -> np.ndarray:
    """Linear power as GRD stores it: uint16 amplitude DN, 0 reserved for no data."""
    return np.clip(np.round(DN_PER_AMPLITUDE * np.sqrt(np.maximum(sigma0, 0))), 1, 65535).astype(np.uint16)


def _sample(image: np.ndarray, grid: Grid, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    col, row = ~grid.affine * (x, y)
    return ndimage.map_coordinates(image, [row - 0.5, col - 0.5], order=1, mode="nearest")

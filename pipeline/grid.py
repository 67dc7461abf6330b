"""The target grid: one frozen description of a raster grid, pixel-centre conventions written once."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np
from affine import Affine
from pyproj import CRS


@dataclass(frozen=True)
class Grid:
    """A north-up raster grid.

    `transform` maps (col, row) of a pixel's *upper-left corner* to projected (x, y), as GDAL and
    rasterio do; pixel centres are at (col + 0.5, row + 0.5), which is what `x`/`y` coords hold.
    """

    crs_wkt: str
    transform: tuple[float, float, float, float, float, float]  # a, b, c, d, e, f (rasterio order)
    height: int
    width: int

    def __post_init__(self) -> None:
        if self.height <= 0 or self.width <= 0:
            raise ValueError(f"grid must have a positive size, got {self.height} x {self.width}")
        a, b, _, d, e, _ = self.transform
        if b != 0 or d != 0 or a <= 0 or e >= 0:
            raise ValueError(f"only north-up grids are supported, got transform {self.transform}")

    @classmethod
    def from_affine(cls, crs: CRS | str | int, transform: Affine, height: int, width: int) -> Grid:
        return cls(CRS.from_user_input(crs).to_wkt(), tuple(transform)[:6], int(height), int(width))

    @cached_property
    def affine(self) -> Affine:
        return Affine(*self.transform)

    @cached_property
    def crs(self) -> CRS:
        return CRS.from_wkt(self.crs_wkt)

    @property
    def shape(self) -> tuple[int, int]:
        return (self.height, self.width)

    @property
    def resolution(self) -> tuple[float, float]:
        """(x, y) pixel size in CRS units, both positive."""
        return (self.transform[0], -self.transform[4])

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """(left, bottom, right, top) of the outer pixel edges."""
        a, _, c, _, e, f = self.transform
        return (c, f + e * self.height, c + a * self.width, f)

    def x_coords(self) -> np.ndarray:
        a, _, c = self.transform[:3]
        return c + a * (np.arange(self.width) + 0.5)

    def y_coords(self) -> np.ndarray:
        e, f = self.transform[4], self.transform[5]
        return f + e * (np.arange(self.height) + 0.5)

    def window(self, row: int, col: int, height: int, width: int) -> Grid:
        """The sub-grid starting at (row, col); may extend past this grid's edges."""
        x, y = self.affine @ (col, row)
        a, b, _, d, e, _ = self.transform
        return Grid(self.crs_wkt, (a, b, x, d, e, y), height, width)

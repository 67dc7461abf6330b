"""Footprint geometry without GEOS: how much of a lon/lat rectangle a GeoJSON polygon covers.

Co-location only ever intersects footprints with rectangles (the AOI, a scene's part of the AOI, a
DEM tile's bounds), so Sutherland-Hodgman clipping against a convex rectangle is exact and enough.
Areas are planar in degrees: the ratios compared against thresholds vary by well under 1% across an
AOI of a few tenths of a degree. Footprints crossing the antimeridian are not supported.
"""

from __future__ import annotations

from collections.abc import Sequence

Rect = tuple[float, float, float, float]  # west, south, east, north
Ring = list[tuple[float, float]]


def polygons(geometry: dict) -> list[list[Ring]]:
    """The rings of a GeoJSON Polygon or MultiPolygon as [[exterior, hole, ...], ...]."""
    kind = geometry.get("type")
    coordinates = geometry.get("coordinates", [])
    if kind == "Polygon":
        parts = [coordinates]
    elif kind == "MultiPolygon":
        parts = coordinates
    else:
        raise ValueError(f"footprint geometry type {kind!r} is not a Polygon or MultiPolygon")
    return [[[(float(p[0]), float(p[1])) for p in ring] for ring in part] for part in parts]


def ring_area(ring: Sequence[tuple[float, float]]) -> float:
    """Unsigned shoelace area of a ring (closed or not)."""
    total = 0.0
    n = len(ring)
    for i in range(n):
        x0, y0 = ring[i]
        x1, y1 = ring[(i + 1) % n]
        total += x0 * y1 - x1 * y0
    return abs(total) / 2.0


def clip_ring(ring: Sequence[tuple[float, float]], rect: Rect) -> Ring:
    """The part of a ring inside an axis-aligned rectangle (Sutherland-Hodgman)."""
    west, south, east, north = rect
    edges = (
        (lambda p: p[0] >= west, lambda a, b: _at_x(a, b, west)),
        (lambda p: p[0] <= east, lambda a, b: _at_x(a, b, east)),
        (lambda p: p[1] >= south, lambda a, b: _at_y(a, b, south)),
        (lambda p: p[1] <= north, lambda a, b: _at_y(a, b, north)),
    )
    points = list(ring)
    for inside, cross in edges:
        if not points:
            break
        clipped: Ring = []
        previous = points[-1]
        for current in points:
            if inside(current):
                if not inside(previous):
                    clipped.append(cross(previous, current))
                clipped.append(current)
            elif inside(previous):
                clipped.append(cross(previous, current))
            previous = current
        points = clipped
    return points


def area_in_rect(geometry: dict, rect: Rect) -> float:
    """Area of the geometry inside the rectangle (holes subtracted)."""
    total = 0.0
    for exterior, *holes in polygons(geometry):
        total += ring_area(clip_ring(exterior, rect)) - sum(ring_area(clip_ring(hole, rect)) for hole in holes)
    return max(total, 0.0)


def rect_area(rect: Rect) -> float:
    west, south, east, north = rect
    return max(east - west, 0.0) * max(north - south, 0.0)


def coverage(geometry: dict, rect: Rect) -> float:
    """Share of the rectangle the geometry covers, 0..1."""
    area = rect_area(rect)
    return min(area_in_rect(geometry, rect) / area, 1.0) if area > 0 else 0.0


def clipped_bounds(geometry: dict, rect: Rect) -> Rect | None:
    """Bounds of the geometry's part inside the rectangle, or None when they do not meet."""
    points = [p for exterior, *_ in polygons(geometry) for p in clip_ring(exterior, rect)]
    if not points:
        return None
    xs, ys = [p[0] for p in points], [p[1] for p in points]
    bounds = (min(xs), min(ys), max(xs), max(ys))
    return bounds if rect_area(bounds) > 0 else None


def _at_x(a: tuple[float, float], b: tuple[float, float], x: float) -> tuple[float, float]:
    t = (x - a[0]) / (b[0] - a[0])
    return (x, a[1] + t * (b[1] - a[1]))


def _at_y(a: tuple[float, float], b: tuple[float, float], y: float) -> tuple[float, float]:
    t = (y - a[1]) / (b[1] - a[1])
    return (a[0] + t * (b[0] - a[0]), y)

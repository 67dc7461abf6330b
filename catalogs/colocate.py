"""Co-location: which optical scenes to align, and the SAR and DEM items to align onto each.

Rules, in order, each rejection saying why:
- optical: cloud cover (`eo:cloud_cover`) at most `max_cloud`; the footprint covers at least
  `min_overlap` of the AOI; all of the profile's optical assets present.
- SAR: passes (slices of one platform, orbit direction and acquisition within minutes) within
  `sar_window_days` of the optical time whose slices cover at least `min_overlap` of the scene's part
  of the AOI; the preferred orbit direction first (given, else the one most passes share, so a time
  series keeps one viewing geometry), then the nearest in time. Sentinel-1 GRD items in radar
  geometry take part like any other: the loader geocodes them through their ground control points
  (catalogs/geocoding.py, pipeline/load_gcp.py).
- DEM: every tile meeting the optical footprint; a scene is refused when none covers its part of the AOI.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import pystac

from catalogs.footprints import Rect, clipped_bounds, coverage, polygons
from catalogs.geocoding import GCP_NOTE, in_radar_geometry
from catalogs.http import RetryEvent, RetryLog, RetryPolicy
from catalogs.profiles import CatalogProfile
from catalogs.scenes import AssetKeys, SceneSet
from catalogs.stac_search import CatalogSearcher, SearchLimits
from kernel.config import AreaPeriod, SearchConfig
from kernel.contracts import REFERENCE, REGISTERED
from kernel.errors import InputError

PASS_GAP = timedelta(minutes=10)  # slices of one Sentinel-1 pass are seconds apart; passes are 6+ days apart


@dataclass(frozen=True)
class Rejection:
    item_id: str
    reason: str


@dataclass(frozen=True)
class ColocationResult:
    scene_sets: list[SceneSet]
    rejections: list[Rejection]
    retries: list[RetryEvent] = field(default_factory=list)
    retry_summary: str = ""


@dataclass(frozen=True)
class SarPass:
    """Slices of one Sentinel-1 (or similar) pass: mosaicked together onto the optical grid."""

    items: tuple[pystac.Item, ...]
    time: datetime
    orbit_state: str | None
    platform: str | None


def find_scene_sets(
    profile: CatalogProfile,
    area: AreaPeriod,
    rules: SearchConfig | None = None,
    *,
    policy: RetryPolicy | None = None,
    limits: SearchLimits | None = None,
) -> ColocationResult:
    """Search the profile's catalog over a validated area and period, and pair each usable optical scene
    with SAR and DEM items by the search config's pairing rules (its defaults when None)."""
    rules = rules or SearchConfig()
    bbox = area.bbox
    log = RetryLog()
    searcher = CatalogSearcher(profile, policy, limits, log)
    for modality in (REFERENCE, *REGISTERED):
        searcher.check_collection(profile.collection(modality))

    optical = searcher.items(profile.optical_collection, bbox, area.start, area.end)
    placed = [item for item in optical if item.geometry and acquired(item) is not None]
    sar: list[pystac.Item] = []
    dem: list[pystac.Item] = []
    if placed:  # one SAR and one DEM search for all scenes: fewer requests than one per scene
        window = timedelta(days=rules.sar_window_days)
        times = [item_time(item) for item in placed]
        first, last = (min(times) - window).date(), (max(times) + window).date()
        sar = searcher.items(profile.sar_collection, bbox, first, last)
        dem = searcher.items(profile.dem_collection, _union_bounds([_bounds_near(item, bbox) for item in placed]))
    scene_sets, rejections = pair_scenes(optical, sar, dem, bbox, rules, profile.asset_keys)
    return ColocationResult(scene_sets, rejections, log.events, log.summary())


def pair_scenes(
    optical: Sequence[pystac.Item],
    sar: Sequence[pystac.Item],
    dem: Sequence[pystac.Item],
    bbox: Rect,
    rules: SearchConfig,
    asset_keys: AssetKeys,
) -> tuple[list[SceneSet], list[Rejection]]:
    """The search config's pairing rules on items already fetched (pure: no I/O)."""
    rejections: list[Rejection] = []
    usable_sar: list[pystac.Item] = []
    for item in sar:
        reason = _unusable(item, asset_keys.sar.values(), "SAR", timed=True)
        if reason:
            rejections.append(Rejection(item.id, reason))
        else:
            usable_sar.append(item)
    usable_dem = []
    for item in dem:
        reason = _unusable(item, asset_keys.dem.values(), "DEM", timed=False)
        if reason:
            rejections.append(Rejection(item.id, reason))
        else:
            usable_dem.append(item)
    passes = group_passes(usable_sar)
    preferred = rules.orbit_state or _majority_orbit_state(passes)

    scene_sets = []
    for item in sorted(optical, key=lambda i: (acquired(i) is None, acquired(i) or datetime.min, i.id)):
        reason, scene_set = _pair_one(item, passes, usable_dem, bbox, rules, preferred, asset_keys)
        if reason:
            rejections.append(Rejection(item.id, reason))
        else:
            scene_sets.append(scene_set)
    return scene_sets, rejections


def _pair_one(item, passes, dem, bbox, rules, preferred, asset_keys) -> tuple[str | None, SceneSet | None]:
    cloud = item.properties.get("eo:cloud_cover")
    if cloud is not None and float(cloud) > rules.max_cloud:
        return f"cloud cover {float(cloud):g} > {rules.max_cloud:g}", None
    unusable = _unusable(item, asset_keys.optical.values(), "optical", timed=True)
    if unusable:
        return unusable, None
    overlap = coverage(item.geometry, bbox)
    if overlap < rules.min_overlap:
        return f"overlap {overlap:.2f} < {rules.min_overlap:g} (share of the AOI the footprint covers)", None
    target = clipped_bounds(item.geometry, bbox)  # the scene's part of the AOI
    when = item_time(item)
    window = timedelta(days=rules.sar_window_days)
    in_window = [p for p in passes if abs(p.time - when) <= window]
    if not in_window:
        return f"no SAR within {rules.sar_window_days:g} days", None
    covering = []
    best_cover = 0.0
    for sar_pass in in_window:
        slices = [s for s in sar_pass.items if coverage(s.geometry, target) > 0]
        share = min(sum(coverage(s.geometry, target) for s in slices), 1.0)
        best_cover = max(best_cover, share)
        if share >= rules.min_overlap:
            covering.append((sar_pass, tuple(slices), share))
    if not covering:
        return (
            f"SAR within {rules.sar_window_days:g} days covers at most {best_cover:.2f} < {rules.min_overlap:g} of the scene's part of the AOI",
            None,
        )
    chosen, slices, sar_share = min(
        covering, key=lambda c: (c[0].orbit_state != preferred, abs(c[0].time - when), c[0].time)
    )
    tiles = tuple(sorted((d for d in dem if coverage(item.geometry, _bounds(d)) > 0), key=lambda d: d.id))
    dem_share = min(sum(coverage(d.geometry, target) for d in tiles), 1.0)
    if not tiles or dem_share <= 0:
        return "no DEM tile covers the footprint", None
    gap_hours = abs((chosen.time - when).total_seconds()) / 3600.0
    direction = chosen.orbit_state or "unknown direction"
    reasons = (
        f"optical: cloud cover {_fmt(cloud)}, covers {overlap:.2f} of the AOI",
        f"SAR: {len(slices)} slice(s) of a {chosen.platform or 'SAR'} {direction} pass {gap_hours:.1f} h "
        f"{'after' if chosen.time >= when else 'before'} the optical scene, covering {sar_share:.2f} of the scene's part of the AOI"
        + _direction_note(chosen.orbit_state, preferred)
        + (f" ({GCP_NOTE})" if any(in_radar_geometry(s, asset_keys.sar.values()) for s in slices) else "")
        + (f"; {len(in_window) - 1} other pass(es) in the window" if len(in_window) > 1 else ""),
        f"DEM: {len(tiles)} tile(s) meeting the footprint, covering {dem_share:.2f} of the scene's part of the AOI",
    )
    return None, SceneSet(item, tuple(slices), tiles, overlap, gap_hours, asset_keys, reasons)


def group_passes(items: Sequence[pystac.Item]) -> list[SarPass]:
    """Slices of one platform and orbit direction acquired within PASS_GAP of each other form one pass."""
    passes: list[list[pystac.Item]] = []
    for item in sorted(items, key=lambda i: (_platform(i) or "", _orbit_state(i) or "", item_time(i))):
        last = passes[-1][-1] if passes else None
        if (
            last is not None
            and _platform(last) == _platform(item)
            and _orbit_state(last) == _orbit_state(item)
            and item_time(item) - item_time(last) <= PASS_GAP
        ):
            passes[-1].append(item)
        else:
            passes.append([item])
    return [
        SarPass(tuple(group), min(item_time(i) for i in group), _orbit_state(group[0]), _platform(group[0]))
        for group in passes
    ]


def acquired(item: pystac.Item) -> datetime | None:
    """Acquisition time: `datetime`, else the start of `start_datetime`/`end_datetime`, else None."""
    return item.datetime if item.datetime is not None else item.common_metadata.start_datetime


def item_time(item: pystac.Item) -> datetime:
    """Acquisition time of an item known to have one (checked by the pairing rules)."""
    when = acquired(item)
    if when is None:
        raise InputError(f"item {item.id!r} has no datetime")
    return when


def _unusable(item: pystac.Item, keys, kind: str, timed: bool) -> str | None:
    """Why an item cannot take part at all (no footprint, no time, missing assets), or None."""
    if not item.geometry:
        return f"{kind} item has no footprint geometry"
    try:
        polygons(item.geometry)
    except ValueError as err:
        return f"{kind} item: {err}"
    if timed and acquired(item) is None:
        return f"{kind} item has no acquisition time"
    missing = sorted(set(keys) - set(item.assets))
    return f"{kind} item lacks asset(s) {', '.join(missing)}" if missing else None


def _majority_orbit_state(passes: Sequence[SarPass]) -> str | None:
    counts = Counter(p.orbit_state for p in passes if p.orbit_state)
    if not counts:
        return None
    # ties go to descending: Sentinel-2 passes on the descending node, like Sentinel-1's morning passes
    return max(counts, key=lambda state: (counts[state], state == "descending"))


def _orbit_state(item: pystac.Item) -> str | None:
    state = item.properties.get("sat:orbit_state")
    return str(state).lower() if state else None


def _platform(item: pystac.Item) -> str | None:
    platform = item.properties.get("platform")
    return str(platform).lower() if platform else None


def _bounds(item: pystac.Item) -> Rect:
    if item.bbox is not None and len(item.bbox) >= 4:
        b = item.bbox
        return (b[0], b[1], b[3], b[4]) if len(b) == 6 else (b[0], b[1], b[2], b[3])
    points = [p for exterior, *_ in polygons(item.geometry) for p in exterior]
    return (min(p[0] for p in points), min(p[1] for p in points), max(p[0] for p in points), max(p[1] for p in points))


def _bounds_near(item: pystac.Item, aoi: Rect) -> Rect:
    """The item's bounds; for a footprint split at the antimeridian (RFC 7946: a bbox whose west is east of
    its east), the bounds of its parts that meet the AOI, which never crosses it (kernel.config)."""
    bounds = _bounds(item)
    if bounds[0] <= bounds[2]:
        return bounds
    near = [exterior for exterior, *_ in polygons(item.geometry or {}) if coverage(_polygon(exterior), aoi) > 0]
    points = [p for ring in near for p in ring]
    if not points:
        return aoi
    return (min(p[0] for p in points), min(p[1] for p in points), max(p[0] for p in points), max(p[1] for p in points))


def _polygon(exterior) -> dict:
    return {"type": "Polygon", "coordinates": [[list(p) for p in exterior]]}


def _union_bounds(bounds: Sequence[Rect]) -> Rect:
    return (min(b[0] for b in bounds), min(b[1] for b in bounds), max(b[2] for b in bounds), max(b[3] for b in bounds))


def _direction_note(state: str | None, preferred: str | None) -> str:
    if preferred is None:
        return ""
    if state == preferred:
        return f"; the preferred direction ({preferred})"
    return f"; no pass in the preferred direction ({preferred}) in the window"


def _fmt(value) -> str:
    return "unknown" if value is None else f"{float(value):g}"

"""Co-location: which optical scenes to align, and the SAR and DEM items to align onto each.

Rules, in order, each rejection saying why:
- optical: cloud cover (`eo:cloud_cover`) at most `max_cloud`; the footprint covers at least
  `min_overlap` of the AOI; all of the profile's optical assets present.
- SAR: passes (slices of one platform, orbit direction and acquisition within minutes) within
  `sar_window_days` of the optical time whose slices cover at least `min_overlap` of the scene's part
  of the AOI; the preferred orbit direction first (given, else the one most passes share, so a time
  series keeps one viewing geometry), then the nearest in time. Sentinel-1 GRD items in radar
  geometry are refused: placing them by their bounding box would put every pixel in the wrong place.
- DEM: every tile meeting the optical footprint; a scene is refused when none covers its part of the AOI.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

import pystac

from catalogs.footprints import Rect, clipped_bounds, coverage, polygons
from catalogs.http import RetryEvent, RetryLog, RetryPolicy
from catalogs.profiles import CatalogProfile
from catalogs.scenes import AssetKeys, SceneSet
from catalogs.stac_search import CatalogSearcher, SearchLimits
from kernel.errors import InputError

PASS_GAP = timedelta(minutes=10)  # slices of one Sentinel-1 pass are seconds apart; passes are 6+ days apart
RTC_ADVICE = "use a terrain-corrected (RTC) collection, e.g. --profile planetary-computer (sentinel-1-rtc)"


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
class PairingRules:
    max_cloud: float = 30.0
    sar_window_days: float = 3.0
    min_overlap: float = 0.5
    orbit_state: str | None = None  # "ascending" / "descending"; None: the direction most passes share


@dataclass(frozen=True)
class SarPass:
    """Slices of one Sentinel-1 (or similar) pass: mosaicked together onto the optical grid."""

    items: tuple[pystac.Item, ...]
    time: datetime
    orbit_state: str | None
    platform: str | None


def find_scene_sets(
    profile: CatalogProfile,
    bbox: tuple[float, float, float, float],
    start: date,
    end: date,
    max_cloud: float = 30,
    sar_window_days: float = 3,
    min_overlap: float = 0.5,
    *,
    orbit_state: str | None = None,
    policy: RetryPolicy | None = None,
    limits: SearchLimits | None = None,
) -> ColocationResult:
    """Search the profile's catalog and pair each usable optical scene with SAR and DEM items."""
    bbox = validate_bbox(bbox)
    if start > end:
        raise InputError(f"start {start} is after end {end}")
    rules = PairingRules(float(max_cloud), float(sar_window_days), float(min_overlap), orbit_state)
    _validate_rules(rules)
    log = RetryLog()
    searcher = CatalogSearcher(profile, policy, limits, log)
    for collection_id in (profile.optical_collection, profile.sar_collection, profile.dem_collection):
        searcher.check_collection(collection_id)

    optical = searcher.items(profile.optical_collection, bbox, start, end)
    placed = [item for item in optical if item.geometry and acquired(item) is not None]
    sar: list[pystac.Item] = []
    dem: list[pystac.Item] = []
    if placed:  # one SAR and one DEM search for all scenes: fewer requests than one per scene
        window = timedelta(days=rules.sar_window_days)
        times = [item_time(item) for item in placed]
        sar = searcher.items(profile.sar_collection, bbox, (min(times) - window).date(), (max(times) + window).date())
        dem = searcher.items(profile.dem_collection, _union_bounds([_bounds(item) for item in placed]))
    scene_sets, rejections = pair_scenes(optical, sar, dem, bbox, rules, profile.asset_keys)
    return ColocationResult(scene_sets, rejections, log.events, log.summary())


def pair_scenes(
    optical: Sequence[pystac.Item],
    sar: Sequence[pystac.Item],
    dem: Sequence[pystac.Item],
    bbox: Rect,
    rules: PairingRules,
    asset_keys: AssetKeys,
) -> tuple[list[SceneSet], list[Rejection]]:
    """The pairing rules on items already fetched (pure: no I/O)."""
    rejections: list[Rejection] = []
    usable_sar: list[pystac.Item] = []
    radar_geometry: list[pystac.Item] = []
    for item in sar:
        in_radar_geometry = radar_geometry_reason(item, asset_keys)
        reason = in_radar_geometry or _unusable(item, asset_keys.sar.values(), "SAR", timed=True)
        if reason:
            rejections.append(Rejection(item.id, reason))
            if in_radar_geometry and acquired(item) is not None:
                radar_geometry.append(item)
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
        reason, scene_set = _pair_one(item, passes, radar_geometry, usable_dem, bbox, rules, preferred, asset_keys)
        if reason:
            rejections.append(Rejection(item.id, reason))
        else:
            scene_sets.append(scene_set)
    return scene_sets, rejections


def _pair_one(
    item, passes, radar_geometry, dem, bbox, rules, preferred, asset_keys
) -> tuple[str | None, SceneSet | None]:
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
        grd = [s for s in radar_geometry if abs(item_time(s) - when) <= window]
        if grd:
            return (
                f"no usable SAR within {rules.sar_window_days:g} days: {len(grd)} Sentinel-1 GRD item(s) are in radar geometry; {RTC_ADVICE}",
                None,
            )
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
        + (f"; {len(in_window) - 1} other pass(es) in the window" if len(in_window) > 1 else ""),
        f"DEM: {len(tiles)} tile(s) meeting the footprint, covering {dem_share:.2f} of the scene's part of the AOI",
    )
    return None, SceneSet(item, tuple(slices), tiles, overlap, gap_hours, asset_keys, reasons)


def radar_geometry_reason(item: pystac.Item, asset_keys: AssetKeys) -> str | None:
    """Why a SAR item cannot be placed by its metadata (GRD in radar geometry), or None when it can.

    A GRD counts as placed only when each SAR asset carries its own `proj:transform` and it is not in
    a `*grd*` collection: Earth Search's GRD items have at most an item-level grid derived from the
    bounding box, while their files are in radar geometry with ground control points. The loader
    (pipeline/load_meta.py) applies the same rule, and checks the file headers too.
    """
    product = str(item.properties.get("sar:product_type", "")).upper()
    if product != "GRD":
        return None
    assets = [item.assets[key] for key in asset_keys.sar.values() if key in item.assets]
    own_grid = bool(assets) and all(asset.extra_fields.get("proj:transform") is not None for asset in assets)
    if own_grid and "grd" not in (item.collection_id or "").lower():
        return None
    return (
        "Sentinel-1 GRD item in radar geometry (its assets carry no map grid of their own, only ground "
        f"control points), so placing it by its bounding box would mis-place every pixel; {RTC_ADVICE}"
    )


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


def validate_bbox(bbox: Sequence[float]) -> Rect:
    """A lon/lat (W, S, E, N) box, or a one-line InputError saying what is wrong."""
    values = tuple(float(v) for v in bbox)
    if len(values) != 4 or not all(math.isfinite(v) for v in values):
        raise InputError(f"bbox must be four finite numbers W S E N, got {list(bbox)}")
    west, south, east, north = values
    if not (-180 <= west < east <= 180):
        raise InputError(
            f"bbox west {west:g} must be below east {east:g}, both within -180..180 (antimeridian boxes are not supported)"
        )
    if not (-90 <= south < north <= 90):
        raise InputError(f"bbox south {south:g} must be below north {north:g}, both within -90..90")
    return values  # type: ignore[return-value]


def _validate_rules(rules: PairingRules) -> None:
    if not 0 <= rules.max_cloud <= 100:
        raise InputError(f"max cloud cover must be within 0..100, got {rules.max_cloud:g}")
    if not rules.sar_window_days > 0:
        raise InputError(f"the SAR window must be positive, got {rules.sar_window_days:g} days")
    if not 0 < rules.min_overlap <= 1:
        raise InputError(f"minimum overlap must be within (0, 1], got {rules.min_overlap:g}")
    if rules.orbit_state not in (None, "ascending", "descending"):
        raise InputError(f"orbit state must be ascending or descending, got {rules.orbit_state!r}")


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

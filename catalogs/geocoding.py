"""Whether a SAR item's pixels can be placed by its metadata: the radar-geometry rule, for the search
(which refuses such items with a reason) and the loader (which refuses them before any read).

dsmar does not geocode radar geometry: a GRD product is usable only when it is already on a map grid.
"""

from __future__ import annotations

from collections.abc import Iterable

import pystac

RTC_ADVICE = "use a terrain-corrected (RTC) collection, e.g. --profile planetary-computer (sentinel-1-rtc)"


def radar_geometry_reason(item: pystac.Item, keys: Iterable[str]) -> str | None:
    """Why a SAR item cannot be placed by its metadata (GRD in radar geometry), or None when it can.

    A GRD counts as placed only when each of its assets `keys` (those present) carries its own
    `proj:transform` and it is not in a `*grd*` collection: Earth Search's GRD items have at most an
    item-level grid derived from the bounding box, while their files are in radar geometry with ground
    control points. The loader also checks the file headers (pipeline/load_assets.py).
    """
    if str(item.properties.get("sar:product_type", "")).upper() != "GRD":
        return None
    assets = [item.assets[key] for key in keys if key in item.assets]
    if not assets or any(asset.extra_fields.get("proj:transform") is None for asset in assets):
        why = "a GRD asset without its own proj:transform, only ground control points"
    elif "grd" in (item.collection_id or "").lower():
        why = f"a GRD product of collection {item.collection_id!r}"
    else:
        return None
    return (
        f"Sentinel-1 GRD item in radar geometry ({why}), so placing it by its bounding box would "
        f"mis-place every pixel; {RTC_ADVICE}"
    )

"""How a SAR item's pixels reach a map: by the map grid of its files, or through the ground control
points of a product in radar geometry (Sentinel-1 GRD), for the search's reasons and the docs.

The loader decides per file from its header (pipeline/load_assets.py): GCPs and no geotransform means
it is geocoded through its GCPs (pipeline/load_gcp.py), whatever the metadata says.
"""

from __future__ import annotations

from collections.abc import Iterable

import pystac

GCP_NOTE = "GRD in radar geometry, geocoded through its ground control points"


def in_radar_geometry(item: pystac.Item, keys: Iterable[str]) -> bool:
    """Whether the item's metadata says its assets `keys` are in radar geometry (a GRD product whose
    assets carry no map grid of their own, as on Earth Search), so the loader geocodes them by GCPs."""
    if str(item.properties.get("sar:product_type", "")).upper() != "GRD":
        return False
    assets = [item.assets[key] for key in keys if key in item.assets]
    return not assets or any(asset.extra_fields.get("proj:transform") is None for asset in assets)

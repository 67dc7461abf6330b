"""What an item's metadata says about how to read its assets: CRS, radiometry, geocoding.

Pure functions over pystac items and their catalog's quirks, no I/O. Conventions are documented in docs/loading.md.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from typing import Any

import pystac

from catalogs.profiles import NO_QUIRKS, Quirks
from kernel.errors import CatalogError

# Sentinel-2 reflectance assets, by band name (eo:bands / bands) or common name.
_S2_BAND = re.compile(r"^B(0[1-9]|1[0-2]|8A)$")
_REFLECTANCE_COMMON = {
    "coastal",
    "blue",
    "green",
    "red",
    "rededge",
    "nir",
    "nir08",
    "nir09",
    "cirrus",
    "swir16",
    "swir22",
}
_S2_QUANTIFICATION = 1e-4  # L2A DN -> reflectance when the catalog declares no scale
_S2_BOA_ADD_OFFSET_DN = -1000.0  # processing baseline >= 04.00
_DB_UNITS = {"db", "decibel", "decibels"}
_LINEAR_UNITS = {"linear", "power", "linear power", "1", ""}
_AMPLITUDE_UNITS = {"amplitude", "dn"}
_AMPLITUDE_NODATA = 0.0  # Sentinel-1 GRD: DN 0 is outside the swath


@dataclass(frozen=True)
class Radiometry:
    """How raw asset values become physical ones: mask `nodata`, then `value * scale + offset`,
    then 10*log10 when `to_db` (a SAR asset whose output is wanted in dB): of the value where it is
    linear power, of its square where it is `amplitude` (uncalibrated GRD DN)."""

    scale: float = 1.0
    offset: float = 0.0
    nodata: float | None = None  # None: the catalog declares none (the file's own still applies)
    to_db: bool = False
    amplitude: bool = False


def asset_dict(item: pystac.Item, key: str) -> dict[str, Any]:
    """The asset's fields as a plain dict (href made absolute), or CatalogError if the item lacks it."""
    asset = item.assets.get(key)
    if asset is None:
        raise CatalogError(f"item {item.id!r} has no asset {key!r} (it has {sorted(item.assets)})")
    d = asset.to_dict()
    d["href"] = absolute_href(item, key)
    return d


def absolute_href(item: pystac.Item, key: str) -> str:
    """The asset href, absolute; plain local paths become file:// URLs, a relative one (an item without a self
    link) taken from this process's directory: the href travels to Dask workers that run elsewhere."""
    href = item.assets[key].get_absolute_href() or item.assets[key].href
    if "://" not in href:
        href = "file://" + os.path.abspath(href)
    return href


def epsg_of(fields: dict[str, Any], fallback: dict[str, Any] | None = None) -> int | None:
    """EPSG code from `proj:epsg`, or from `proj:code` as pystac >= 1.12 writes it ("EPSG:32632")."""
    for d in (fields, fallback or {}):
        if d.get("proj:epsg") is not None:
            return int(d["proj:epsg"])
        code = d.get("proj:code")
        if isinstance(code, str) and code.upper().startswith("EPSG:"):
            return int(code.split(":", 1)[1])
    return None


def crs_of(fields: dict[str, Any], fallback: dict[str, Any]) -> str | int | None:
    """A CRS pyproj understands: EPSG code, or proj:code / proj:wkt2 / proj:projjson as given."""
    epsg = epsg_of(fields, fallback)
    if epsg is not None:
        return epsg
    for d in (fields, fallback):
        for k in ("proj:code", "proj:wkt2"):
            if d.get(k):
                return d[k]
        if d.get("proj:projjson"):
            return json.dumps(d["proj:projjson"])
    return None


def plain_item(item: pystac.Item, hrefs: dict[str, str]) -> dict[str, Any]:
    """The item as the dict stackstac reads: the given asset hrefs, `proj:epsg` restored from `proj:code`.

    stackstac 0.5.1 reads only `proj:epsg`, which pystac 1.15 drops on `from_dict` (migrating it
    to `proj:code`); without it stackstac cannot place the asset.
    """
    d = item.to_dict(include_self_link=False, transform_hrefs=False)
    epsg = epsg_of(d["properties"])
    if epsg is not None:
        d["properties"]["proj:epsg"] = epsg
    for key, href in hrefs.items():
        if key in d["assets"]:
            d["assets"][key]["href"] = href
            a_epsg = epsg_of(d["assets"][key])
            if a_epsg is not None:
                d["assets"][key]["proj:epsg"] = a_epsg
    return d


def is_sar(item: pystac.Item) -> bool:
    return any(k.startswith("sar:") for k in item.properties) or any("/sar/" in ext for ext in item.stac_extensions)


def _band_fields(asset: dict[str, Any]) -> dict[str, Any]:
    """The asset's single raster band description (raster:bands[0] in STAC 1.0, bands[0] in 1.1)."""
    for k in ("raster:bands", "bands"):
        bands = asset.get(k)
        if isinstance(bands, list) and bands and isinstance(bands[0], dict):
            return bands[0]
    return {}


def _nodata(band: dict[str, Any], asset: dict[str, Any]) -> float | None:
    value = band.get("nodata", band.get("raster:nodata", asset.get("nodata", asset.get("raster:nodata"))))
    return (
        None if value is None else float(value)
    )  # the raster extension spells NaN/inf as the strings "nan", "inf", "-inf"


def _is_s2_reflectance(item: pystac.Item, asset: dict[str, Any]) -> bool:
    props = item.properties
    is_s2 = str(props.get("platform", "")).lower().startswith("sentinel-2") or any(k.startswith("s2:") for k in props)
    if not is_s2:
        return False
    for k in ("eo:bands", "bands"):
        for b in asset.get(k) or []:
            if (
                _S2_BAND.match(str(b.get("name", "")))
                or b.get("common_name", b.get("eo:common_name")) in _REFLECTANCE_COMMON
            ):
                return True
    return False


def _s2_offset(item: pystac.Item, band: dict[str, Any], scale: float, quirks: Quirks) -> float:
    """The additive offset of a Sentinel-2 L2A reflectance asset, in physical units.

    Order: the catalog's harmonised flag (`Quirks.harmonised_flag`, Earth Search's
    `earthsearch:boa_offset_applied`) true -> 0; else a declared raster:bands offset; else
    baseline >= 04.00 -> BOA_ADD_OFFSET -1000 DN.
    """
    props = item.properties
    if quirks.harmonised_flag is not None and props.get(quirks.harmonised_flag) is True:
        return 0.0
    if "offset" in band:
        return float(band["offset"])
    baseline = props.get("s2:processing_baseline", props.get("sentinel:processing_baseline"))
    try:
        new_baseline = baseline is not None and float(baseline) >= 4.0
    except ValueError:
        raise CatalogError(f"item {item.id!r}: unreadable s2:processing_baseline {baseline!r}") from None
    return _S2_BOA_ADD_OFFSET_DN * scale if new_baseline else 0.0


def _sar_units(item: pystac.Item, key: str, band: dict[str, Any], quirks: Quirks, required: bool) -> str | None:
    """`db`, `linear` (power) or `amplitude` (DN), from the asset's unit or its catalog's quirks; None
    where neither says and the units are not `required`."""
    unit = band.get("unit")
    unit = None if unit is None else str(unit).strip().lower()
    for units, name in ((_DB_UNITS, "db"), (_LINEAR_UNITS, "linear"), (_AMPLITUDE_UNITS, "amplitude")):
        if unit in units:
            return name
    if item.collection_id in quirks.linear_sar_collections:
        return "linear"
    if item.collection_id in quirks.amplitude_sar_collections:
        return "amplitude"
    if not required:
        return None
    raise CatalogError(
        f"SAR item {item.id!r} asset {key!r} does not say whether it is dB, linear power or amplitude: "
        "set raster:bands[0].unit to 'dB', 'linear' or 'amplitude' in the catalog"
    )


def radiometry(item: pystac.Item, key: str, sar_db: bool = True, quirks: Quirks = NO_QUIRKS) -> Radiometry:
    """Scale, offset, nodata and dB conversion of one asset, from the item's metadata and its catalog's quirks."""
    asset = asset_dict(item, key)
    band = _band_fields(asset)
    nodata = _nodata(band, asset)
    if _is_s2_reflectance(item, asset):
        scale = float(band.get("scale", _S2_QUANTIFICATION))
        return Radiometry(scale, _s2_offset(item, band, scale, quirks), nodata)
    scale, offset = float(band.get("scale", 1.0)), float(band.get("offset", 0.0))
    if not is_sar(item):
        return Radiometry(scale, offset, nodata)
    units = _sar_units(item, key, band, quirks, required=sar_db)
    if units == "amplitude" and nodata is None:
        nodata = _AMPLITUDE_NODATA
    return Radiometry(scale, offset, nodata, sar_db and units != "db", sar_db and units == "amplitude")

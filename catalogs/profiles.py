"""Catalog profiles: where to search, which collections, and how each catalog spells its asset keys.

The pipeline only sees band names (`red`, `vv`, `elevation`); the profile maps them to the catalog's
asset keys (`red` on Earth Search, `B04` on the Planetary Computer), so no catalog spelling leaks
into loading or the cube.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import urlsplit

import pystac

from catalogs.scenes import AssetKeys
from catalogs.signing import PlanetaryComputerSigner
from kernel.config import SearchConfig
from kernel.errors import InputError

EARTH_SEARCH_URL = "https://earth-search.aws.element84.com/v1"
PLANETARY_COMPUTER_URL = "https://planetarycomputer.microsoft.com/api/stac/v1"


@dataclass(frozen=True)
class CatalogProfile:
    """One catalog: endpoint, collection ids, asset keys, and (Planetary Computer) asset signing."""

    name: str
    url: str
    optical_collection: str
    sar_collection: str
    dem_collection: str
    asset_keys: AssetKeys
    signer: PlanetaryComputerSigner | None = field(default=None, compare=False, repr=False)

    @property
    def modifier(self) -> Callable | None:
        """pystac-client `modifier` applied to every search result (asset signing), or None."""
        return self.signer

    def resign(self, item: pystac.Item) -> pystac.Item:
        """The item ready to read now: re-signed where the catalog's tokens expire, else unchanged."""
        return self.signer.resign(item) if self.signer is not None else item


_EARTH_SEARCH_KEYS = AssetKeys(
    optical={"blue": "blue", "green": "green", "red": "red", "nir": "nir"},
    sar={"vv": "vv", "vh": "vh"},
    dem={"elevation": "data"},
)
_PLANETARY_COMPUTER_KEYS = AssetKeys(
    optical={"blue": "B02", "green": "B03", "red": "B04", "nir": "B08"},
    sar={"vv": "vv", "vh": "vh"},
    dem={"elevation": "data"},
)
_LOCAL_KEYS = AssetKeys()  # the demo archive's keys (notes/interfaces.md)

PROFILE_NAMES = ("earth-search", "planetary-computer", "local")


def get_profile(
    name: str,
    catalog_url: str | None = None,
    optical_collection: str | None = None,
    sar_collection: str | None = None,
    dem_collection: str | None = None,
) -> CatalogProfile:
    """A profile by name, with the endpoint and collection ids optionally overridden.

    `catalog_url` is required for `local` and replaces the public endpoint for the others (to search a
    local server holding Earth Search- or Planetary Computer-shaped collections).
    """
    if name == "earth-search":
        base = CatalogProfile(
            name, EARTH_SEARCH_URL, "sentinel-2-l2a", "sentinel-1-grd", "cop-dem-glo-30", _EARTH_SEARCH_KEYS
        )
    elif name == "planetary-computer":
        base = CatalogProfile(
            name,
            PLANETARY_COMPUTER_URL,
            "sentinel-2-l2a",
            "sentinel-1-rtc",
            "cop-dem-glo-30",
            _PLANETARY_COMPUTER_KEYS,
            signer=PlanetaryComputerSigner(),
        )
    elif name == "local":
        if not catalog_url:
            raise InputError("the `local` catalog profile needs a STAC API URL (--catalog http://HOST:PORT)")
        base = CatalogProfile(name, catalog_url, "dsmar-optical", "dsmar-sar", "dsmar-dem", _LOCAL_KEYS)
    else:
        raise InputError(f"unknown catalog profile {name!r}; choose one of {', '.join(PROFILE_NAMES)}")
    overrides = {
        "url": catalog_url,
        "optical_collection": optical_collection,
        "sar_collection": sar_collection,
        "dem_collection": dem_collection,
    }
    for key, value in overrides.items():
        if value is not None and not str(value).strip():
            raise InputError(f"{key.replace('_', ' ')} must not be empty")
    changes: dict[str, Any] = {k: v.strip() for k, v in overrides.items() if v is not None}
    profile = replace(base, **changes)
    _check_url(profile.url)
    return profile


def profile_for(search: SearchConfig) -> CatalogProfile:
    """The profile a validated search config names, with its endpoint and collection overrides:
    the one way `dsmar search`, `dsmar run` and the flow resolve a catalog."""
    return get_profile(
        search.profile, search.catalog_url, search.optical_collection, search.sar_collection, search.dem_collection
    )


def _check_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InputError(f"catalog URL {url!r} is not an http(s) URL such as http://127.0.0.1:8080")

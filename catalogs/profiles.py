"""Catalog profiles as data: where to search, which collections, how each catalog spells its asset keys,
what its items leave unsaid, and how its assets are signed.

The pipeline only sees band names (`red`, `vv`, `elevation`); the profile maps them to the catalog's
asset keys (`red` on Earth Search, `B04` on the Planetary Computer), so no catalog spelling leaks
into loading or the cube. Adding a catalog is one entry in `PROFILES`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from urllib.parse import urlsplit

import pystac

from catalogs.scenes import AssetKeys
from catalogs.signing import PlanetaryComputerSigner
from kernel.config import SearchConfig
from kernel.contracts import MODALITY
from kernel.errors import InputError


@dataclass(frozen=True)
class Quirks:
    """What a catalog's items leave unsaid or state wrongly, read by the loader (docs/loading.md)."""

    harmonised_flag: str | None = None
    """Item property that, when true, says the Sentinel-2 DNs already had the baseline-04.00 offset
    subtracted: the offset is then 0 and a declared one is wrong (Element84/earth-search#9)."""
    linear_sar_collections: frozenset[str] = frozenset()
    """SAR collections whose assets are linear power without saying so (no `unit`)."""
    amplitude_sar_collections: frozenset[str] = frozenset()
    """SAR collections whose assets are uncalibrated amplitude DN without saying so (Sentinel-1 GRD: uint16,
    0 = no data); the loader turns them into 10*log10(DN^2), a dB-like quantity (docs/loading.md)."""


NO_QUIRKS = Quirks()


@dataclass(frozen=True)
class CatalogProfile:
    """One catalog: endpoint, collection ids, asset keys, quirks, and (Planetary Computer) asset signing."""

    name: str
    url: str  # "" where the user must give one (`--catalog`)
    optical_collection: str
    sar_collection: str
    dem_collection: str
    asset_keys: AssetKeys
    quirks: Quirks = NO_QUIRKS
    signing: Callable[[], PlanetaryComputerSigner] | None = None  # makes the signer of a profile that signs
    signer: PlanetaryComputerSigner | None = field(default=None, compare=False, repr=False)

    def collection(self, modality: str) -> str:
        """The collection id searched for a modality of `kernel.contracts.MODALITY` the pipeline uses."""
        return getattr(self, f"{MODALITY[modality].name}_collection")

    @property
    def modifier(self) -> Callable | None:
        """pystac-client `modifier` applied to every search result (asset signing), or None."""
        return self.signer

    def resign(self, item: pystac.Item) -> pystac.Item:
        """The item ready to read now: re-signed where the catalog's tokens expire, else unchanged."""
        return self.signer.resign(item) if self.signer is not None else item


EARTH_SEARCH = CatalogProfile(
    "earth-search",
    "https://earth-search.aws.element84.com/v1",
    "sentinel-2-l2a",
    "sentinel-1-grd",  # radar geometry: geocoded through its GCPs (pipeline/load_gcp.py)
    "cop-dem-glo-30",
    AssetKeys(),  # STAC common names, as Earth Search spells them
    Quirks(harmonised_flag="earthsearch:boa_offset_applied", amplitude_sar_collections=frozenset({"sentinel-1-grd"})),
)
PLANETARY_COMPUTER = CatalogProfile(
    "planetary-computer",
    "https://planetarycomputer.microsoft.com/api/stac/v1",
    "sentinel-2-l2a",
    "sentinel-1-rtc",
    "cop-dem-glo-30",
    replace(AssetKeys(), optical={"blue": "B02", "green": "B03", "red": "B04", "nir": "B08"}),
    Quirks(linear_sar_collections=frozenset({"sentinel-1-rtc"})),  # RTC gamma0 power, no unit field
    signing=PlanetaryComputerSigner,
)
LOCAL = CatalogProfile("local", "", "dsmar-optical", "dsmar-sar", "dsmar-dem", AssetKeys())  # the demo archive's
PROFILES = {profile.name: profile for profile in (EARTH_SEARCH, PLANETARY_COMPUTER, LOCAL)}
PROFILE_NAMES = tuple(PROFILES)


def get_profile(
    name: str,
    catalog_url: str | None = None,
    optical_collection: str | None = None,
    sar_collection: str | None = None,
    dem_collection: str | None = None,
) -> CatalogProfile:
    """A profile by name, with the endpoint and collection ids optionally overridden.

    `catalog_url` is required where the profile has no endpoint of its own (`local`) and replaces the
    public endpoint for the others (to search a local server holding look-alike collections).
    """
    base = PROFILES.get(name)
    if base is None:
        raise InputError(f"unknown catalog profile {name!r}; choose one of {', '.join(PROFILE_NAMES)}")
    if not base.url and not catalog_url:
        raise InputError(f"the `{name}` catalog profile needs a STAC API URL (--catalog http://HOST:PORT)")
    profile = replace(
        base,
        url=_override(base.url, catalog_url, "url"),
        optical_collection=_override(base.optical_collection, optical_collection, "optical collection"),
        sar_collection=_override(base.sar_collection, sar_collection, "sar collection"),
        dem_collection=_override(base.dem_collection, dem_collection, "dem collection"),
        signer=base.signing() if base.signing is not None else None,
    )
    _check_url(profile.url)
    return profile


def profile_for(search: SearchConfig) -> CatalogProfile:
    """The profile a validated search config names, with its endpoint and collection overrides:
    the one way `dsmar search`, `dsmar run` and the flow resolve a catalog."""
    return get_profile(
        search.profile, search.catalog_url, search.optical_collection, search.sar_collection, search.dem_collection
    )


def _override(value: str, given: str | None, what: str) -> str:
    """The profile's value, or the non-empty one given in its place."""
    if given is None:
        return value
    if not given.strip():
        raise InputError(f"{what} must not be empty")
    return given.strip()


def _check_url(url: str) -> None:
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise InputError(f"catalog URL {url!r} is not an http(s) URL such as http://127.0.0.1:8080")

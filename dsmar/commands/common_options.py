"""Options shared by `dsmar search` and `dsmar run`, defined once so a search can be repeated by a run
with the same flags and both `--help` pages say the same thing.

Values stay as typed here: `kernel.config` validates them into one error line, and its fields' defaults
are the ones shown.
"""

from __future__ import annotations

import argparse

from catalogs.profiles import PROFILE_NAMES
from kernel.config import ORBIT_STATES, SearchConfig, default


def add_catalog_arguments(parser: argparse.ArgumentParser) -> None:
    """--profile/--catalog/--*-collection."""
    cat = parser.add_argument_group("catalog")
    profile = default(SearchConfig, "profile")
    cat.add_argument("--profile", default=profile, choices=PROFILE_NAMES, help=f"catalog profile (default {profile})")
    cat.add_argument(
        "--catalog", metavar="URL", help="STAC API URL; required for the local profile, overrides the others' endpoint"
    )
    cat.add_argument("--optical-collection", metavar="ID", help="override the profile's optical collection")
    cat.add_argument("--sar-collection", metavar="ID", help="override the profile's SAR collection")
    cat.add_argument("--dem-collection", metavar="ID", help="override the profile's DEM collection")


def add_area_arguments(parser: argparse.ArgumentParser) -> None:
    """--bbox/--start/--end."""
    area = parser.add_argument_group("region")
    area.add_argument(
        "--bbox",
        type=float,
        nargs=4,
        required=True,
        metavar=("W", "S", "E", "N"),
        help="area of interest, lon/lat degrees",
    )
    area.add_argument("--start", required=True, metavar="YYYY-MM-DD", help="first day (inclusive)")
    area.add_argument("--end", required=True, metavar="YYYY-MM-DD", help="last day (inclusive)")


def add_pairing_arguments(parser: argparse.ArgumentParser) -> argparse._ArgumentGroup:
    """How strictly optical, SAR and DEM scenes must co-locate, and which SAR orbit direction to prefer."""
    pairing = parser.add_argument_group("pairing")
    pairing.add_argument(
        "--max-cloud",
        type=float,
        metavar="PCT",
        help=f"highest eo:cloud_cover, percent (default {default(SearchConfig, 'max_cloud'):g})",
    )
    pairing.add_argument(
        "--sar-window-days",
        type=float,
        metavar="N",
        help=f"SAR within this many days of the optical scene (default {default(SearchConfig, 'sar_window_days'):g})",
    )
    pairing.add_argument(
        "--min-overlap",
        type=float,
        metavar="F",
        help=f"least share of the AOI a scene must cover (default {default(SearchConfig, 'min_overlap'):g})",
    )
    pairing.add_argument(
        "--orbit-state", choices=ORBIT_STATES, help="preferred SAR orbit direction (default: the one most passes share)"
    )
    return pairing


def split_methods(text: str) -> tuple[str, ...]:
    """Comma-separated method specs; commas inside brackets belong to an option's value
    (dsmar:polish=[5,3], x:pair=(1,2), x:opts={'a':1,'b':2}), not between methods."""
    specs, depth, current = [], 0, ""
    for char in text:
        depth += (char in "([{") - (char in ")]}")
        if char == "," and depth <= 0:
            specs.append(current)
            current = ""
        else:
            current += char
    return tuple(spec.strip() for spec in [*specs, current] if spec.strip())

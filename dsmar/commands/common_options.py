"""Options shared by `dsmar search` and `dsmar run`, defined once so a search can be repeated by a run
with the same flags and both `--help` pages say the same thing.

Dates stay strings here: each command validates them into one error line (`kernel.config.parse_date`).
"""

from __future__ import annotations

import argparse

from catalogs.profiles import PROFILE_NAMES

ORBIT_STATES = ("ascending", "descending")


def add_catalog_arguments(parser: argparse.ArgumentParser) -> None:
    """--profile/--catalog/--*-collection."""
    cat = parser.add_argument_group("catalog")
    cat.add_argument(
        "--profile", default="earth-search", choices=PROFILE_NAMES, help="catalog profile (default earth-search)"
    )
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
        "--max-cloud", type=float, default=30.0, metavar="PCT", help="highest eo:cloud_cover, percent (default 30)"
    )
    pairing.add_argument(
        "--sar-window-days",
        type=float,
        default=3.0,
        metavar="N",
        help="SAR within this many days of the optical scene (default 3)",
    )
    pairing.add_argument(
        "--min-overlap",
        type=float,
        default=0.5,
        metavar="F",
        help="least share of the AOI a scene must cover (default 0.5)",
    )
    pairing.add_argument(
        "--orbit-state", choices=ORBIT_STATES, help="preferred SAR orbit direction (default: the one most passes share)"
    )
    return pairing

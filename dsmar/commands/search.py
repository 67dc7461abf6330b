"""`dsmar search`: find co-located optical, SAR and DEM scene sets in a STAC catalog."""

from __future__ import annotations

import argparse
import json
import sys
from datetime import date

from catalogs.colocate import ColocationResult, find_scene_sets
from catalogs.profiles import PROFILE_NAMES, get_profile


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "search",
        help="find co-located optical, SAR and DEM scene sets in a STAC catalog",
        description="Search a STAC API for optical scenes over an area and period and pair each with the "
        "nearest SAR pass and the DEM tiles under it. Rejected candidates and retries are reported on stderr.",
    )
    add_catalog_arguments(parser)
    add_area_arguments(parser)
    parser.add_argument("--max-cloud", type=float, default=30.0, metavar="N", help="highest eo:cloud_cover, percent (default 30)")
    parser.add_argument("--sar-window-days", type=float, default=3.0, metavar="N", help="SAR within this many days of the optical scene (default 3)")
    parser.add_argument("--min-overlap", type=float, default=0.5, metavar="F", help="least share of the AOI a scene must cover (default 0.5)")
    parser.add_argument("--orbit-state", choices=("ascending", "descending"), help="preferred SAR orbit direction (default: the one most passes share)")
    parser.add_argument("--json", action="store_true", help="print a JSON list, one object per scene set")
    parser.set_defaults(func=_run)


def add_catalog_arguments(parser: argparse.ArgumentParser) -> None:
    """--profile/--catalog/--*-collection, shared with `dsmar run`."""
    parser.add_argument("--profile", default="earth-search", choices=PROFILE_NAMES, help="catalog profile (default earth-search)")
    parser.add_argument("--catalog", metavar="URL", help="STAC API URL; required for the local profile, overrides the others' endpoint")
    parser.add_argument("--optical-collection", metavar="ID", help="override the profile's optical collection")
    parser.add_argument("--sar-collection", metavar="ID", help="override the profile's SAR collection")
    parser.add_argument("--dem-collection", metavar="ID", help="override the profile's DEM collection")


def add_area_arguments(parser: argparse.ArgumentParser) -> None:
    """--bbox/--start/--end, shared with `dsmar run`."""
    parser.add_argument("--bbox", type=float, nargs=4, required=True, metavar=("W", "S", "E", "N"), help="area of interest, lon/lat degrees")
    parser.add_argument("--start", type=parse_date, required=True, metavar="YYYY-MM-DD", help="first day (inclusive)")
    parser.add_argument("--end", type=parse_date, required=True, metavar="YYYY-MM-DD", help="last day (inclusive)")


def parse_date(text: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a date YYYY-MM-DD") from None


def profile_from_args(args):
    return get_profile(
        args.profile,
        catalog_url=args.catalog,
        optical_collection=args.optical_collection,
        sar_collection=args.sar_collection,
        dem_collection=args.dem_collection,
    )


def _run(args) -> int:
    profile = profile_from_args(args)
    result = find_scene_sets(
        profile,
        tuple(args.bbox),
        args.start,
        args.end,
        max_cloud=args.max_cloud,
        sar_window_days=args.sar_window_days,
        min_overlap=args.min_overlap,
        orbit_state=args.orbit_state,
    )
    report_to_stderr(result)
    if args.json:
        json.dump([s.to_summary() for s in result.scene_sets], sys.stdout, indent=2)
        print()
    else:
        print(format_table(result))
    return 0


def report_to_stderr(result: ColocationResult) -> None:
    """Rejections with reasons, and what was retried, one line each."""
    for rejection in result.rejections:
        print(f"rejected {rejection.item_id}: {rejection.reason}", file=sys.stderr)
    if result.retry_summary:
        print(f"catalog: {result.retry_summary}", file=sys.stderr)


def format_table(result: ColocationResult) -> str:
    """A plain-text table of the scene sets."""
    header = ("optical", "time (UTC)", "overlap", "SAR", "gap h", "DEM")
    rows = [
        (
            s.optical.id,
            s.optical.datetime.strftime("%Y-%m-%d %H:%M") if s.optical.datetime else "?",
            f"{s.overlap:.2f}",
            ", ".join(i.id for i in s.sar),
            f"{s.time_gap_hours:.1f}",
            ", ".join(i.id for i in s.dem),
        )
        for s in result.scene_sets
    ]
    if not rows and not result.rejections:
        return "no scene sets found: no optical items match this bbox and period"
    if not rows:
        return f"no scene sets found ({len(result.rejections)} candidates rejected; reasons above)"
    widths = [max(len(r[i]) for r in (header, *rows)) for i in range(len(header))]
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in (header, *rows)]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines) + f"\n{len(rows)} scene set(s), {len(result.rejections)} rejected"

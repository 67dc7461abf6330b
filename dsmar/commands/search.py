"""`dsmar search`: find co-located optical, SAR and DEM scene sets in a STAC catalog."""

from __future__ import annotations

import json
import sys

from catalogs.colocate import ColocationResult, find_scene_sets
from catalogs.profiles import profile_for
from dsmar.commands.common_options import (
    add_area_arguments,
    add_catalog_arguments,
    add_pairing_arguments,
)
from kernel.config import AreaPeriod, SearchConfig, build


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "search",
        help="find co-located optical, SAR and DEM scene sets in a STAC catalog",
        description="Search a STAC API for optical scenes over an area and period and pair each with the "
        "nearest SAR pass and the DEM tiles under it. Rejected candidates and retries are reported on stderr.",
    )
    add_catalog_arguments(parser)
    add_area_arguments(parser)
    add_pairing_arguments(parser)
    parser.add_argument("--json", action="store_true", help="print a JSON list, one object per scene set")
    parser.set_defaults(func=_run)


def search_config(args) -> SearchConfig:
    """The options validated as `dsmar run` validates them, so a bad value reads the same in both."""
    return build(
        SearchConfig,
        profile=args.profile,
        catalog_url=args.catalog,
        optical_collection=args.optical_collection,
        sar_collection=args.sar_collection,
        dem_collection=args.dem_collection,
        max_cloud=args.max_cloud,
        sar_window_days=args.sar_window_days,
        min_overlap=args.min_overlap,
        orbit_state=args.orbit_state,
    )


def area_period(args) -> AreaPeriod:
    """--bbox/--start/--end validated as `dsmar run` validates them."""
    return build(AreaPeriod, bbox=args.bbox, start=args.start, end=args.end)


def _run(args) -> int:
    area = area_period(args)
    search = search_config(args)
    result = find_scene_sets(profile_for(search), area, search)
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

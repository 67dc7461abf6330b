"""`dsmar backfill`: run a region over a past period now, window by window, into its cube."""

from __future__ import annotations

import shlex

from dsmar.commands.exit_codes import DONE, outcome_code
from dsmar.commands.region_file import add_region_argument, load_region
from flows.windows import DEFAULT_CONCURRENCY, DEFAULT_WINDOW_DAYS
from kernel.config import normalise_date
from kernel.errors import InputError


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "backfill",
        help="register a region over a past period now, window by window",
        description="Split --from..--to into windows and register each as its own Prefect subflow, up to "
        "--concurrency at once on one Dask cluster, into the region's cube (on the Prefect server at "
        "PREFECT_API_URL, else a temporary one). A failed window costs that window only; the end names it and "
        "the command that reruns it. Chunks already written are skipped, so a rerun does only what is missing.",
    )
    add_region_argument(parser)
    parser.add_argument("--from", dest="start", required=True, metavar="YYYY-MM-DD", help="first day (inclusive)")
    parser.add_argument("--to", dest="end", required=True, metavar="YYYY-MM-DD", help="last day (inclusive)")
    parser.add_argument(
        "--window-days",
        type=int,
        default=DEFAULT_WINDOW_DAYS,
        metavar="N",
        help=f"days per window (default {DEFAULT_WINDOW_DAYS})",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=DEFAULT_CONCURRENCY,
        metavar="K",
        help=f"windows at once (default {DEFAULT_CONCURRENCY}); their writes into the cube take turns",
    )
    parser.set_defaults(func=_run)


def _run(args) -> int:
    from flows.environment import apply_defaults

    apply_defaults()
    region = load_region(args.region)
    config = region.run_config(normalise_date(args.start, "--from"), normalise_date(args.end, "--to"))
    for flag, value in (("--window-days", args.window_days), ("--concurrency", args.concurrency)):
        if value < 1:
            raise InputError(f"{flag} must be at least 1, got {value}")

    from dsmar.commands.run import configure_logging, preflight
    from flows.api import prefect_api
    from flows.backfill import backfill

    preflight(config)
    configure_logging()
    with prefect_api():
        state = backfill(config, config.start, config.end, args.window_days, args.concurrency, return_state=True)
        summary = state.result(raise_on_failure=False)
    if isinstance(summary, BaseException):
        raise summary
    for window in summary.windows:
        print(f"{window.label}: {_window_line(window)}")
    runs = summary.runs
    if not summary.failed and not any(run.scene_sets for run in runs):
        print(f"no scenes to register in {list(config.bbox)} {config.start}..{config.end}; nothing to do")
        return DONE
    written, skipped = sum(r.tiles_written for r in runs), sum(r.tiles_skipped for r in runs)
    print(f"Tiles written: {written}, skipped (up to date): {skipped}")
    print(f"Cube: {config.out}")
    if summary.failed:
        print(f"Failed ({len(summary.failed_windows)} of {len(summary.windows)} windows):")
        for line in summary.failed:
            print(f"  {line}")
        print("Rerun them (chunks already written are skipped):")
        for window in summary.failed_windows:
            print(f"  {rerun_command(args.region, window.start, window.end, args.window_days)}")
    return outcome_code(summary.failed)


def _window_line(window) -> str:
    if window.error is not None:
        return f"FAILED: {window.error}"
    run = window.summary
    if not run.scene_sets:
        return "no scenes"
    failed = f", {len(run.failed)} failed" if run.failed else ""
    return f"{run.scene_sets} scene set(s), tiles written {run.tiles_written}, skipped {run.tiles_skipped}{failed}"


def rerun_command(region: str, start, end, window_days: int) -> str:
    """The command that runs one window again."""
    return f"dsmar backfill {shlex.quote(region)} --from {start} --to {end} --window-days {window_days}"

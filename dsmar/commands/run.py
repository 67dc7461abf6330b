"""`dsmar run`: search a catalog for a region and period, register every scene set, write the cube."""

from __future__ import annotations

import logging
import re
import sys
import warnings

from catalogs.profiles import profile_for
from dsmar.commands.common_options import add_area_arguments, add_catalog_arguments, add_pairing_arguments
from dsmar.commands.exit_codes import DONE, outcome_code
from dsmar.commands.search import search_config
from kernel.config import ClusterConfig, RunConfig, TileConfig, build, default
from kernel.contracts import DEFAULT_METHOD
from kernel.errors import DsmarError, InputError
from kernel.paths import check_writable_dir
from models.api import method_spec


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "run",
        help="register SAR and DEM onto optical scenes of a region and write an aligned Zarr cube",
        description="Search a STAC catalog for co-located optical, SAR and DEM scenes in a region and "
        "period, register SAR and DEM onto each optical scene tile by tile on Dask, and write the "
        "aligned cube (Contract 3 in docs/pipeline.md).",
    )
    add_run_arguments(parser)
    parser.set_defaults(func=_run)


def add_run_arguments(parser) -> None:
    """Options shared by every command that runs the flow (catalog, region and pairing as in `dsmar search`)."""
    add_catalog_arguments(parser)
    add_area_arguments(parser)
    add_pairing_arguments(parser)
    out = parser.add_argument_group("output")
    out.add_argument("--out", required=True, metavar="PATH.zarr", help="cube to create or extend")
    out.add_argument("--report", metavar="DIR", help="also write report.md and PNG quicklooks here")
    proc = parser.add_argument_group("processing")
    proc.add_argument(
        "--method",
        default=DEFAULT_METHOD,
        metavar="SPEC",
        help=f"registration method, optionally with options: dsmar:augment=1 (default {DEFAULT_METHOD})",
    )
    add_tile_arguments(proc)
    add_cluster_arguments(proc)


def add_cluster_arguments(group) -> None:
    """Where the tiles run: an existing scheduler, or the shape of the local cluster (docs/cluster.md)."""
    group.add_argument("--dask-address", metavar="ADDR", help="use this Dask scheduler instead of a local cluster")
    group.add_argument(
        "--workers", type=int, metavar="N", help="local cluster workers (default: one per core, or one per GPU)"
    )
    group.add_argument(
        "--threads-per-worker",
        type=int,
        metavar="N",
        help="threads of each local worker (default: 1, or the cores shared out among GPU workers)",
    )
    group.add_argument(
        "--memory-limit", metavar="SIZE", help="memory of each local worker, e.g. 4GiB (default: Dask's share)"
    )


def cluster_config(args) -> ClusterConfig:
    """The cluster options; those of a local cluster next to --dask-address are refused rather than ignored."""
    config = build(
        ClusterConfig,
        address=args.dask_address,
        workers=args.workers,
        threads_per_worker=args.threads_per_worker,
        memory_limit=args.memory_limit,
    )
    if config.address and config.local_options:
        raise InputError(
            f"{', '.join(config.local_options)} shape a local cluster; with --dask-address the workers' own options "
            "apply (dask worker --nworkers/--nthreads/--memory-limit)"
        )
    return config


def add_tile_arguments(group) -> None:
    """--tile-size/--halo, shared with `dsmar demo`."""
    size, halo = default(TileConfig, "size"), default(TileConfig, "halo")
    group.add_argument("--tile-size", type=int, metavar="N", help=f"tile and Zarr chunk size (default {size})")
    group.add_argument(
        "--halo",
        type=int,
        metavar="N",
        help=f"extra pixels per tile side; > largest displacement + method window (default {halo})",
    )


def config_from_args(args) -> RunConfig:
    """Validate the options into a RunConfig; every problem is one InputError line."""
    from pipeline.outputs import check_output  # zarr and xarray load only when a run is configured

    search = search_config(args)
    # Resolving the profile now reports a missing --catalog or an unknown profile before any work.
    profile_for(search)
    report = str(check_writable_dir(args.report, "report directory").resolve()) if args.report else None
    return build(
        RunConfig,
        bbox=args.bbox,
        start=args.start,
        end=args.end,
        out=check_output(args.out),
        search=search,
        method=method_spec(args.method).text,
        tiles=build(TileConfig, size=args.tile_size, halo=args.halo),
        cluster=cluster_config(args),
        report_dir=report,
    )


def _error_names(cls: type) -> set[str]:
    return {cls.__name__}.union(*(_error_names(sub) for sub in cls.__subclasses__()))


class _DropExpectedErrors(logging.Filter):
    """Prefect logs a failing flow's traceback and final state; for a DsmarError the CLI's one line
    says it all (Prefect's state lines name the exception only as text: matched by class name), and
    so does its "interrupted"/"terminated" line for Prefect's crash reports of Ctrl-C and SIGTERM."""

    STATE = re.compile(r"encountered an exception:? (\w+):")
    SIGNALLED = re.compile(r"aborted by (an interrupt|a termination) signal")

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], DsmarError):
            return False
        if record.levelno < logging.ERROR:
            return True
        message = record.getMessage()
        match = self.STATE.search(message)
        return not (match and match.group(1) in _error_names(DsmarError)) and not self.SIGNALLED.search(message)


class _StderrHandler(logging.StreamHandler):
    """Writes to whatever `sys.stderr` is when a line is logged, not to the stream it was made with: a process
    that swaps stderr (a notebook, a test capturing it) never gets lines written to a closed stream."""

    @property  # type: ignore[override]
    def stream(self):
        return sys.stderr

    @stream.setter
    def stream(self, value) -> None:
        pass


def configure_logging() -> None:
    """dsmar's progress as plain lines on stderr; Prefect and Dask stay at warnings (call after
    Prefect is imported: its console handler is on the root logger)."""
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, _DropExpectedErrors) for f in handler.filters):
            handler.addFilter(_DropExpectedErrors())
    logger = logging.getLogger("dsmar")
    if not logger.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
        logger.propagate = False
    # distributed imports the deprecated pynvml shim; workers get the same filter via flows.environment.
    warnings.filterwarnings("ignore", category=FutureWarning, module="distributed.diagnostics.nvml")
    import distributed  # noqa: F401  (configures its loggers on import; quiet them after)

    logging.getLogger("distributed").setLevel(logging.WARNING)


def preflight(config: RunConfig) -> None:
    """What can fail in seconds fails before Prefect and Dask start (10-15 s): the catalog answers,
    the scheduler listens, an existing cube takes this method (weights, settings) and tile size. A relative
    DSMAR_WEIGHTS is made absolute here, before any worker (in another folder) reads it."""
    from catalogs.stac_search import CatalogSearcher
    from models.dsmar.weights import pin_weights_env
    from pipeline.cluster import check_scheduler
    from pipeline.outputs import open_store

    pin_weights_env()
    open_store(config.out).check_target(method_spec(config.method), config.tiles.size)
    if config.cluster.address:
        check_scheduler(config.cluster.address)
    CatalogSearcher(profile_for(config.search))


def execute(config: RunConfig):
    """Run the flow and return its summary (no scene sets: `quiet_notice` says why)."""
    preflight(config)
    from flows.api import prefect_api
    from flows.register_region import register_region  # imports Prefect: only when running

    configure_logging()
    with prefect_api():
        return register_region(config)


def quiet_notice(summary, config: RunConfig) -> str | None:
    """For a run that found no scene sets, the one line that says why (the search's rejections)."""
    if summary.scene_sets:
        return None
    reasons = "; ".join(f"{item}: {reason}" for item, reason in summary.rejections[:5])
    more = f" (+{len(summary.rejections) - 5} more)" if len(summary.rejections) > 5 else ""
    why = f": {reasons}{more}" if reasons else ": the catalog returned no optical items for this bbox and period"
    return f"no scenes to register in {list(config.bbox)} {config.start}..{config.end}{why}; nothing to do"


def print_summary(summary) -> None:
    from flows.register_region import summary_lines

    for line in summary_lines(summary):
        print(line)
    print(f"Cube: {summary.out}")
    if summary.report:
        print(f"Report: {summary.report}")


def _run(args) -> int:
    from flows.environment import apply_defaults

    apply_defaults()
    config = config_from_args(args)
    summary = execute(config)
    notice = quiet_notice(summary, config)
    if notice:
        print(notice)
        return DONE
    print_summary(summary)  # names each failed chunk by its date
    return outcome_code(summary.failed)

"""`dsmar deploy`: register a region's scheduled and backfill deployments on the configured Prefect server."""

from __future__ import annotations

from datetime import UTC, datetime

from dsmar.commands.region_file import add_region_argument, load_region
from kernel.errors import InputError

NO_SERVER = (
    "dsmar deploy needs a Prefect server (schedules live there): start one with `prefect server start` "
    "and set PREFECT_API_URL=http://127.0.0.1:4200/api (docs/operations.md)"
)


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "deploy",
        help="register a region's scheduled and backfill deployments on the Prefect server",
        description="Register, on the Prefect server at PREFECT_API_URL, the region's scheduled deployment "
        "(new acquisitions since its last successful run) and its backfill deployment, on the process work "
        "pool 'dsmar' (created if missing). A worker started with `prefect worker start --pool dsmar` runs them "
        "from this checkout.",
    )
    add_region_argument(parser)
    parser.set_defaults(func=_run)


def _run(args) -> int:
    from flows.environment import apply_defaults

    apply_defaults()
    region = load_region(args.region)
    from prefect.settings import PREFECT_API_URL

    if not PREFECT_API_URL.value():
        raise InputError(NO_SERVER)
    from flows.deployments import DEFAULT_CRON, REPO, WORK_POOL, deploy_region, ensure_work_pool

    created = ensure_work_pool()
    today = datetime.now(UTC).date()  # a placeholder period: each run replaces it with its own
    try:
        scheduled, backfill = deploy_region(region.run_config(today, today), region.name, region.cron, region.timezone)
    except InputError as err:  # the schedule, checked by Prefect's own parser
        raise InputError(f"{args.region}: {err}") from None
    print(f"Work pool {WORK_POOL} (process): {'created' if created else 'exists'}")
    print(f"Deployment {scheduled}: cron '{region.cron or DEFAULT_CRON}' ({region.timezone}), into {region.out}")
    print(f"Deployment {backfill}: on demand, e.g.")
    print(f"  prefect deployment run '{backfill}' -p start=YYYY-MM-DD -p end=YYYY-MM-DD")
    print(f"Start a worker (in {REPO}): prefect worker start --pool {WORK_POOL}")
    return 0

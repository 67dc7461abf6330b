"""Deployments of a region on a Prefect server: a scheduled run for new acquisitions, and an on-demand backfill.

Both run from this repository on a process work pool (`WORK_POOL`): a worker started with
`prefect worker start --pool dsmar` on a machine with this checkout runs each flow run in a process of
its own, in the repository's folder (no image, no git pull). Schedules need a real Prefect server
(`prefect server start`, then `PREFECT_API_URL`); a temporary API keeps none. `dsmar deploy REGION.toml`
calls `deploy_region`.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from uuid import UUID

from prefect import flow

from flows.backfill import backfill
from flows.register_region import RunSummary, register_region
from flows.windows import DEFAULT_CONCURRENCY, DEFAULT_WINDOW_DAYS
from kernel.config import RunConfig
from kernel.errors import DsmarError, InputError

if TYPE_CHECKING:
    from prefect.deployments.runner import RunnerDeployment

DEFAULT_CRON = "0 6 * * *"  # daily, after the night's acquisitions are catalogued
DEFAULT_LOOKBACK_DAYS = 12  # one Sentinel-1 repeat cycle plus slack: late-catalogued scenes are caught
WORK_POOL = "dsmar"
REPO = Path(__file__).resolve().parents[1]  # the code a worker runs: this checkout


@flow(name="scheduled-region")
def scheduled_region(
    region: RunConfig, lookback_days: int = DEFAULT_LOOKBACK_DAYS, today: date | None = None
) -> RunSummary:
    """Register the acquisitions since this deployment's last successful run, and at least the last
    `lookback_days` (scenes are catalogued late); chunks already written are skipped. The region's own
    dates are replaced."""
    end = today or datetime.now(UTC).date()
    start = scheduled_start(end, lookback_days, _last_success())
    return register_region(region.model_copy(update={"start": start, "end": end}))


def scheduled_start(today: date, lookback_days: int, last_success: date | None) -> date:
    """The first day a scheduled run searches: the look-back, or further back to the last successful run
    (a worker that was down for weeks catches up on its first run)."""
    floor = today - timedelta(days=lookback_days)
    return floor if last_success is None else min(floor, last_success)


def _last_success() -> date | None:
    """The UTC day the last completed run of the current deployment started; None outside a deployment."""
    from prefect import get_client
    from prefect.client.schemas.filters import (
        DeploymentFilter,
        DeploymentFilterId,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort
    from prefect.runtime import deployment

    if not deployment.id:
        return None
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[UUID(deployment.id)])),
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.COMPLETED]))
            ),
            sort=FlowRunSort.START_TIME_DESC,
            limit=1,
        )
    started = runs[0].start_time if runs else None
    return started.astimezone(UTC).date() if started else None


def backfill_name(name: str) -> str:
    return f"{name}-backfill"


def region_deployments(
    region: RunConfig,
    name: str,
    cron: str = DEFAULT_CRON,
    timezone: str = "UTC",
    lookback_days: int = DEFAULT_LOOKBACK_DAYS,
) -> list[RunnerDeployment]:
    """The scheduled deployment and the (unscheduled) backfill deployment of one region, from this checkout.

    The `region` parameter is the region's RunConfig; each run replaces its dates with its own."""
    from prefect.schedules import Cron

    params = region.model_dump(mode="json")
    source = str(REPO)
    try:
        schedule = Cron(cron, timezone=timezone)
    except ValueError:
        raise InputError(f"schedule.cron {cron!r} is not a cron expression such as '0 6 * * *'") from None
    return [
        scheduled_region.from_source(source, "flows/deployments.py:scheduled_region").to_deployment(
            name=name,
            schedules=[schedule],
            parameters={"region": params, "lookback_days": lookback_days},
            description=f"Register new acquisitions over {list(region.bbox)} into {region.out}",
            tags=["dsmar", "scheduled"],
        ),
        backfill.from_source(source, "flows/backfill.py:backfill").to_deployment(
            name=backfill_name(name),
            parameters={"region": params, "window_days": DEFAULT_WINDOW_DAYS, "concurrency": DEFAULT_CONCURRENCY},
            description=f"Backfill {list(region.bbox)} into {region.out}: give start and end",
            tags=["dsmar", "backfill"],
        ),
    ]


def ensure_work_pool(name: str = WORK_POOL) -> bool:
    """Create the process work pool `name` unless it exists; True when created here."""
    from prefect import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectNotFound
    from prefect.workers.process import ProcessWorker

    with get_client(sync_client=True) as client:
        unhealthy = client.api_healthcheck()
        if unhealthy is not None:
            raise DsmarError(f"the Prefect API at {client.api_url} does not answer ({unhealthy}); is the server up?")
        try:
            pool = client.read_work_pool(name)
        except ObjectNotFound:
            template = ProcessWorker.get_default_base_job_template()
            client.create_work_pool(WorkPoolCreate(name=name, type="process", base_job_template=template))
            return True
    if pool.type != "process":
        raise InputError(f"work pool {name!r} exists with type {pool.type!r}; dsmar deploys to a process pool")
    return False


def deploy_region(region: RunConfig, name: str, cron: str | None, timezone: str) -> list[str]:
    """Register both deployments of a region on the work pool `WORK_POOL`; their names, `flow/deployment`."""
    from prefect import deploy

    deployments = region_deployments(region, name, cron or DEFAULT_CRON, timezone)
    deploy(
        *deployments,
        work_pool_name=WORK_POOL,
        build=False,
        push=False,
        print_next_steps_message=False,
        ignore_warnings=True,
    )
    return [f"{d.flow_name}/{d.name}" for d in deployments]

"""Deployments: a scheduled region (new acquisitions every day) and an on-demand backfill.

Schedules need a real Prefect server (`prefect server start`, then `PREFECT_API_URL`); a temporary
API accepts no schedules. Serve both for a region with
`python -m flows.deployments region.json` (a RunConfig as JSON; see docs/pipeline.md).
"""

from __future__ import annotations

import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from prefect import flow, serve
from prefect.deployments.runner import RunnerDeployment

from flows.backfill import DEFAULT_WINDOW_DAYS, backfill
from flows.environment import apply_defaults
from flows.register_region import RunSummary, register_region
from kernel.config import RunConfig, from_json
from kernel.errors import InputError

DEFAULT_CRON = "0 6 * * *"  # daily, after the night's acquisitions are catalogued
DEFAULT_LOOKBACK_DAYS = 12  # one Sentinel-1 repeat cycle plus slack: late-catalogued scenes are caught


@flow(name="scheduled-region")
def scheduled_region(
    region: RunConfig, lookback_days: int = DEFAULT_LOOKBACK_DAYS, today: date | None = None
) -> RunSummary:
    """Register the last `lookback_days` of acquisitions; chunks already written are skipped."""
    end = today or datetime.now(UTC).date()
    return register_region(region.model_copy(update={"start": end - timedelta(days=lookback_days), "end": end}))


def region_deployments(
    region: RunConfig, name: str, cron: str = DEFAULT_CRON, lookback_days: int = DEFAULT_LOOKBACK_DAYS
) -> list[RunnerDeployment]:
    """The scheduled deployment and the (unscheduled) backfill deployment of one region."""
    params = region.model_dump(mode="json")
    return [
        scheduled_region.to_deployment(
            name=name,
            cron=cron,
            parameters={"region": params, "lookback_days": lookback_days},
            description=f"Register new acquisitions over {list(region.bbox)} into {region.out}",
            tags=["dsmar", "scheduled"],
        ),
        backfill.to_deployment(
            name=f"{name}-backfill",
            parameters={"region": params, "window_days": DEFAULT_WINDOW_DAYS},
            description=f"Backfill {list(region.bbox)} into {region.out}: give start and end",
            tags=["dsmar", "backfill"],
        ),
    ]


def main(argv: list[str]) -> int:
    apply_defaults()
    if len(argv) != 1:
        print("usage: python -m flows.deployments REGION.json", file=sys.stderr)
        return 2
    path = Path(argv[0])
    try:
        region = from_json(RunConfig, path.read_text())
    except (OSError, InputError) as err:
        print(f"flows.deployments: error: cannot read a RunConfig from {path}: {err}", file=sys.stderr)
        return 2
    serve(*region_deployments(region, name=path.stem))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Operator backfills: one region over a long period, processed window by window into one cube.

Each window is a `register_region` subflow of its own, run in a task so up to `concurrency` windows run at
once, all on one Dask cluster (the region's scheduler, or one local cluster started for the backfill).
The cube's lock lets one window write at a time: concurrent windows overlap their catalog searches and
planning while registration and writes into the one cube take turns. A failed window costs that window
only: the others go on, and the backfill ends Failed with a message naming the failed windows by their
dates. A re-run skips every chunk already written with the same inputs, so it does only what is missing;
new acquisitions take their place on the cube's time axis, which stays in order whatever order the
windows run in.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import date

from prefect import flow, task
from prefect.cache_policies import NO_CACHE
from prefect.states import Completed, Failed, State
from prefect.task_runners import ThreadPoolTaskRunner

from flows.register_region import RunSummary, register_region
from flows.shared_cluster import shared_cluster
from flows.windows import DEFAULT_CONCURRENCY, DEFAULT_WINDOW_DAYS, split_period
from kernel.config import RunConfig
from kernel.errors import InputError

log = logging.getLogger("dsmar")


@dataclass(frozen=True)
class WindowOutcome:
    """One window: its run's summary, or why it failed."""

    start: date
    end: date
    summary: RunSummary | None = None
    error: str | None = None

    @property
    def label(self) -> str:
        return f"{self.start}..{self.end}"

    @property
    def failed(self) -> tuple[str, ...]:
        """What this window left undone, each named by the window's dates (and the tile's, for a failed tile)."""
        if self.error is not None:
            return (f"{self.label}: {self.error}",)
        return tuple(f"{self.label}: {what}" for what in self.summary.failed) if self.summary else ()


@dataclass(frozen=True)
class BackfillSummary:
    windows: tuple[WindowOutcome, ...]

    @property
    def failed(self) -> tuple[str, ...]:
        return tuple(line for window in self.windows for line in window.failed)

    @property
    def failed_windows(self) -> tuple[WindowOutcome, ...]:
        """The windows to run again (a window with failed tiles too: its re-run redoes only those)."""
        return tuple(window for window in self.windows if window.failed)

    @property
    def runs(self) -> tuple[RunSummary, ...]:
        return tuple(window.summary for window in self.windows if window.summary is not None)


@task(name="window", cache_policy=NO_CACHE)
def run_window(config: RunConfig) -> RunSummary:
    return register_region(config)


@flow(name="backfill")
def backfill(
    region: RunConfig,
    start: date,
    end: date,
    window_days: int = DEFAULT_WINDOW_DAYS,
    concurrency: int = DEFAULT_CONCURRENCY,
) -> State:
    """Process `region` (its bbox, catalog, cube and method; its own dates are replaced) over start..end.

    Ends Completed, or Failed when a window failed; either way the state's result is the `BackfillSummary`.
    """
    if concurrency < 1:
        raise InputError(f"concurrency must be at least 1, got {concurrency}")
    windows = split_period(start, end, window_days)
    with shared_cluster(region.cluster), ThreadPoolTaskRunner(max_workers=concurrency) as runner:
        futures = [
            runner.submit(run_window, parameters={"config": region.model_copy(update={"start": a, "end": b})})
            for a, b in windows
        ]
        outcomes = tuple(_outcome(a, b, future) for (a, b), future in zip(windows, futures))
    summary = BackfillSummary(outcomes)
    if not summary.failed:
        return Completed(message=f"{len(windows)} window(s) done", data=summary)
    for line in summary.failed:
        log.error("failed: %s", line)
    names = ", ".join(window.label for window in summary.failed_windows)
    return Failed(message=f"{len(summary.failed_windows)} of {len(windows)} window(s) failed: {names}", data=summary)


def _outcome(start: date, end: date, future) -> WindowOutcome:
    future.wait()
    result = future.result(raise_on_failure=False)
    if isinstance(result, BaseException):
        message = str(result).splitlines()[0] if str(result) else type(result).__name__
        return WindowOutcome(start, end, error=message)
    return WindowOutcome(start, end, summary=result)

"""Operator backfills: one region over a long period, processed window by window into one cube.

Each window is a full `register_region` run (its own Prefect subflow), so a failure costs one window,
a re-run skips every chunk already written with the same inputs, and new acquisitions take their
place on the cube's time axis, which stays in order whatever order the windows run in.
"""

from __future__ import annotations

from datetime import date, timedelta

from prefect import flow

from flows.register_region import RunSummary, register_region
from kernel.config import RunConfig, check_period
from kernel.errors import InputError


def split_period(start: date, end: date, window_days: int) -> list[tuple[date, date]]:
    """Consecutive inclusive windows [a, b] of at most `window_days` days covering start..end exactly."""
    if window_days < 1:
        raise InputError(f"window_days must be at least 1, got {window_days}")
    check_period(start, end)
    windows, a = [], start
    while a <= end:
        b = min(end, a + timedelta(days=window_days - 1))
        windows.append((a, b))
        a = b + timedelta(days=1)
    return windows


DEFAULT_WINDOW_DAYS = 30  # a month of acquisitions per subflow: a failure costs little, the overhead stays small


@flow(name="backfill")
def backfill(region: RunConfig, start: date, end: date, window_days: int = DEFAULT_WINDOW_DAYS) -> list[RunSummary]:
    """Process `region` (its bbox, catalog, cube and method; its own dates are ignored) over start..end."""
    return [
        register_region(region.model_copy(update={"start": a, "end": b}))
        for a, b in split_period(start, end, window_days)
    ]

"""How a backfill cuts its period: windows of days, and how many run at once (no Prefect import, so the CLI can
show these defaults without loading it)."""

from __future__ import annotations

from datetime import date, timedelta

from kernel.config import check_period
from kernel.errors import InputError

DEFAULT_WINDOW_DAYS = 30  # a month of acquisitions per subflow: a failure costs little, the overhead stays small
DEFAULT_CONCURRENCY = 2  # windows at once: one searches and loads while another registers and writes


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

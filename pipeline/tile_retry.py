"""Retries for the tile tasks, and the record of a tile that still failed.

A tile's registration, or its chunk's blend-warp-write, may fail transiently (a worker short of memory, a
storage hiccup): it is tried again after a pause that doubles each time. What still fails is recorded as a
`TileFailure` and costs that chunk only; its inputs hash stays unwritten, so the next run redoes it. Window
reads retry the same number of times through Dask (`TILE_RETRY.attempts`), on top of the loader's own HTTP
retries.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

log = logging.getLogger("dsmar")
T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    """How a tile task is retried: `delays` are the pauses before the second, third, ... try (seconds)."""

    delays: tuple[float, ...] = (1.0, 2.0)

    @property
    def attempts(self) -> int:
        return len(self.delays) + 1

    def call(self, what: str, fn: Callable[..., T], *args, **kwargs) -> T:
        """`fn(*args, **kwargs)`, tried again after each of `delays` while it raises; the last error propagates."""
        for attempt, delay in enumerate(self.delays, start=1):
            try:
                return fn(*args, **kwargs)
            except Exception as error:  # any fault may be transient; the last try's error is the one recorded
                log.warning("%s failed (try %d of %d, again in %g s): %s", what, attempt, self.attempts, delay, error)
                time.sleep(delay)
        return fn(*args, **kwargs)


TILE_RETRY = RetryPolicy()  # 3 tries: after 1 s, then 2 s


@dataclass(frozen=True)
class TileFailure:
    """A chunk that was not written: its tile (row, col) in the chunk plan, the modality whose registration
    failed (or every modality, joined by '+', where the chunk's own reads or write failed), and why."""

    tile: tuple[int, int]
    modality: str
    reason: str

    def describe(self, date: str) -> str:
        """'YYYY-MM-DD modality tile (i, j): reason', as a run summary lists it."""
        return f"{date} {self.modality} tile ({self.tile[0]}, {self.tile[1]}): {self.reason}"


def error_line(error: BaseException) -> str:
    """An exception as one short line: its type and the first line of its message."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__

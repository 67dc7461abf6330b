"""Progress of a tile run as an operator reads it: share done, rate in tiles and megapixels per second, ETA."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TileRate:
    """Rate and ETA of `total` tiles of `megapixels` in all, started at `started` (seconds of any clock).

    The rate is the mean since the start: steady once the first tiles are through, where a window over
    the last few would jump with each tile's own cost.
    """

    total: int
    megapixels: float
    started: float

    def line(self, done: int, now: float) -> str:
        """`tiles 40/120 (33 %), 1.8 tiles/s, 0.21 MP/s, ETA 44 s`; the rate once a tile is done."""
        parts = [f"tiles {done}/{self.total} ({100 * done / self.total:.0f} %)" if self.total else "tiles 0/0"]
        elapsed = now - self.started
        if done and elapsed > 0:
            rate = done / elapsed
            parts += [f"{_figure(rate)} tiles/s", f"{_figure(rate * self.megapixels / self.total)} MP/s"]
            parts.append(
                f"ETA {duration((self.total - done) / rate)}" if done < self.total else f"in {duration(elapsed)}"
            )
        return ", ".join(parts)


def _figure(value: float) -> str:
    """Two significant figures, without an exponent: 0.21, 1.8, 12, 340."""
    return f"{value:.0f}" if value >= 10 else f"{value:.2g}"


def duration(seconds: float) -> str:
    """44 s, 12 min, 3.5 h: the unit an operator plans with."""
    if seconds < 100:
        return f"{seconds:.0f} s"
    if seconds < 6000:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"

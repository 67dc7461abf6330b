"""Progress of a tile run as an operator reads it: tiles registered and written, share done, megapixels per second, ETA."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class TileProgress:
    """Where a tile run stands: registration tiles registered (or failed) of those it registers, and chunks written
    (or failed) of those it writes. Registration runs rows ahead of the writes, so a run on a wide scene registers
    for minutes before its first chunk is written: both counts show that it is alive."""

    registered: int
    registrations: int
    written: int
    chunks: int

    @property
    def share(self) -> float:
        """The share of the run's tasks settled, registrations and chunk writes alike (1.0 for an empty run)."""
        total = self.registrations + self.chunks
        return (self.registered + self.written) / total if total else 1.0


@dataclass(frozen=True)
class TileRate:
    """Rate and ETA of a tile run of `megapixels` (its chunks' cores), started at `started` (seconds of any clock).

    The rate is the mean since the start, of the settled share of the run's tasks: steady once the first tiles are
    through, where a window over the last few would jump with each tile's own cost.
    """

    megapixels: float
    started: float

    def line(self, progress: TileProgress, now: float) -> str:
        """`tiles 40/120 written, 90/160 registered (46 %), 0.052 MP/s, ETA 44 s`; the rate once a task is settled."""
        p, share = progress, progress.share
        parts = [
            f"tiles {p.written}/{p.chunks} written, {p.registered}/{p.registrations} registered ({100 * share:.0f} %)"
        ]
        elapsed = now - self.started
        if share and elapsed > 0:
            parts.append(f"{two_significant(share * self.megapixels / elapsed)} MP/s")
            parts.append(eta(share, elapsed))
        return ", ".join(parts)


def eta(share: float, elapsed: float) -> str:
    """`ETA 44 s` for a run `share` (> 0) done after `elapsed` seconds at its mean rate, `in 3 min` once done."""
    return f"ETA {duration(elapsed * (1 - share) / share)}" if share < 1 else f"in {duration(elapsed)}"


def two_significant(value: float) -> str:
    """Two significant figures, without an exponent: 0.21, 1.8, 12, 340."""
    return f"{value:.0f}" if value >= 10 else f"{value:.2g}"


def duration(seconds: float) -> str:
    """44 s, 12 min, 3.5 h: the unit an operator plans with."""
    if seconds < 100:
        return f"{seconds:.0f} s"
    if seconds < 6000:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"

"""Quality gating of registration tiles: a tile whose field is not credible is replaced by its neighbours' trend.

Every registration tile is summarised by its median displacement and mean confidence. Its **trend** is taken
from its neighbours (the tiles of its modality's plan within `TREND_RADIUS` rows and columns, itself excluded):
the component-wise median of the confident neighbours (mean confidence at least `MIN_MEAN_CONFIDENCE`) that
lie within `MAX_TREND_DEVIATION_PX` of those neighbours' own median. A tile is **accepted** when it is
confident and within `MAX_TREND_DEVIATION_PX` of its trend (or has no trend: no confident neighbour, as for a
scene of one tile). A tile not accepted **falls back** to its trend, a constant field at the tile's own
confidence so that the blend still lets its neighbours outweigh it (flag `FLAG_TREND`), or, without a trend, to
the zero field, no warp (flag `FLAG_NO_WARP`).

The trend is local, not scene-wide, so that it is the same whichever chunks a run has to do: a resumed run
registers the neighbours of its chunks' tiles again, and writes what an uninterrupted run writes. The flags go
into the cube's per-time `quality_<modality>` variable (`QUALITY_ATTRS`) at the pixels of each tile's core.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np

# A mean confidence below this is a failed match: cfog's wild 29 px tile on a 2.3 px truth scored 0.015.
MIN_MEAN_CONFIDENCE = 0.05
# A tile's median field this far from its trend is implausible: the synthetic scenes' fields vary by
# under 4 px across a scene (shift, elastic and terrain parts), real ones by less.
MAX_TREND_DEVIATION_PX = 8.0
# How far (in tiles, rows and columns) the neighbours reach that make a tile's trend: up to 24 of them.
TREND_RADIUS = 2

FLAG_REGISTERED, FLAG_TREND, FLAG_NO_WARP = 0, 1, 2  # the quality flags, as stored
QUALITY_FILL = 255  # a chunk not written yet
QUALITY_ATTRS = {
    "long_name": "registration quality flag",
    "flag_values": [FLAG_REGISTERED, FLAG_TREND, FLAG_NO_WARP],
    "flag_meanings": "registered fell_back_to_trend no_warp",
    "comment": (
        f"per registration tile: registered when its mean confidence >= {MIN_MEAN_CONFIDENCE} and its median "
        f"displacement is within {MAX_TREND_DEVIATION_PX} px of its trend (the median field of its confident "
        f"neighbours within {TREND_RADIUS} tiles); otherwise that trend, or zero (no warp) where it has none"
    ),
}


@dataclass(frozen=True)
class TileSummary:
    """What gating needs of one registration tile: its median (dy, dx) and mean confidence."""

    shift: tuple[float, float]
    confidence: float

    @classmethod
    def of(cls, displacement: np.ndarray, confidence: np.ndarray) -> TileSummary:
        finite = np.isfinite(displacement).all(axis=0)
        shift = np.median(displacement[:, finite], axis=1) if finite.any() else np.full(2, np.nan)
        return cls((float(shift[0]), float(shift[1])), float(np.nan_to_num(confidence).mean()))


@dataclass(frozen=True)
class Verdict:
    """What becomes of one registration tile: its flag, the constant field it falls back to (unused when
    registered), its mean confidence, and why it was not accepted."""

    flag: int
    shift: tuple[float, float]
    confidence: float
    reason: str = ""


Position = tuple[int, int]  # a registration tile's (row, col) in its plan


def _median(shifts: list[tuple[float, float]]) -> tuple[float, float]:
    dy, dx = np.median(np.array(shifts), axis=0)
    return float(dy), float(dx)


def _deviation(shift: tuple[float, float], trend: tuple[float, float]) -> float:
    return float(np.hypot(shift[0] - trend[0], shift[1] - trend[1]))


def _confident(summary: TileSummary) -> bool:
    return summary.confidence >= MIN_MEAN_CONFIDENCE and bool(np.isfinite(summary.shift).all())


def neighbourhood(position: Position) -> list[Position]:
    """The positions whose summaries make the trend of `position` (whether or not the plan has them)."""
    i, j = position
    reach = range(-TREND_RADIUS, TREND_RADIUS + 1)
    return [(i + di, j + dj) for di in reach for dj in reach if (di, dj) != (0, 0)]


def trend(position: Position, summaries: Mapping[Position, TileSummary]) -> tuple[float, float] | None:
    """The median field of the confident neighbours that agree with each other; None without any."""
    shifts = [summaries[n].shift for n in neighbourhood(position) if n in summaries and _confident(summaries[n])]
    if not shifts:
        return None
    first = _median(shifts)
    return _median([s for s in shifts if _deviation(s, first) <= MAX_TREND_DEVIATION_PX])


def gate(summaries: Mapping[Position, TileSummary], positions: Iterable[Position]) -> dict[Position, Verdict]:
    """The verdict of each of `positions` (each with a summary), its neighbours read from `summaries`."""
    verdicts = {}
    for k in positions:
        s, local = summaries[k], trend(k, summaries)
        if not _confident(s):
            why = f"mean confidence {s.confidence:.3f} below {MIN_MEAN_CONFIDENCE}"
        elif local is not None and _deviation(s.shift, local) > MAX_TREND_DEVIATION_PX:
            why = f"median field ({s.shift[0]:.1f}, {s.shift[1]:.1f}) px is {_deviation(s.shift, local):.1f} px from the trend"
        else:
            verdicts[k] = Verdict(FLAG_REGISTERED, s.shift, s.confidence)
            continue
        if local is None:
            verdicts[k] = Verdict(FLAG_NO_WARP, (0.0, 0.0), s.confidence, f"{why}; no trend to fall back to")
        else:
            verdicts[k] = Verdict(FLAG_TREND, local, s.confidence, why)
    return verdicts

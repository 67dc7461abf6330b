"""The order a tile run streams in: row by row of its chunks, so that memory does not grow with the scene.

A chunk can be blended once the registration tiles its blend reads (its `pieces`) are registered and gated, and
gating a registration tile reads the summaries of its neighbours within `pipeline.quality.TREND_RADIUS` tiles.
So each row of chunks is preceded by the registration of the tiles its gating reads that no earlier row
registered: a registration tile is registered once, a few rows ahead of the chunks that need it, and its field
lives until the last of those chunks is done.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import groupby

from pipeline.quality import neighbourhood
from pipeline.tiles import Tile, TilePlan


def neighbours(plan: TilePlan, tiles: Sequence[Tile]) -> list[Tile]:
    """The tiles of `plan` whose summaries the trends of `tiles` read (`pipeline.quality.neighbourhood`), not in `tiles`."""
    by_position = {(t.i, t.j): t for t in plan.tiles}
    near = dict.fromkeys(p for t in tiles for p in neighbourhood((t.i, t.j)) if p in by_position)
    return [by_position[p] for p in near if by_position[p] not in tiles]


@dataclass(frozen=True)
class StreamRow:
    """One row of a run's chunks and, per modality, the registration tiles it brings: those first gated for its
    chunks (`gate`), those whose summaries that gating reads (`wait`), and those of `wait` no earlier row
    registered (`register`, in plan order)."""

    chunks: tuple[Tile, ...]
    gate: dict[str, tuple[Tile, ...]]
    wait: dict[str, tuple[Tile, ...]]
    register: dict[str, tuple[Tile, ...]]


def stream_rows(
    plans: Mapping[str, TilePlan], pieces: Mapping[str, Mapping[Tile, Sequence[Tile]]], todo: Sequence[Tile]
) -> list[StreamRow]:
    """The `todo` chunks in rows, top to bottom, each with what its modalities' registration must bring first
    (`plans`: each modality's registration plan; `pieces`: per modality, the registration tiles a chunk's blend reads)."""
    registered: dict[str, set[Tile]] = {m: set() for m in plans}
    gated: dict[str, set[Tile]] = {m: set() for m in plans}
    rows = []
    for _, row in groupby(sorted(todo, key=lambda t: (t.i, t.j)), key=lambda t: t.i):
        chunks = tuple(row)
        gate = {m: tuple(dict.fromkeys(n for t in chunks for n in pieces[m][t] if n not in gated[m])) for m in plans}
        wait = {m: (*gate[m], *neighbours(plans[m], gate[m])) for m in plans}
        register = {
            m: tuple(sorted((n for n in wait[m] if n not in registered[m]), key=lambda n: (n.i, n.j))) for m in plans
        }
        for m in plans:
            gated[m].update(gate[m])
            registered[m].update(register[m])
        rows.append(StreamRow(chunks, gate, wait, register))
    return rows

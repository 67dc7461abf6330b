"""The exit status of every command, one rule for `dsmar run` and `dsmar backfill` (README, docs/operations.md):

- 0 `DONE`: done, or nothing to do (a quiet period: a one-line notice says so);
- 1 `FAILURE`: the run failed (catalog, cluster, storage, or any unexpected error);
- 2 `BAD_INPUT`: bad input (options, region file, paths), refused before any work;
- 3 `PARTIAL`: partially failed; the failed windows or tiles are named by their dates.
"""

from __future__ import annotations

from collections.abc import Sequence

from kernel.errors import DsmarError, InputError

DONE, FAILURE, BAD_INPUT, PARTIAL = 0, 1, 2, 3


def outcome_code(failed: Sequence[str]) -> int:
    """A run that ended: `PARTIAL` when it names anything it could not do, else `DONE`."""
    return PARTIAL if failed else DONE


def error_code(err: DsmarError) -> int:
    """A run that stopped with one of dsmar's own errors."""
    return BAD_INPUT if isinstance(err, InputError) else FAILURE

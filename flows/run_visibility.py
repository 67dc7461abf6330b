"""What makes a flow run visible in Prefect: dsmar's log lines in the run's logs, and a markdown artifact per run.

dsmar logs to the "dsmar" logger (the CLI prints it on stderr); while a flow runs, Prefect's `APILogHandler`
on that logger sends its INFO lines and above to the run's logs too (`prefect flow-run logs`, the UI), from the
flow and its tasks. The artifact is keyed by the cube, so the UI lists each cube's runs under one key.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import PurePosixPath

from prefect.artifacts import create_markdown_artifact
from prefect.context import FlowRunContext, TaskRunContext
from prefect.logging.handlers import APILogHandler

log = logging.getLogger("dsmar")


@contextmanager
def dsmar_logs_in_prefect() -> Iterator[None]:
    """Send the "dsmar" logger's INFO lines to the current Prefect run's logs for the block (once, however
    deeply flows nest); the logger is set to INFO for the block where it would drop them."""
    if any(isinstance(h, APILogHandler) for h in log.handlers):
        yield
        return
    handler = APILogHandler(level=logging.INFO)
    handler.addFilter(_in_a_run)
    level = log.level
    if log.getEffectiveLevel() > logging.INFO:
        log.setLevel(logging.INFO)
    log.addHandler(handler)
    try:
        yield
    finally:
        handler.flush()
        log.removeHandler(handler)
        log.setLevel(level)


def _in_a_run(record: logging.LogRecord) -> bool:
    """Whether the line was logged inside a flow or task run: a thread of an in-process Dask worker has no run
    to send it to (and Prefect would warn about each such line)."""
    return FlowRunContext.get() is not None or TaskRunContext.get() is not None


def artifact_key(out: str) -> str:
    """The artifact key of a cube: 'dsmar-' and its name without '.zarr', in the lowercase letters, digits and
    dashes Prefect allows ('cubes/Ljubljana.zarr' -> 'dsmar-ljubljana')."""
    name = PurePosixPath(out.rstrip("/")).name.removesuffix(".zarr")
    return "dsmar-" + (re.sub(r"[^a-z0-9]+", "-", name.lower()).strip("-") or "cube")


def publish_run_artifact(out: str, markdown: str) -> None:
    """Publish a run's markdown summary under its cube's key (linked to the current run)."""
    create_markdown_artifact(markdown, key=artifact_key(out), description=f"dsmar run into {out}")

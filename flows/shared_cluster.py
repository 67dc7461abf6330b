"""One Dask client shared by every run inside a block: a backfill's windows use one cluster instead of one each.

A context variable, so it reaches the windows' subflows in the task runner's threads (Prefect copies the
context into each) and nothing outside the block sees it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from contextvars import ContextVar

from kernel.config import ClusterConfig
from pipeline.cluster import dask_client

_shared: ContextVar[object | None] = ContextVar("dsmar_shared_dask_client", default=None)


@contextmanager
def shared_cluster(config: ClusterConfig) -> Iterator[object]:
    """Start (or connect to) the cluster of `config` once; runs inside the block use its client."""
    with dask_client(config) as client:
        token = _shared.set(client)
        try:
            yield client
        finally:
            _shared.reset(token)


def cluster_for(config: ClusterConfig) -> AbstractContextManager[object]:
    """The shared client when a block holds one (left open on exit), else a cluster of this run's own."""
    client = _shared.get()
    return nullcontext(client) if client is not None else dask_client(config)

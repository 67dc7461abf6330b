"""Before any tile is submitted (and before the cube is created): every Dask worker can write the cube's
store and runs the same dsmar version with the same weights as the process that records them in the cube.

A worker elsewhere (an existing scheduler's) may see other storage, another install or other weights;
found mid-run, each would cost a traceback per tile and a half-written cube. `worker_facts` runs on
each worker; `mismatch` is the pure comparison that turns the first difference into one line.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from kernel.errors import DsmarError
from kernel.version import __version__
from pipeline.store import CubeStore

DOCS = "docs/cluster.md"


@dataclass(frozen=True)
class WorkerFacts:
    """What one process brings to a run: its dsmar version, the weights its method resolves to, and why
    it cannot use the cube's store or the method (None where it can)."""

    version: str
    weights_sha256: str | None
    store_problem: str | None = None
    method_problem: str | None = None


def worker_facts(store: CubeStore, weights_sha256: Callable[[], str | None]) -> dict[str, str | None]:
    """This process's facts, as a plain dict (a worker with another dsmar may not share the class)."""
    try:
        weights, method_problem = weights_sha256(), None
    except Exception as err:  # a missing or tampered weights file, an unknown method: reported, not raised
        weights, method_problem = None, f"{type(err).__name__}: {err}"
    facts = WorkerFacts(__version__, weights, store.check_reachable(), method_problem)
    return facts.__dict__


def _facts(found: Mapping[str, str | None]) -> WorkerFacts:
    """A worker's dict as facts; keys another dsmar may add or lack are ignored or None."""
    return WorkerFacts(**{name: found.get(name) for name in WorkerFacts.__dataclass_fields__})  # type: ignore[arg-type]


def differences(expected: WorkerFacts, found: WorkerFacts, store_url: str) -> list[str]:
    """What keeps a worker from this run, each as a short phrase; empty when nothing does."""
    found_here = []
    if found.store_problem:
        found_here.append(f"cannot write the cube {store_url}: {found.store_problem}")
    if found.version != expected.version:
        found_here.append(f"dsmar {found.version} there, {expected.version} here")
    if found.method_problem:
        found_here.append(f"cannot resolve the method: {found.method_problem}")
    elif found.weights_sha256 != expected.weights_sha256:
        found_here.append(f"weights sha256 {found.weights_sha256} there, {expected.weights_sha256} here")
    return found_here


def mismatch(expected: WorkerFacts, by_worker: Mapping[str, WorkerFacts | BaseException], store_url: str) -> str | None:
    """One line naming the first worker that cannot take part and everything that differs there; None if all can."""
    problems = {}
    for address, found in sorted(by_worker.items()):
        if isinstance(found, BaseException):
            problems[address] = [f"the check failed there ({type(found).__name__}: {found})"]
        elif phrases := differences(expected, found, store_url):
            problems[address] = phrases
    if not problems:
        return None
    address, phrases = next(iter(problems.items()))
    more = f" (and {len(problems) - 1} more worker(s))" if len(problems) > 1 else ""
    return (
        f"Dask worker {address}{more}: {'; '.join(phrases)}. Every worker needs the cube's storage at the same "
        f"path (or an object store), the same dsmar and the same weights ({DOCS})"
    )


def check_workers(
    client, store: CubeStore, weights_sha256: Callable[[], str | None], expected_weights: str | None, wait_s: float
) -> int:
    """Raise one DsmarError line unless every worker of `client` can run this cube; return how many were checked.

    A scheduler with no workers yet is given `wait_s` for the first one to join.
    """
    if not client.scheduler_info().get("workers"):
        try:
            client.wait_for_workers(1, timeout=wait_s)
        except TimeoutError:
            raise DsmarError(
                f"the Dask scheduler at {client.scheduler.address} has no workers after {wait_s:g} s: "
                f"start some (dask worker {client.scheduler.address}; {DOCS})"
            ) from None
    found = client.run(worker_facts, store, weights_sha256, on_error="return")
    by_worker = {a: f if isinstance(f, BaseException) else _facts(f) for a, f in found.items()}
    line = mismatch(WorkerFacts(__version__, expected_weights), by_worker, store.url)
    if line is not None:
        raise DsmarError(line)
    return len(by_worker)

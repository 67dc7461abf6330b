"""Shared pytest set-up: paths to the real data in ../shared (skipped with a reason where absent, a failure
under DSMAR_REQUIRE_PAIRS=1, as CI sets it) and one real Prefect server for the tests that need one."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAIRS = Path(os.environ.get("DSMAR_PAIRS", REPO.parent / "shared" / "data" / "pairs"))
REQUIRE_PAIRS = "DSMAR_REQUIRE_PAIRS"

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("DO_NOT_TRACK", "1")


def pairs_missing(required: bool) -> None:
    """Skip (a fresh clone without the data) or fail (CI, where the data must be there) the calling test."""
    if required:
        pytest.fail(f"real pairs not found at {PAIRS} and {REQUIRE_PAIRS}=1: mount ../shared or set DSMAR_PAIRS")
    pytest.skip(
        f"real pairs not found at {PAIRS}: the real-image accuracy tests need ../shared/data/pairs "
        f"(set DSMAR_PAIRS to another copy; CI sets {REQUIRE_PAIRS}=1 so this skip fails there)"
    )


@pytest.fixture(scope="session")
def unlabeled_dir() -> Path:
    """../shared/data/unlabeled_sar, beside the pairs: roughly aligned optical-SAR pairs, for training only."""
    folder = PAIRS.parent / "unlabeled_sar"
    if not (folder / "pairs.csv").exists():
        pairs_missing(os.environ.get(REQUIRE_PAIRS) == "1")
    return folder


@pytest.fixture(scope="session")
def pairs_dir() -> Path:
    if not (PAIRS / "pairs.csv").exists():
        pairs_missing(os.environ.get(REQUIRE_PAIRS) == "1")
    return PAIRS


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def prefect_api(tmp_path_factory):
    """A real Prefect server, the one `dsmar run` starts where no API is configured (own PREFECT_HOME, SQLite),
    used by every flow run of the session that asks for it, in this process and in `dsmar run` subprocesses."""
    from flows.api import prefect_api as api

    with unconfigured(tmp_path_factory.mktemp("prefect-home")), api() as url:
        yield url


@contextmanager
def served_demo_archive(root: Path, dates: int) -> Iterator[tuple]:
    """A small demo archive (256 px, `dates` dates, 10 days apart from 4 June 2024) under `root`, served by a
    local STAC API: (its ArchiveInfo, the API's URL)."""
    from catalogs.server import serve_static_catalog
    from datagen.demo_archive import generate_archive

    info = generate_archive(root, size=256, dates=dates, seed=3)
    with serve_static_catalog(info.catalog) as server:
        yield info, server.url


@pytest.fixture(scope="module")
def dask_address():
    """A local Dask cluster of two workers for the flows of one test module."""
    from distributed import LocalCluster

    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=None) as cluster:
        yield cluster.scheduler_address


def unconfigured(home: Path):
    """Prefect settings with no API configured and an empty PREFECT_HOME; the startup limit of the CLI."""
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_HOME,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
        temporary_settings,
    )

    fresh = {PREFECT_HOME: str(home), PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS: 90}
    return temporary_settings(updates=fresh, restore_defaults={PREFECT_API_URL})


def default_method() -> str:
    """The default method as the accuracy tests run it; DSMAR_TEST_DEFAULT_METHOD puts another in its place
    (scripts/check_tests_bite.sh: the tests must fail with `identity` there)."""
    from kernel.contracts import DEFAULT_METHOD

    return os.environ.get("DSMAR_TEST_DEFAULT_METHOD", DEFAULT_METHOD)


@pytest.fixture(autouse=True)
def dask_default_scheduler():
    """Every test starts and ends with dask's default scheduler setting: a distributed Client makes itself the
    default while it lives, and one closed out of order (tests nest clients, a run does not) can leave that
    setting behind for the tests after it."""
    import dask
    from distributed import Client

    before = dask.config.get("scheduler", None)
    if before in ("dask.distributed", "distributed"):
        try:
            Client.current(allow_global=True)
        except ValueError:  # left pointing at a client that is gone (a module fixture's, closed out of order)
            dask.config.config.pop("scheduler", None)
            before = None
    yield
    if before is None:
        dask.config.config.pop("scheduler", None)
    else:
        dask.config.set(scheduler=before)

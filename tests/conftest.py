"""Shared pytest set-up: paths to the real data in ../shared (skipped with a reason where absent, a failure
under DSMAR_REQUIRE_PAIRS=1, as CI sets it) and one real Prefect server for the tests that need one."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
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
    """A real Prefect server (own PREFECT_HOME, SQLite), used by every flow run of the session that asks for it."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    home = tmp_path_factory.mktemp("prefect-home")
    port = free_port()
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_API_URL": ""}
    prefect = Path(sys.executable).with_name("prefect")
    log = open(home / "server.log", "w")
    process = subprocess.Popen(
        [str(prefect), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + 90
    while True:
        try:
            urllib.request.urlopen(f"{url}/health", timeout=1)
            break
        except OSError:
            if process.poll() is not None or time.monotonic() > deadline:
                process.kill()
                pytest.fail(f"prefect server did not start: {(home / 'server.log').read_text()[-2000:]}")
            time.sleep(0.3)
    try:
        with temporary_settings(updates={PREFECT_API_URL: url}):
            yield url
    finally:
        process.terminate()
        process.wait(timeout=20)
        log.close()


def default_method() -> str:
    """The default method as the accuracy tests run it; DSMAR_TEST_DEFAULT_METHOD puts another in its place
    (scripts/check_tests_bite.sh: the tests must fail with `identity` there)."""
    from kernel.contracts import DEFAULT_METHOD

    return os.environ.get("DSMAR_TEST_DEFAULT_METHOD", DEFAULT_METHOD)

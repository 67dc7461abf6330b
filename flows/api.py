"""The Prefect API a run talks to: the configured one, or a temporary server that a terminal's Ctrl-C does not stop.

Prefect's own temporary API runs in the caller's process group. Ctrl-C in a terminal reaches the whole
foreground group, so that API would die with the flow still running, and the flow engine would retry its crash
report against the dead API for about 70 s. Here `prefect server start` runs in a session of its own and
stops at interpreter exit, after Prefect has sent its last logs and events (as Prefect's own temporary API
does), so an interrupted run unwinds against a live API.
"""

from __future__ import annotations

import atexit
import os
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO

from kernel.errors import DsmarError

STOP_TIMEOUT_S = 10


@contextmanager
def prefect_api() -> Iterator[str]:
    """The URL of the Prefect API for the block: `PREFECT_API_URL` when set, else a temporary server's (set as
    `PREFECT_API_URL` for the block; on 127.0.0.1, with no UI, schedules or analytics; one per process and
    Prefect settings)."""
    from prefect.settings import (
        PREFECT_API_URL,
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS,
        get_current_settings,
        temporary_settings,
    )

    configured = PREFECT_API_URL.value()
    if configured:
        yield configured
        return
    settings = get_current_settings().to_environment_variables(exclude_unset=True)
    key = frozenset(settings.items())
    if key not in _servers:
        _servers[key] = _start_server(
            {**os.environ, **settings}, PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS.value()
        )
    with temporary_settings(updates={PREFECT_API_URL: _servers[key]}):
        yield _servers[key]


_servers: dict[frozenset[tuple[str, str]], str] = {}  # Prefect settings -> URL of the server started with them


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(env: dict[str, str], timeout_s: float) -> str:
    """`prefect server start` in a new session until interpreter exit; its API URL once it answers."""
    port = _free_port()
    args = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)]
    args += ["--no-ui", "--no-scheduler", "--no-late-runs", "--analytics-off", "--log-level", "ERROR", "--no-prompt"]
    log = tempfile.TemporaryFile("w+")
    process = subprocess.Popen(
        args, env=env, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    atexit.register(_stop, process, log)
    url = f"http://127.0.0.1:{port}/api"
    _wait_until_healthy(url, process, log, timeout_s)
    return url


def _stop(process: subprocess.Popen[bytes], log: IO[str]) -> None:
    process.terminate()
    try:
        process.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
    log.close()


def _wait_until_healthy(url: str, process: subprocess.Popen[bytes], log: IO[str], timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while process.poll() is None and time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=1):
                return
        except OSError:
            time.sleep(0.2)
    log.seek(0)
    lines = [line.strip() for line in log.read().splitlines() if line.strip()]
    exited = process.poll() is not None
    why = lines[-1] if exited and lines else f"no answer within {timeout_s:g} s"
    raise DsmarError(f"the temporary Prefect API did not start ({why}); start one and set PREFECT_API_URL")

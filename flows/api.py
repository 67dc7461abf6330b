"""The temporary Prefect API of a server-less run, started so that a terminal's Ctrl-C does not kill it.

Prefect starts its temporary API (a uvicorn subprocess) in the caller's process group. Ctrl-C in a
terminal reaches the whole foreground group, so the API died with the flow still running, and the
flow engine then retried its crash report against the dead API for about 70 s. Here the same server
runs in its own session; the main process unwinds from the interrupt with the API still answering,
and stops it at exit (Prefect's own atexit hook, as for its temporary server).
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import prefect
from prefect.settings import PREFECT_API_URL, get_current_settings

import flows._env  # noqa: F401  (Prefect environment defaults, before prefect is imported)


def _uvicorn_in_new_session(port: int) -> subprocess.Popen[Any]:
    """Prefect's own command and environment for its temporary API (`SubprocessASGIServer._run_uvicorn_command`,
    Prefect 3.9), started in a new session."""
    server_env = {"PREFECT_UI_ENABLED": "0", "PREFECT__SERVER_EPHEMERAL": "1", "PREFECT__SERVER_FINAL": "1"}
    args = [
        sys.executable,
        "-m",
        "uvicorn",
        "--app-dir",
        str(prefect.__module_path__.parent),
        "--factory",
        "prefect.server.api.server:create_app",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--log-level",
        "error",
        "--lifespan",
        "on",
    ]
    env = {**os.environ, **server_env, **get_current_settings().to_environment_variables(exclude_unset=True)}
    return subprocess.Popen(args, env=env, start_new_session=True)


def ensure_temporary_api() -> str | None:
    """Start the detached temporary API unless a Prefect API is configured or already running; its URL.

    Registered as Prefect's default temporary server (the key `SubprocessASGIServer()` looks up, as
    `prefect.testing.utilities.prefect_test_harness` does), so every Prefect client in this process
    uses it; it lives until interpreter exit, like the server Prefect would have started.
    """
    if PREFECT_API_URL.value():
        return None
    from prefect.server.api.server import SubprocessASGIServer  # ~2 s of imports: only when it is needed

    class DetachedServer(SubprocessASGIServer):
        def _run_uvicorn_command(self) -> subprocess.Popen[Any]:
            return _uvicorn_in_new_session(self.port)

    current = SubprocessASGIServer._instances.get(None)
    if current is not None and current.running:
        return current.api_url
    SubprocessASGIServer._instances.pop(None, None)  # a default server never started: replaced by ours
    server = DetachedServer()
    server.start()
    return server.api_url

"""Prefect settings that must be in the environment before `prefect` is first imported."""

from __future__ import annotations

import os

DEFAULTS = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
    # The temporary API of a server-less run can take ~16 s to start on a small machine; allow for CI.
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "90",
    # dsmar prints its own progress; Prefect's per-task INFO lines would bury it.
    "PREFECT_LOGGING_LEVEL": "WARNING",
    # distributed imports the deprecated pynvml shim in every worker; its warning says nothing to a user.
    "PYTHONWARNINGS": "ignore::FutureWarning:distributed.diagnostics.nvml",
}


def prefect_defaults() -> None:
    """Set the defaults the user has not set (their own settings always win)."""
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)


prefect_defaults()

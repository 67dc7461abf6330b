"""The environment dsmar's Prefect runs start with, applied by each entry point (`dsmar run`, `dsmar demo`,
`dsmar backfill`, `dsmar deploy`). Prefect sets up its logging when it is first imported and reads the other
settings when it starts a client or server: the CLI applies them before importing Prefect (where Prefect is
already imported, the level of its configured logger is set directly). Child processes (Dask workers, the
temporary API) inherit them from the environment; a worker's flow runs inherit the worker's."""

from __future__ import annotations

import logging
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


def apply_defaults() -> None:
    """Set the defaults the user has not set (their own settings always win). Where Prefect has already
    set up its logging in this process, its top logger takes the level too."""
    for key, value in DEFAULTS.items():
        os.environ.setdefault(key, value)
    logging.getLogger("prefect").setLevel(os.environ["PREFECT_LOGGING_LEVEL"].upper())

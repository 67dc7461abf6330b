"""Crash injection for tests/test_resume.py: on the PYTHONPATH of a `dsmar run` under test only.

Python imports `sitecustomize` at start-up in every process of the run, the Dask workers included.
With DSMAR_TEST_WRITE_LOG set, `ZarrCubeStore.write` is wrapped to append "time,row,col" to that
file after each chunk it writes whole. With DSMAR_TEST_CRASH_AT=k as well, the k-th write call is
the last: after DSMAR_TEST_CRASH_STORES of its zarr stores (all of them when unset) the whole run,
its process group, is killed with SIGKILL, as a power cut or the OOM killer would end it.
"""

from __future__ import annotations

import os
import signal


def _kill_the_run() -> None:
    os.killpg(os.getpgrp(), signal.SIGKILL)


def _install(log_path: str) -> None:
    import zarr

    from pipeline.cube import ZarrCubeStore

    crash_at = int(os.environ.get("DSMAR_TEST_CRASH_AT", "0"))
    stores_allowed = os.environ.get("DSMAR_TEST_CRASH_STORES")
    original_write = ZarrCubeStore.write
    original_store = zarr.Array.__setitem__
    calls = 0

    def write(self, time_index, tile, arrays, inputs_hash):
        nonlocal calls
        calls += 1
        if calls == crash_at and stores_allowed is not None:
            stores = 0

            def store(array, key, value):
                nonlocal stores
                if stores == int(stores_allowed):
                    _kill_the_run()
                stores += 1
                original_store(array, key, value)

            zarr.Array.__setitem__ = store
        original_write(self, time_index, tile, arrays, inputs_hash)
        with open(log_path, "a") as log:
            log.write(f"{time_index},{tile.i},{tile.j}\n")
        if calls == crash_at:
            _kill_the_run()

    ZarrCubeStore.write = write


if os.environ.get("DSMAR_TEST_WRITE_LOG"):
    _install(os.environ["DSMAR_TEST_WRITE_LOG"])

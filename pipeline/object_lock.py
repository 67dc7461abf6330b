"""One writing run per cube on S3: a lock object beside the cube, with a lease.

S3 has no file locks, but it has conditional writes: a put with `If-None-Match: *` creates an object
only where none exists, and one with `If-Match: <etag>` replaces only the version that was read (AWS
S3, MinIO, moto). The run that creates `<prefix>/.<cube>.lock` holds the cube and rewrites the object
every `lease_s / 4` seconds; a run that finds it waits. A holder that died (SIGKILL, a lost machine)
stops refreshing: once the object has not changed for `lease_s` seconds of the waiter's own clock, the
waiter replaces exactly that version (`If-Match`), so of several waiters one wins. Clocks never meet:
each run times only what it sees change. A holder stalled for longer than the lease loses the lock,
which it logs as an error.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from pipeline.object_store import filesystem

LEASE_S = 60.0  # a lock not refreshed for this long is abandoned (and a killed run's cube waits this long)
POLL_S = 2.0
log = logging.getLogger("dsmar")


def lock_url(cube_url: str) -> str:
    """The lock object beside the cube, named like the local lock file (`.<cube name>.lock`)."""
    parent, _, name = cube_url.rstrip("/").rpartition("/")
    return f"{parent}/.{name}.lock"


class ObjectLock:
    """The lease lock on the S3 object at `url` (see the module docstring)."""

    def __init__(self, url: str, lease_s: float = LEASE_S, poll_s: float = POLL_S):
        self.url, self.lease_s, self.poll_s = url, lease_s, poll_s
        self._fs, path = filesystem(url)
        self._bucket, _, self._key = path.partition("/")
        self._etag: str | None = None
        self._stop = threading.Event()

    def _put(self, **condition: str) -> str:
        """Write this run's lock body under `condition`; return the new version's ETag."""
        # A fresh `version` changes the ETag on every refresh, which is what waiters watch.
        holder = {"owner": f"{socket.gethostname()}:{os.getpid()}", "refreshed": _now(), "version": uuid.uuid4().hex}
        body = json.dumps(holder).encode()
        reply = self._fs.call_s3("put_object", Bucket=self._bucket, Key=self._key, Body=body, **condition)
        return reply["ETag"]

    def _head(self) -> dict[str, Any] | None:
        try:
            return self._fs.call_s3("head_object", Bucket=self._bucket, Key=self._key)
        except FileNotFoundError:
            return None

    def _holder(self) -> str:
        try:
            return json.loads(self._fs.cat_file(f"{self._bucket}/{self._key}"))["owner"]
        except (FileNotFoundError, ValueError, KeyError):
            return "another run"

    def acquire(self) -> bool:
        """Create the lock object, waiting while a live run holds it; take over one abandoned for `lease_s`.

        False (nothing held, said once) where the server does not honour conditional writes."""
        seen: tuple[str, float] | None = None  # the holder's version, and when this run first saw it
        told = False
        while True:
            try:
                self._etag = self._put(IfNoneMatch="*")
                return self._conditions_honoured()
            except FileExistsError:
                pass
            except OSError as e:  # a server that rejects the condition (501 Not Implemented)
                return self._unsupported(str(e))
            head = self._head()
            if head is None:
                continue  # released meanwhile: try again at once
            if seen is None or seen[0] != head["ETag"]:
                seen = (head["ETag"], time.monotonic())
            elif time.monotonic() - seen[1] >= self.lease_s:
                try:
                    self._etag = self._put(IfMatch=seen[0])
                    log.warning(
                        "%s: took over a lock not refreshed for %.0f s (its run had died)", self.url, self.lease_s
                    )
                    return
                except OSError:  # another waiter took it, or the holder refreshed it just now
                    seen = None
                    continue
            if not told:
                log.info(
                    "%s is being written by %s; waiting for it to finish (a lock not refreshed for %.0f s is taken over)",
                    self.url,
                    self._holder(),
                    self.lease_s,
                )
                told = True
            time.sleep(self.poll_s)

    def _conditions_honoured(self) -> bool:
        """A second create must fail now that the object exists; a server that ignores the condition lets it pass."""
        try:
            self._etag = self._put(IfNoneMatch="*")
        except FileExistsError:
            return True
        self._fs.call_s3("delete_object", Bucket=self._bucket, Key=self._key)
        return self._unsupported("it ignored If-None-Match")

    def _unsupported(self, reason: str) -> bool:
        log.warning(
            "%s: the server does not support conditional writes (%s): concurrent runs on this cube are not "
            "prevented; run one writer at a time",
            self.url,
            reason,
        )
        return False

    def _refresh_until_stopped(self) -> None:
        while not self._stop.wait(self.lease_s / 4):
            try:
                self._etag = self._put(IfMatch=self._etag or "")
            except OSError as e:
                log.error("%s: lost the cube's lock (%s); another run may be writing the cube", self.url, e)
                return

    def release(self) -> None:
        """Delete the lock object if it is still this run's version."""
        head = self._head()
        if head is not None and head["ETag"] == self._etag:
            self._fs.call_s3("delete_object", Bucket=self._bucket, Key=self._key)

    @contextmanager
    def held(self) -> Iterator[None]:
        if not self.acquire():
            yield
            return
        self._stop.clear()
        refresher = threading.Thread(target=self._refresh_until_stopped, name="dsmar-lock-refresh", daemon=True)
        refresher.start()
        try:
            yield
        finally:
            self._stop.set()
            refresher.join()
            self.release()


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")

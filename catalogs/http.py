"""All of dsmar's catalog HTTP in one place: retries, backoff, rate limit, time bound, and a record.

Public STAC APIs throttle (429 with `Retry-After`) and fail transiently (502/503/504, timeouts). Each
request is retried with exponential backoff and full jitter, waits at least what `Retry-After` asks,
passes a token bucket first so a long paginated search does not hammer the server, and gives up once
its total time budget is spent. Every retry is recorded so the CLI can say what happened.
"""

from __future__ import annotations

import email.utils
import json
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from copy import deepcopy
from dataclasses import dataclass
from typing import Any

import requests
from pystac_client.exceptions import APIError
from pystac_client.stac_api_io import StacApiIO


@dataclass(frozen=True)
class RetryPolicy:
    """How hard to try. Defaults suit public APIs; tests shrink the waits."""

    max_attempts: int = 6  # per request, the first try included
    max_connect_attempts: int = 3  # a refused connection rarely heals: fail fast on a wrong URL
    backoff_base_s: float = 0.5  # wait before retry n is uniform in [0, base * 2**n] (full jitter)
    backoff_max_s: float = 20.0
    total_timeout_s: float = 120.0  # per request, all attempts and waits together
    connect_timeout_s: float = 5.0
    read_timeout_s: float = 30.0
    requests_per_second: float = 10.0  # token bucket rate...
    burst: int = 10  # ...and capacity
    retry_statuses: tuple[int, ...] = (429, 500, 502, 503, 504)

    def backoff(self, attempt: int, rng: random.Random) -> float:
        """Full-jitter exponential backoff before retry number `attempt` (1-based)."""
        return rng.uniform(0.0, min(self.backoff_max_s, self.backoff_base_s * 2 ** (attempt - 1)))


@dataclass(frozen=True)
class RetryEvent:
    """One retried attempt: what failed and how long we waited before trying again."""

    method: str
    url: str
    attempt: int
    reason: str  # "429", "503", "timeout", "connection error"
    wait_s: float


class RetryLog:
    """Thread-safe record of retries, shared by everything one search does."""

    def __init__(self) -> None:
        self._events: list[RetryEvent] = []
        self._lock = threading.Lock()

    def add(self, event: RetryEvent) -> None:
        with self._lock:
            self._events.append(event)

    @property
    def events(self) -> list[RetryEvent]:
        with self._lock:
            return list(self._events)

    def summary(self) -> str:
        """One line such as `retried 3 times (2x 429, 1x timeout), waited 1.9 s`; empty when nothing was retried."""
        events = self.events
        if not events:
            return ""
        counts = Counter(e.reason for e in events)
        parts = ", ".join(f"{n}x {reason}" for reason, n in counts.most_common())
        return f"retried {len(events)} times ({parts}), waited {sum(e.wait_s for e in events):.1f} s"


class TokenBucket:
    """Allows `rate` requests per second on average with bursts of `capacity`; `acquire` sleeps as needed."""

    def __init__(self, rate: float, capacity: int, clock: Callable[[], float] = time.monotonic):
        if rate <= 0 or capacity < 1:
            raise ValueError("token bucket needs rate > 0 and capacity >= 1")
        self.rate, self.capacity, self._clock = rate, capacity, clock
        self._tokens = float(capacity)
        self._stamp = clock()
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Take one token, sleeping until there is one; returns the seconds slept."""
        with self._lock:
            now = self._clock()
            self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            wait = 0.0 if self._tokens >= 1 else (1 - self._tokens) / self.rate
            self._tokens -= 1  # may go negative: later callers queue behind this one
        if wait:
            time.sleep(wait)
        return wait


class RetryingSender:
    """Sends prepared requests on a session with the policy's retries, rate limit and time bound."""

    def __init__(
        self, session: requests.Session, policy: RetryPolicy, log: RetryLog | None = None, seed: int | None = None
    ):
        self.session = session
        self.policy = policy
        self.log = log if log is not None else RetryLog()
        self.bucket = TokenBucket(policy.requests_per_second, policy.burst)
        self._rng = random.Random(seed)

    def send(self, request: requests.Request) -> requests.Response:
        """The first response that is not a retryable failure; raises APIError when retries run out."""
        policy = self.policy
        prepared = self.session.prepare_request(request)
        deadline = time.monotonic() + policy.total_timeout_s
        settings = self.session.merge_environment_settings(
            prepared.url, proxies={}, stream=None, verify=True, cert=None
        )
        attempt = 0
        while True:
            attempt += 1
            self.bucket.acquire()
            remaining = deadline - time.monotonic()
            timeout = (
                min(policy.connect_timeout_s, max(remaining, 0.1)),
                min(policy.read_timeout_s, max(remaining, 0.1)),
            )
            retry_after = None
            try:
                response = self.session.send(prepared, timeout=timeout, **settings)
            except requests.exceptions.ConnectionError as err:
                if isinstance(err, requests.exceptions.ConnectTimeout):
                    reason, limit = "timeout", policy.max_attempts
                else:
                    reason, limit = "connection error", policy.max_connect_attempts
                failure = f"{reason}: {_os_reason(err)}"
            except requests.exceptions.Timeout as err:
                reason, limit, failure = "timeout", policy.max_attempts, f"timeout: {err}"
            else:
                if response.status_code not in policy.retry_statuses:
                    return response
                reason, limit = str(response.status_code), policy.max_attempts
                failure = f"HTTP {response.status_code} {response.reason or ''}".rstrip() + _body_hint(response)
                retry_after = parse_retry_after(response.headers.get("Retry-After"))
            wait = policy.backoff(attempt, self._rng)
            if retry_after is not None:
                wait = max(wait, retry_after)
            if attempt >= limit:
                raise APIError(f"{prepared.method} {prepared.url} failed after {attempt} attempts; last: {failure}")
            if time.monotonic() + wait >= deadline:
                raise APIError(
                    f"{prepared.method} {prepared.url} gave up: the {policy.total_timeout_s:g} s budget would be "
                    f"exceeded (next wait {wait:.1f} s); last: {failure}"
                )
            self.log.add(RetryEvent(prepared.method or "GET", prepared.url or "", attempt, reason, wait))
            time.sleep(wait)


def _body_hint(response: requests.Response) -> str:
    """A short plain-text body (an API's error message) for the error line; HTML pages say nothing useful."""
    text = " ".join(response.text.split())
    if not text or "html" in response.headers.get("Content-Type", "").lower() or text.lstrip().startswith("<"):
        return ""
    return f": {text[:160]}"


def _os_reason(err: Exception) -> str:
    """`[Errno 111] Connection refused` out of requests' nested connection errors, else the whole text."""
    found = re.search(r"\[Errno -?\d+\] [^\"')]+", str(err))
    return found.group(0).strip() if found else str(err)


def parse_retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class ResilientStacApiIO(StacApiIO):
    """pystac-client's IO with dsmar's retry policy; urllib3's own retries are off so each retry is seen."""

    def __init__(
        self, policy: RetryPolicy | None = None, log: RetryLog | None = None, headers: dict[str, str] | None = None
    ):
        policy = policy or RetryPolicy()
        super().__init__(headers=headers, timeout=(policy.connect_timeout_s, policy.read_timeout_s), max_retries=None)
        self.sender = RetryingSender(self.session, policy, log)

    @property
    def retry_log(self) -> RetryLog:
        return self.sender.log

    def request(
        self,
        href: str,
        method: str | None = None,
        headers: dict[str, str] | None = None,
        parameters: dict[str, Any] | None = None,
    ) -> str:
        method = (method or "GET").upper()
        if method in ("POST", "PUT", "PATCH"):
            request = requests.Request(method=method, url=href, headers=headers, json=parameters)
        else:
            request = requests.Request(method=method, url=href, headers=headers, params=deepcopy(parameters) or {})
        if self._req_modifier:
            request = self._req_modifier(request) or request
        response = self.sender.send(request)
        if not 200 <= response.status_code < 300:
            raise APIError.from_response(response)
        return response.content.decode("utf-8")


def get_json(sender: RetryingSender, url: str, headers: dict[str, str] | None = None) -> Any:
    """GET a JSON document through the retrying sender (used for the Planetary Computer token API)."""
    response = sender.send(requests.Request("GET", url, headers=headers))
    if not 200 <= response.status_code < 300:
        raise APIError.from_response(response)
    try:
        return response.json()
    except json.JSONDecodeError as err:
        raise APIError(f"GET {url} did not return JSON: {err}") from err

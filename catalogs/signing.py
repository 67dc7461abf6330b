"""Planetary Computer asset signing: SAS tokens per collection, cached until shortly before they expire.

The Planetary Computer serves assets from Azure Blob Storage; a read needs a SAS token appended to the
href as a query string. Tokens come from `GET {token_url}/{collection}` as
`{"msr:expiry": "2026-11-26T07:00:00Z", "token": "st=...&se=...&sig=..."}` and expire (about an hour),
so items are signed when searched (pystac-client's `modifier`) and re-signed with `resign` right
before reads that may happen long after the search.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from datetime import datetime
from urllib.parse import urlsplit, urlunsplit

import pystac
import requests

from catalogs.http import RetryingSender, RetryLog, RetryPolicy, get_json
from kernel.errors import CatalogError

PC_TOKEN_URL = "https://planetarycomputer.microsoft.com/api/sas/v1/token"
_BLOB_HOST_SUFFIX = ".blob.core.windows.net"


def is_blob_href(href: str) -> bool:
    """True for Azure Blob Storage URLs, the only hrefs a SAS token applies to."""
    parts = urlsplit(href)
    return (
        parts.scheme in ("http", "https") and parts.hostname is not None and parts.hostname.endswith(_BLOB_HOST_SUFFIX)
    )


class PlanetaryComputerSigner:
    """Signs Azure blob hrefs of items with a cached per-collection SAS token."""

    def __init__(
        self,
        token_url: str = PC_TOKEN_URL,
        policy: RetryPolicy | None = None,
        log: RetryLog | None = None,
        refresh_margin_s: float = 300.0,
        clock: Callable[[], float] = time.time,
        subscription_key: str | None = None,
    ):
        self.token_url = token_url.rstrip("/")
        self.refresh_margin_s = refresh_margin_s
        self.policy = policy or RetryPolicy()
        self._clock = clock
        self._sender = RetryingSender(requests.Session(), self.policy, log)
        key = subscription_key or os.environ.get("PC_SDK_SUBSCRIPTION_KEY")
        self._headers = {"Ocp-Apim-Subscription-Key": key} if key else {}
        self._tokens: dict[str, tuple[str, float]] = {}  # collection -> (token, expiry as epoch seconds)
        self._lock = threading.Lock()

    def __getstate__(self) -> dict:
        """Picklable (profiles travel to Dask workers and into Prefect task inputs): cached tokens go along,
        the HTTP session and lock are made afresh."""
        state = self.__dict__.copy()
        del state["_sender"], state["_lock"]
        return state

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._sender = RetryingSender(requests.Session(), self.policy)
        self._lock = threading.Lock()

    def token(self, collection: str) -> str:
        """A token valid for at least `refresh_margin_s` more seconds, fetched only when the cached one is not."""
        with self._lock:
            cached = self._tokens.get(collection)
            if cached and cached[1] - self.refresh_margin_s > self._clock():
                return cached[0]
            url = f"{self.token_url}/{collection}"
            try:
                body = get_json(self._sender, url, self._headers)
                token, expiry = body["token"], _epoch(body["msr:expiry"])
            except (KeyError, TypeError, ValueError) as err:
                raise CatalogError(f"the Planetary Computer token API at {url} gave an unusable answer: {err}") from err
            except Exception as err:
                raise CatalogError(f"could not get a Planetary Computer SAS token from {url}: {err}") from err
            self._tokens[collection] = (token, expiry)
            return token

    def sign_item(self, item: pystac.Item) -> pystac.Item:
        """Sign the item's blob asset hrefs in place (replacing any older token) and return it."""
        blob_assets = [asset for asset in item.assets.values() if is_blob_href(asset.href)]
        if not blob_assets:
            return item
        if not item.collection_id:
            raise CatalogError(f"item {item.id!r} has no collection, so it cannot be signed for the Planetary Computer")
        token = self.token(item.collection_id)
        for asset in blob_assets:
            asset.href = _with_query(asset.href, token)
        return item

    def resign(self, item: pystac.Item) -> pystac.Item:
        """A copy of the item signed with a token that is valid now: call this right before reading assets."""
        return self.sign_item(item.clone())

    def __call__(self, obj) -> None:
        """pystac-client `modifier`: signs items, item collections and item dicts in place."""
        if isinstance(obj, pystac.Item):
            self.sign_item(obj)
        elif isinstance(obj, pystac.ItemCollection):
            for item in obj.items:
                self.sign_item(item)
        elif isinstance(obj, dict) and obj.get("type") == "FeatureCollection":
            for feature in obj.get("features", []):
                self._sign_dict(feature)
        elif isinstance(obj, dict) and obj.get("type") == "Feature":
            self._sign_dict(obj)

    def _sign_dict(self, feature: dict) -> None:
        assets = [a for a in feature.get("assets", {}).values() if is_blob_href(a.get("href", ""))]
        if assets and feature.get("collection"):
            token = self.token(feature["collection"])
            for asset in assets:
                asset["href"] = _with_query(asset["href"], token)


def _with_query(href: str, token: str) -> str:
    parts = urlsplit(href)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, token.lstrip("?"), parts.fragment))


def _epoch(expiry: str) -> float:
    return datetime.fromisoformat(expiry.replace("Z", "+00:00")).timestamp()

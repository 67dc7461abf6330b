"""Searching one catalog over HTTP with pystac-client, through dsmar's retrying IO, always by POST."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from http import HTTPStatus

import pystac
from pystac_client import Client
from pystac_client.exceptions import APIError

from catalogs.http import ResilientStacApiIO, RetryLog, RetryPolicy
from catalogs.profiles import CatalogProfile
from kernel.errors import CatalogError

NOT_STAC_HINT = "is it a STAC API? Give the API's root URL (its landing page is JSON with a 'search' link)"


@dataclass(frozen=True)
class SearchLimits:
    """Paging: pages of `page_size` items (servers cap this, often at 100-1000), at most `max_items` per search.

    A search that would return more than `max_items` fails with advice to narrow it, rather than
    silently dropping scenes.
    """

    page_size: int = 100
    max_items: int = 5000


class CatalogSearcher:
    """An open connection to one profile's STAC API."""

    def __init__(
        self,
        profile: CatalogProfile,
        policy: RetryPolicy | None = None,
        limits: SearchLimits | None = None,
        log: RetryLog | None = None,
    ):
        self.profile = profile
        self.limits = limits or SearchLimits()
        self.io = ResilientStacApiIO(policy, log)
        try:
            self.client = Client.open(profile.url, stac_io=self.io, modifier=profile.modifier)
        except APIError as err:
            status = getattr(err, "status_code", None)  # set when the server answered; unset when retries ran out
            if status is None:
                raise CatalogError(f"could not reach STAC API at {profile.url}: {_one_line(err)}") from err
            raise CatalogError(f"{profile.url} answered HTTP {status} {_reason(status)}; {NOT_STAC_HINT}") from err
        except Exception as err:  # a page that is not JSON, or JSON that is not a STAC catalog
            what = "a page that is not JSON" if isinstance(err, ValueError) else "JSON that is not a STAC catalog"
            raise CatalogError(f"{profile.url} answered {what}; {NOT_STAC_HINT}") from err

    @property
    def retry_log(self) -> RetryLog:
        return self.io.retry_log

    def check_collection(self, collection_id: str) -> None:
        """Fail clearly when the catalog does not have a collection the profile names."""
        try:
            found = self.client.get_collection(collection_id)
        except Exception as err:
            raise CatalogError(
                f"could not read collection {collection_id!r} at {self.profile.url}: {_one_line(err)}"
            ) from err
        if found is None:
            raise CatalogError(
                f"collection {collection_id!r} is not available at {self.profile.url}; "
                "check the profile or the --optical/--sar/--dem-collection options"
            )

    def items(
        self,
        collection_id: str,
        bbox: tuple[float, float, float, float],
        start: date | None = None,
        end: date | None = None,
    ) -> list[pystac.Item]:
        """Every item of a collection meeting the bbox (and the inclusive date range, when given)."""
        limits = self.limits
        datetime = f"{start.isoformat()}T00:00:00Z/{end.isoformat()}T23:59:59.999Z" if start and end else None
        try:
            search = self.client.search(
                method="POST",
                collections=[collection_id],
                bbox=list(bbox),
                datetime=datetime,
                limit=limits.page_size,
                max_items=limits.max_items + 1,
            )
            found = list(search.items())
        except (APIError, OSError, ValueError) as err:  # HTTP failures, unreadable pages
            raise CatalogError(f"search of {collection_id!r} at {self.profile.url} failed: {_one_line(err)}") from err
        if len(found) > limits.max_items:
            raise CatalogError(
                f"more than {limits.max_items} items of {collection_id!r} match; narrow the bbox or the period"
            )
        return found


def _reason(status: int) -> str:
    """`Not Found` for 404: the standard phrase, never the server's page."""
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return ""


def _one_line(err: BaseException) -> str:
    text = " ".join(str(err).split())
    return text[:300] or type(err).__name__

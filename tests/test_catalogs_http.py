"""Retry pieces, Planetary Computer signing against a local token API, profiles, and footprint geometry."""

from __future__ import annotations

import pickle
import random
import time
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pystac
import pytest
from hypothesis import given
from hypothesis import strategies as st

from catalogs.footprints import area_in_rect, clipped_bounds, coverage
from catalogs.http import RetryPolicy, TokenBucket, parse_retry_after
from catalogs.profiles import get_profile
from catalogs.server import serve_items
from catalogs.signing import PlanetaryComputerSigner
from catalogs.stac_search import CatalogSearcher
from kernel.errors import CatalogError, InputError
from tests import catalog_fixtures as fx

BLOB = "https://sentinel2l2a01.blob.core.windows.net/sentinel2-l2/33/T/WL/2024/06/01/B04.tif"


def test_backoff_is_jittered_exponential_and_capped():
    policy = RetryPolicy(backoff_base_s=0.5, backoff_max_s=3.0)
    rng = random.Random(1)
    waits = [[policy.backoff(n, rng) for _ in range(300)] for n in (1, 2, 3, 6)]
    assert [max(w) <= cap for w, cap in zip(waits, (0.5, 1.0, 2.0, 3.0))] == [True] * 4
    assert max(waits[2]) > 1.5 and min(waits[2]) < 0.5  # spread over the whole range: full jitter


def test_retry_after_in_seconds_or_as_a_date():
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(None) is None and parse_retry_after("soon") is None
    later = datetime.now(UTC) + timedelta(seconds=30)
    assert 27 < parse_retry_after(format_datetime(later, usegmt=True)) <= 30


def test_token_bucket_bounds_the_request_rate():
    bucket = TokenBucket(rate=50.0, capacity=5)
    began = time.monotonic()
    for _ in range(20):
        bucket.acquire()
    assert time.monotonic() - began >= (20 - 5) / 50 * 0.95


def pc_item(href: str = BLOB) -> pystac.Item:
    return pystac.Item.from_dict(
        {
            "type": "Feature",
            "stac_version": "1.0.0",
            "id": "S2A_x",
            "collection": "sentinel-2-l2a",
            "geometry": fx.polygon((15, 45, 15.1, 45.1)),
            "bbox": [15, 45, 15.1, 45.1],
            "properties": {"datetime": "2024-06-01T10:00:00Z"},
            "assets": {"B04": {"href": href}, "thumbnail": {"href": "file:///tmp/thumb.png"}},
            "links": [],
        }
    )


def test_signer_caches_tokens_and_resigns_after_expiry():
    now = [time.time()]
    with fx.SasTokenServer(lifetime_s=3600) as tokens:
        signer = PlanetaryComputerSigner(tokens.token_url, clock=lambda: now[0], refresh_margin_s=300)
        first = signer.resign(pc_item())
        second = signer.resign(pc_item())
        assert tokens.requests == ["sentinel-2-l2a"]  # one token for both
        assert first.assets["B04"].href == second.assets["B04"].href
        assert first.assets["B04"].href.startswith(BLOB + "?st=") and first.assets["B04"].href.endswith("sig=n1")
        assert first.assets["thumbnail"].href == "file:///tmp/thumb.png"  # only blob storage is signed
        now[0] += 3600 - 200  # inside the refresh margin: a fresh token, replacing the old query
        third = signer.resign(first)
        assert tokens.requests == ["sentinel-2-l2a"] * 2
        assert third.assets["B04"].href.endswith("sig=n2") and third.assets["B04"].href.count("?") == 1
        assert first.assets["B04"].href.endswith("sig=n1")  # resign works on a copy


def test_signer_touches_nothing_without_blob_hrefs():
    with fx.SasTokenServer() as tokens:
        signer = PlanetaryComputerSigner(tokens.token_url)
        item = signer.resign(pc_item("file:///data/B04.tif"))
        assert item.assets["B04"].href == "file:///data/B04.tif" and tokens.requests == []


def test_token_api_answers_429_and_503_are_retried():
    with fx.SasTokenServer(faults=(429, 503)) as tokens:
        signer = PlanetaryComputerSigner(tokens.token_url, policy=RetryPolicy(backoff_base_s=0.01))
        item = signer.resign(pc_item())
        assert tokens.requests == ["sentinel-2-l2a"] * 3
        assert item.assets["B04"].href.endswith("sig=n3")


def test_token_api_that_keeps_answering_503_is_a_catalog_error():
    with fx.SasTokenServer(faults=(503,) * 3) as tokens:
        signer = PlanetaryComputerSigner(tokens.token_url, policy=RetryPolicy(max_attempts=3, backoff_base_s=0.01))
        with pytest.raises(CatalogError, match="could not get a Planetary Computer SAS token"):
            signer.resign(pc_item())
        assert len(tokens.requests) == 3


def test_unreachable_token_api_is_a_catalog_error():
    signer = PlanetaryComputerSigner("http://127.0.0.1:9/api/sas/v1/token", policy=RetryPolicy(max_connect_attempts=1))
    with pytest.raises(CatalogError, match="could not get a Planetary Computer SAS token from http://127.0.0.1:9"):
        signer.resign(pc_item())


def test_search_results_are_signed_through_the_modifier():
    """The profile's modifier signs items as pystac-client hands them over from a live search."""
    record = pc_item().to_dict()
    with fx.SasTokenServer() as tokens, serve_items([fx.collection("sentinel-2-l2a", "s2")], [record]) as server:
        profile = replace(
            get_profile("planetary-computer", catalog_url=server.url), signer=PlanetaryComputerSigner(tokens.token_url)
        )
        (item,) = CatalogSearcher(profile).items("sentinel-2-l2a", (14, 44, 16, 46))
        assert item.assets["B04"].href.startswith(BLOB + "?st=") and item.assets["B04"].href.endswith("sig=n1")
        assert tokens.requests == ["sentinel-2-l2a"]


@pytest.mark.parametrize(
    ("name", "url", "collections", "red"),
    [
        (
            "earth-search",
            "https://earth-search.aws.element84.com/v1",
            ("sentinel-2-l2a", "sentinel-1-grd", "cop-dem-glo-30"),
            "red",
        ),
        (
            "planetary-computer",
            "https://planetarycomputer.microsoft.com/api/stac/v1",
            ("sentinel-2-l2a", "sentinel-1-rtc", "cop-dem-glo-30"),
            "B04",
        ),
    ],
)
def test_public_profiles(name, url, collections, red):
    profile = get_profile(name)
    assert (profile.url, profile.optical_collection, profile.sar_collection, profile.dem_collection) == (
        url,
        *collections,
    )
    assert profile.asset_keys.optical["red"] == red and profile.asset_keys.dem == {"elevation": "data"}
    assert (profile.modifier is not None) == (name == "planetary-computer")


def test_local_profile_and_overrides():
    profile = get_profile("local", "http://127.0.0.1:8080", sar_collection="my-sar")
    assert (profile.optical_collection, profile.sar_collection, profile.dem_collection) == (
        "dsmar-optical",
        "my-sar",
        "dsmar-dem",
    )
    assert get_profile("earth-search", optical_collection="sentinel-2-c1-l2a").optical_collection == "sentinel-2-c1-l2a"
    with pytest.raises(InputError, match="needs a STAC API URL"):
        get_profile("local")
    with pytest.raises(
        InputError, match="unknown catalog profile 'usgs'; choose one of earth-search, planetary-computer, local"
    ):
        get_profile("usgs")
    with pytest.raises(InputError, match="is not an http"):
        get_profile("local", "127.0.0.1:8080")
    with pytest.raises(InputError, match="sar collection must not be empty"):
        get_profile("earth-search", sar_collection=" ")


def test_footprint_coverage_of_known_shapes():
    aoi = (0.0, 0.0, 2.0, 1.0)
    assert coverage(fx.polygon((1.0, -1.0, 5.0, 5.0)), aoi) == pytest.approx(0.5)
    triangle = {"type": "Polygon", "coordinates": [[[0, 0], [2, 0], [0, 1], [0, 0]]]}
    assert coverage(triangle, aoi) == pytest.approx(0.5)
    holed = {
        "type": "Polygon",
        "coordinates": [[[-1, -1], [3, -1], [3, 2], [-1, 2], [-1, -1]], [[0, 0], [1, 0], [1, 1], [0, 1], [0, 0]]],
    }
    assert coverage(holed, aoi) == pytest.approx(0.5)
    multi = {
        "type": "MultiPolygon",
        "coordinates": [fx.polygon((0, 0, 0.5, 1))["coordinates"], fx.polygon((1.5, 0, 2, 1))["coordinates"]],
    }
    assert coverage(multi, aoi) == pytest.approx(0.5)
    assert coverage(fx.polygon((5, 5, 6, 6)), aoi) == 0.0 and clipped_bounds(fx.polygon((5, 5, 6, 6)), aoi) is None
    assert clipped_bounds(fx.polygon((1.0, -1.0, 5.0, 5.0)), aoi) == (1.0, 0.0, 2.0, 1.0)


coord = st.floats(-10, 10, allow_nan=False)


@given(coord, coord, coord, coord, coord, coord, coord, coord)
def test_rectangle_clipping_matches_interval_arithmetic(a, b, c, d, e, f, g, h):
    """Clipping a box by a box gives exactly the overlap of their intervals."""
    box = (min(a, b), min(c, d), max(a, b), max(c, d))
    rect = (min(e, f), min(g, h), max(e, f), max(g, h))
    overlap = max(0.0, min(box[2], rect[2]) - max(box[0], rect[0])) * max(
        0.0, min(box[3], rect[3]) - max(box[1], rect[1])
    )
    assert area_in_rect(fx.polygon(box), rect) == pytest.approx(overlap, abs=1e-9)


def test_profiles_survive_pickling_with_their_cached_tokens():
    with fx.SasTokenServer() as tokens:
        profile = replace(get_profile("planetary-computer"), signer=PlanetaryComputerSigner(tokens.token_url))
        signed = profile.resign(pc_item())
        copy = pickle.loads(pickle.dumps(profile))
        assert copy == profile and copy.resign(pc_item()).assets["B04"].href == signed.assets["B04"].href
        assert tokens.requests == ["sentinel-2-l2a"]  # the copy reused the cached token


def test_failure_lines_keep_an_api_message_and_drop_html_pages():
    import requests

    from catalogs.http import _body_hint

    def response(body: str, content_type: str) -> requests.Response:
        r = requests.Response()
        r._content, r.headers["Content-Type"] = body.encode(), content_type
        return r

    assert (
        _body_hint(response('{"code": "ServiceUnavailable"}', "application/json")) == ': {"code": "ServiceUnavailable"}'
    )
    page = "<!DOCTYPE html><html><body>" + "Bad gateway " * 50 + "</body></html>"
    assert _body_hint(response(page, "text/html; charset=utf-8")) == ""
    assert _body_hint(response(page, "")) == ""
    assert len(_body_hint(response("x" * 1000, "text/plain"))) < 170

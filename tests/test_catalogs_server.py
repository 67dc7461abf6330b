"""The local STAC API: a static catalog served by a real `rustac serve` process."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from datetime import UTC, datetime

import pystac
import pytest

from catalogs.server import serve_items, serve_static_catalog
from kernel.errors import CatalogError
from tests import catalog_fixtures as fx

NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def post_search(url: str, body: dict) -> dict:
    request = urllib.request.Request(f"{url}/search", data=json.dumps(body).encode(), method="POST")
    request.add_header("Content-Type", "application/json")
    with NO_PROXY.open(request, timeout=5) as response:
        return json.load(response)


def static_catalog(root, cogs: fx.CogWriter):
    """A self-contained static catalog whose asset hrefs are relative, as `pystac` saves them."""
    catalog = pystac.Catalog("archive", "test archive")
    collection = pystac.Collection.from_dict(fx.collection("dsmar-optical", "optical"))
    catalog.add_child(collection)
    when = datetime(2024, 6, 1, 10, tzinfo=UTC)
    for n in range(3):
        record = fx.earth_search_s2(
            cogs, f"scene-{n}", when.replace(day=n + 1), (15.0, 45.0, 15.2, 45.2), 5.0, "dsmar-optical"
        )
        item = pystac.Item.from_dict(record)
        collection.add_item(item)
    catalog.normalize_hrefs(str(root))
    for item in collection.get_items():
        item.assets["red"].href = "./red.tif"  # relative to the item's own JSON
    catalog.save(pystac.CatalogType.SELF_CONTAINED)
    return root / "catalog.json"


def test_static_catalog_is_searchable_over_http(tmp_path):
    path = static_catalog(tmp_path / "archive", fx.CogWriter(tmp_path / "cogs"))
    with serve_static_catalog(path) as server:
        assert server.url.startswith("http://127.0.0.1:")
        found = post_search(server.url, {"collections": ["dsmar-optical"], "limit": 2})
        assert [f["id"] for f in found["features"]] and len(found["features"]) == 2
        assert any(link["rel"] == "next" and link.get("method") == "POST" for link in found["links"])
        every = post_search(
            server.url, {"collections": ["dsmar-optical"], "datetime": "2024-06-02T00:00:00Z/2024-06-02T23:59:59Z"}
        )
        assert [f["id"] for f in every["features"]] == ["scene-1"]
        red = every["features"][0]["assets"]["red"]["href"]
        assert red == (tmp_path / "archive" / "dsmar-optical" / "scene-1" / "red.tif").as_uri()
        assert every["features"][0]["assets"]["nir"]["href"].startswith("file:///")
    assert server.process.poll() is not None  # stopped on leaving the block
    with pytest.raises(urllib.error.URLError):
        NO_PROXY.open(server.url + "/", timeout=1)


def test_stop_is_idempotent_and_cleans_up(tmp_path):
    server = serve_items([fx.collection("c", "c")], [])
    workdir = server._workdir.name
    server.stop()
    server.stop()
    assert server.process.returncode is not None
    assert not (tmp_path / workdir).exists()


def test_missing_catalog_is_a_clear_error(tmp_path):
    with pytest.raises(CatalogError, match="no static catalog at"):
        serve_static_catalog(tmp_path / "nope" / "catalog.json")


def test_item_of_unknown_collection_is_refused(tmp_path):
    record = fx.earth_search_s2(
        fx.CogWriter(tmp_path), "x", datetime(2024, 6, 1, tzinfo=UTC), (15, 45, 15.1, 45.1), 1.0
    )
    with pytest.raises(CatalogError, match="names collection 'sentinel-2-l2a', which is not being served"):
        serve_items([fx.collection("other", "other")], [record])


def test_server_that_cannot_load_its_files_reports_its_output(tmp_path):
    broken = dict(fx.collection("c", "c"))
    broken["extent"] = "not an extent"
    with pytest.raises(CatalogError, match="rustac serve exited before answering: .+"):
        serve_items([broken], [])
